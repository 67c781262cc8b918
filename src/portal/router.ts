/**
 * Where a batch's records go inside a portal. `route` hashes each record's key to its bucket
 * (map/route.ts), checks that this server owns every bucket, and returns the batch's plan: each
 * record's bucket and lane, and each lane's records and bytes. A lane is a slot, or a slot's
 * part of a hold group (records of buckets taken over in an epoch switch, held until their old
 * owner has drained them): lane = group * slots + slot, group 0 being "not held".
 *
 *   batch body --route--> BatchPlan --cutLanes--> one DELIVER body per lane, records in order
 *
 * Nothing here keeps state between batches: a plan is a value, made for one batch.
 */
import type { RecordIndex } from '../protocol/envelope';
import { bucketOfBytes, slotOf } from '../map/bucket';
import { bucketsOf } from '../map/route';
import type { FlotillaMap, MapStream } from '../map/types';
import { Holds } from './holds';

/** A batch's plan: per record its bucket and lane; per lane its records and bytes. */
export interface BatchPlan {
  count: number;
  bucket: Uint32Array;
  lane: Uint16Array;
  laneCount: Uint32Array;
  laneBytes: Uint32Array;
}

/**
 * The map a portal routes by, and the buckets it holds: changes only at an epoch switch (the
 * portal then sets `map`, `stream` and `self` together, and the holds).
 */
export class Routing {
  readonly holds: Holds;

  constructor(
    public map: FlotillaMap,
    public stream: MapStream,
    /** This server's index in `map.servers`. */
    public self: number,
    readonly slots: number,
  ) {
    this.holds = new Holds(stream.buckets);
    this.bucketRecords = new Float64Array(stream.buckets);
  }

  /** Records accepted per bucket since the portal started (what `portalctl buckets --hot` reads). */
  readonly bucketRecords: Float64Array;

  get epoch(): number {
    return this.map.epoch;
  }

  /** True if this server owns bucket `b` under the map in force. */
  owns(b: number): boolean {
    return this.stream.owner[b] === this.self;
  }

  /** Lanes there are now: a slot's each, and again for each hold group. */
  get lanes(): number {
    return this.slots * (1 + this.holds.groups);
  }

  /** Plans a scanned batch; null if a record's bucket is not this server's (a redirect). */
  route(body: Buffer, index: RecordIndex): BatchPlan | null {
    const count = index.count;
    const { buckets, owner } = this.stream;
    const nSlots = this.slots;
    const self = this.self;
    const holdOf = this.holds.of;
    const bucket = bucketsOf(body, index, buckets, new Uint32Array(count));
    const lane = new Uint16Array(count);
    const lanes = this.lanes;
    const laneCount = new Uint32Array(lanes);
    const laneBytes = new Uint32Array(lanes);
    const starts = index.starts;
    const counts = this.bucketRecords;
    for (let i = 0; i < count; i++) {
      const b = bucket[i]!;
      if (owner[b] !== self) {
        for (let j = 0; j < i; j++) counts[bucket[j]!]--; // a redirect: none of it was taken
        return null;
      }
      const l = holdOf[b]! * nSlots + slotOf(b, nSlots);
      lane[i] = l;
      laneCount[l]++;
      laneBytes[l] += starts[i + 1]! - starts[i]!;
      counts[b]++;
    }
    return { count, bucket, lane, laneCount, laneBytes };
  }

  /**
   * The first record of a scanned batch whose bucket this server does not own: its key, bucket
   * and owner, for the refusal's message (a refusal only, never the accepted path).
   */
  firstForeign(body: Buffer, index: RecordIndex): { key: string; bucket: number; owner: string } | null {
    for (let i = 0; i < index.count; i++) {
      const b = bucketOfBytes(body, index.keyStarts[i]!, index.keyEnds[i]!, this.stream.buckets);
      if (!this.owns(b)) return { key: body.toString('utf8', index.keyStarts[i]!, index.keyEnds[i]!), bucket: b, owner: this.map.servers[this.stream.owner[b]!]?.name ?? '?' };
    }
    return null;
  }

  /** The lane of bucket `b` now. */
  laneOf(b: number): number {
    return this.holds.of[b]! * this.slots + slotOf(b, this.slots);
  }
}

/** Where a lane's records go, per batch (staging.ts decides): memory only, */
export const LANE_MEMORY = 0;
/** ...the spool only, read back later, */
export const LANE_SPOOL = 1;
/** ...or both (spool mode always: acknowledged once written, delivered from memory). */
export const LANE_BOTH = 2;

/**
 * Copies each lane's records, in order, into one body per lane; a lane whose mode (`modes`, null:
 * every lane in memory) is LANE_SPOOL gets none. A lane holding every record of the batch gets
 * the sender's buffer itself, no copy.
 */
export function cutLanes(body: Buffer, index: RecordIndex, plan: BatchPlan, modes: Uint8Array | null): (Buffer | undefined)[] {
  const lanes = plan.laneCount.length;
  const bodies: (Buffer | undefined)[] = new Array(lanes);
  const fill = new Uint32Array(lanes);
  let copies = 0;
  for (let l = 0; l < lanes; l++) {
    if (plan.laneCount[l] === 0 || (modes !== null && modes[l] === LANE_SPOOL)) continue;
    if (plan.laneCount[l] === plan.count) {
      bodies[l] = body;
    } else {
      bodies[l] = Buffer.allocUnsafe(plan.laneBytes[l]!);
      copies++;
    }
  }
  if (copies === 0) return bodies;
  const starts = index.starts;
  const lane = plan.lane;
  const count = plan.count;
  let i = 0;
  while (i < count) {
    // Copy runs of consecutive records bound for the same lane in one go.
    const l = lane[i]!;
    let j = i + 1;
    while (j < count && lane[j] === l) j++;
    const out = bodies[l];
    if (out !== undefined) {
      body.copy(out, fill[l], starts[i], starts[j]);
      fill[l] += starts[j]! - starts[i]!;
    }
    i = j;
  }
  return bodies;
}
