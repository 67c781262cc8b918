/**
 * Holds: the buckets a portal took over in an epoch switch, held per old owner until that owner
 * says it has drained them (`release`), so that no bucket is ever processed by two servers at
 * once. Records of a held bucket are accepted (acknowledged only once processed) and kept, in
 * arrival order, in their hold group; a release hands the group's deliveries to the portal.
 *
 *   switch to epoch e: begin(e, {alpha: [3, 17], gamma: [40]}) -> groups 1 (alpha) and 2 (gamma)
 *   release from alpha at e: release('alpha', e) -> group 1's deliveries, in order; buckets free
 *
 * A release may arrive before this portal has switched to its epoch: it is kept, and that old
 * owner's buckets are not held when the switch comes.
 */
import type { Delivery } from './slot';

/** The buckets held for one old owner, and the deliveries made for them meanwhile. */
export interface HoldGroup {
  /** The old owner (server name). */
  from: string;
  /** Its buckets still held (0 once released). */
  buckets: number[];
  /** Deliveries made while held, in arrival order; released to their slots in that order. */
  deliveries: Delivery[];
}

export class Holds {
  /** of[bucket]: 0, or 1 + the index in `list` of the group holding the bucket. */
  of: Uint8Array;
  private list: HoldGroup[] = [];
  /** Releases that arrived before the switch to their epoch: epoch -> old owners. */
  private readonly early = new Map<number, Set<string>>();

  constructor(private readonly buckets: number) {
    this.of = new Uint8Array(buckets);
  }

  /** Hold groups, released ones included until every group is released (lane numbers stay put). */
  get groups(): number {
    return this.list.length;
  }

  /** True while some bucket is held. */
  get holding(): boolean {
    return this.list.some((g) => g.buckets.length > 0);
  }

  /** The old owners whose buckets are still held. */
  get from(): string[] {
    return this.list.filter((g) => g.buckets.length > 0).map((g) => g.from);
  }

  /**
   * Switching to `epoch`: holds each old owner's buckets in a group of its own, except an owner
   * whose release for `epoch` came early. Throws if something is still held.
   */
  begin(epoch: number, incoming: ReadonlyMap<string, readonly number[]>): void {
    if (this.holding) throw new Error('buckets are still held');
    const released = this.early.get(epoch) ?? new Set<string>();
    for (const e of this.early.keys()) if (e <= epoch) this.early.delete(e);
    this.of = new Uint8Array(this.buckets);
    this.list = [];
    for (const [from, buckets] of incoming) {
      if (released.has(from) || buckets.length === 0) continue;
      this.list.push({ from, buckets: [...buckets], deliveries: [] });
      for (const b of buckets) this.of[b] = this.list.length;
    }
  }

  /** Keeps a delivery for lane `lane` (>= slots: a hold group's) until its group is released. */
  keep(d: Delivery, lane: number, slots: number): void {
    this.list[Math.floor(lane / slots) - 1]!.deliveries.push(d);
  }

  /** A release for an epoch not switched to yet: remembered for `begin`. */
  releaseEarly(from: string, epoch: number): void {
    if (!this.early.has(epoch)) this.early.set(epoch, new Set());
    this.early.get(epoch)!.add(from);
  }

  /**
   * `from` has drained its buckets: they are no longer held. Returns the group (its buckets and
   * the deliveries kept for them, in order), or null if nothing is held for `from`.
   */
  release(from: string): HoldGroup | null {
    const i = this.list.findIndex((g) => g.from === from && g.buckets.length > 0);
    if (i < 0) return null;
    const group = this.list[i]!;
    const out: HoldGroup = { from, buckets: group.buckets, deliveries: group.deliveries };
    for (const b of group.buckets) this.of[b] = 0;
    // Keep the group's place, emptied, so the lane numbers of the groups still held stay put.
    group.buckets = [];
    group.deliveries = [];
    if (!this.holding) this.list = [];
    return out;
  }
}
