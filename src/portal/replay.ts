/**
 * Replay: a spooling slot's records read back from the spool, in order per bucket, a few
 * deliveries ahead of the slot; once none of its buckets has records left to read (and none is
 * staged for the next write), the slot's records go through memory again.
 *
 *   spool --read(bucket)--> Delivery (marks: where the cursor moves once done) --> slot
 */
import type { Spool } from '../spool/spool';
import type { Delivery, Slot } from './slot';
import type { Routing } from './router';
import { type Cancels, carryMarks } from './cancels';

/** Bytes and records read back from the spool per delivery, at most. */
export const REPLAY_BYTES = 256 << 10;
export const REPLAY_RECORDS = 2048;

/** What replay needs of the rest of the portal. */
export interface ReplayHost {
  readonly routing: Routing;
  /** Records of cancelled roots are dropped as they are read back. */
  readonly cancels: Cancels;
  paused(): boolean;
  live(slot: Slot): boolean;
  /** Records of the slot's buckets are staged, to be written at the next group commit. */
  stagedFor(slot: Slot): boolean;
  make(slot: Slot, body: Buffer, count: number, marks: number[]): Delivery;
  pump(slot: Slot): void;
}

export class Replay {
  constructor(
    private readonly spool: Spool,
    /** Deliveries a slot may have in flight; replay keeps one more than that ready. */
    private readonly slotWindow: number,
    private readonly host: ReplayHost,
  ) {}

  /** Reads `slot`'s records back while it is spooling, can take them, and has room. */
  feed(slot: Slot): void {
    const spool = this.spool;
    const host = this.host;
    if (!slot.spooling || host.paused() || !host.live(slot)) return;
    const { routing } = host;
    const nSlots = routing.slots;
    const { buckets, owner } = routing.stream;
    const self = routing.self;
    const holdOf = routing.holds.of;
    const per = Math.ceil((buckets - slot.index) / nSlots);
    while (slot.pending.length + slot.inflight.size <= this.slotWindow) {
      let bucket = -1;
      for (let t = 0; t < per; t++) {
        const k = (slot.nextBucket + t) % per;
        const b = slot.index + k * nSlots;
        if (spool.unreadOf(b) > 0 && owner[b] === self && holdOf[b] === 0) {
          bucket = b;
          slot.nextBucket = k;
          break;
        }
      }
      if (bucket < 0) {
        // Records staged for the slot's buckets are read back after the write that is coming.
        if (!host.stagedFor(slot)) slot.spooling = false;
        break;
      }
      const r = spool.read(bucket, REPLAY_BYTES, REPLAY_RECORDS);
      if (!r) break;
      const marks = [bucket, r.gen, r.off, r.count];
      const f = host.cancels.active ? host.cancels.filter(r.body, r.count) : null;
      // Every record cancelled: the cursor moves past them with the slot's previous delivery.
      if (f && f.count === 0) carryMarks(marks, slot, (m) => this.commit(m));
      else slot.pending.push(host.make(slot, f ? f.body : r.body, f ? f.count : r.count, marks));
    }
    host.pump(slot);
  }

  /** A delivery with spooled records is done: move the buckets' cursors past them. */
  commit(marks: number[]): void {
    const spool = this.spool;
    for (let i = 0; i < marks.length; i += 4) spool.commit(marks[i]!, marks[i + 1]!, marks[i + 2]!, marks[i + 3]!);
  }
}
