/**
 * Holds: the buckets a portal took over in an epoch switch, held per old owner until that owner
 * has drained them (`release`), so that no bucket is ever processed by two servers at once.
 * Records of a held bucket are accepted (acknowledged only once processed) and kept, in arrival
 * order, in their hold group; a release hands the group's deliveries to the portal.
 *
 *   switch to epoch e: begin(e, d, {alpha: [3, 17], gamma: [40]}) -> groups 1 (alpha) and 2 (gamma)
 *   release from alpha at e: release('alpha') -> group 1's deliveries, in order; buckets free
 *
 * A release may arrive before this portal has switched to its epoch: it is kept, and that old
 * owner's buckets are not held when the switch comes, if the switch is to the same map (digest)
 * and the release named exactly the buckets the switch takes from that owner.
 *
 * What is held (the groups' buckets, not their records) is kept in the portal's handover file
 * (handover-file.ts) through `held()` and `restore()`, so a portal that restarts holds again.
 */
import type { Delivery } from './slot';

/** The buckets held for one old owner, and the deliveries made for them meanwhile. */
export interface HoldGroup {
  /** The old owner (server name). */
  from: string;
  /** The epoch whose switch made the hold, and when it began (ms since the Unix epoch). */
  epoch: number;
  since: number;
  /** Its buckets still held (0 once released). */
  buckets: number[];
  /** Deliveries made while held, in arrival order; released to their slots in that order. */
  deliveries: Delivery[];
}

export class Holds {
  /** of[bucket]: 0, or 1 + the index in `list` of the group holding the bucket. */
  of: Uint8Array;
  private list: HoldGroup[] = [];
  /** Releases that arrived before the switch to their epoch. */
  private early: EarlyRelease[] = [];

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
   * Switching to `epoch` (map `digest`): holds each old owner's buckets in a group of its own,
   * except an owner whose release for this very switch came early. Throws if something is
   * still held.
   */
  begin(epoch: number, digest: string, incoming: ReadonlyMap<string, readonly number[]>, now = Date.now()): void {
    if (this.holding) throw new Error('buckets are still held');
    const early = this.early.filter((r) => r.epoch === epoch && r.digest === digest);
    this.early = this.early.filter((r) => r.epoch > epoch);
    this.of = new Uint8Array(this.buckets);
    this.list = [];
    for (const [from, buckets] of incoming) {
      if (buckets.length === 0 || early.some((r) => r.from === from && sameBuckets(r.buckets, buckets))) continue;
      this.list.push({ from, epoch, since: now, buckets: [...buckets], deliveries: [] });
      for (const b of buckets) this.of[b] = this.list.length;
    }
  }

  /** What is held, per old owner (for the handover file and status). */
  held(): HeldBuckets[] {
    return this.list.filter((g) => g.buckets.length > 0).map((g) => ({ from: g.from, epoch: g.epoch, since: g.since, buckets: [...g.buckets] }));
  }

  /** Releases kept for a later switch (for the handover file). */
  earlyReleases(): EarlyRelease[] {
    return this.early.map((r) => ({ ...r, buckets: [...r.buckets] }));
  }

  /** Holds again what a portal held before it restarted (no records: those come again). */
  restore(held: readonly HeldBuckets[], early: readonly EarlyRelease[]): void {
    this.of = new Uint8Array(this.buckets);
    this.list = [];
    for (const h of held) {
      this.list.push({ ...h, buckets: h.buckets.filter((b) => b >= 0 && b < this.buckets), deliveries: [] });
      for (const b of this.list[this.list.length - 1]!.buckets) this.of[b] = this.list.length;
    }
    this.early = early.map((r) => ({ ...r, buckets: [...r.buckets] }));
  }

  /** The groups still holding buckets, with their index (lane group index + 1 = `of` value). */
  groupsHeld(): { group: HoldGroup; index: number }[] {
    return this.list.map((group, index) => ({ group, index })).filter((x) => x.group.buckets.length > 0);
  }

  /** The group held for `from`, if any. */
  groupOf(from: string): HoldGroup | null {
    return this.list.find((g) => g.from === from && g.buckets.length > 0) ?? null;
  }

  /** Keeps a delivery for lane `lane` (>= slots: a hold group's) until its group is released. */
  keep(d: Delivery, lane: number, slots: number): void {
    this.list[Math.floor(lane / slots) - 1]!.deliveries.push(d);
  }

  /** A release for an epoch not switched to yet: remembered for `begin`. */
  releaseEarly(release: EarlyRelease): void {
    this.early = this.early.filter((r) => !(r.from === release.from && r.epoch === release.epoch));
    this.early.push({ ...release, buckets: [...release.buckets].sort((a, b) => a - b) });
  }

  /**
   * `from` has drained its buckets: they are no longer held. Returns the group (its buckets and
   * the deliveries kept for them, in order), or null if nothing is held for `from`.
   */
  release(from: string): HoldGroup | null {
    const i = this.list.findIndex((g) => g.from === from && g.buckets.length > 0);
    if (i < 0) return null;
    const group = this.list[i]!;
    const out: HoldGroup = { ...group };
    for (const b of group.buckets) this.of[b] = 0;
    // Keep the group's place, emptied, so the lane numbers of the groups still held stay put.
    group.buckets = [];
    group.deliveries = [];
    if (!this.holding) this.list = [];
    return out;
  }
}

/** A group's buckets without its records: what the handover file keeps. */
export interface HeldBuckets {
  from: string;
  epoch: number;
  since: number;
  buckets: number[];
}

/** A release for a switch this portal has not made yet: the old owner, the map, the buckets. */
export interface EarlyRelease {
  from: string;
  epoch: number;
  digest: string;
  buckets: number[];
}

/** True if `a` and `b` hold the same buckets (in any order). */
export function sameBuckets(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  const x = [...a].sort((p, q) => p - q);
  const y = [...b].sort((p, q) => p - q);
  return x.every((v, i) => v === y[i]);
}
