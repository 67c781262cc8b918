/**
 * Where each bucket stands in its segments: three positions, each (generation, offset),
 *
 *   done  <=  read  <=  end
 *   |processed|delivered, not yet done|on disk only, to be read back|
 *
 * and the records between them: `unprocessed` in [done, end), `unread` in [read, end), with
 * their totals over all buckets. `end` is the newest segment's size (`segments.ts`); `done` is
 * what the cursor file saves. Every change goes through a method here, so the counts and totals
 * move with the positions. The arrays are public for reading (the hot paths index them
 * directly); only this class writes them.
 */
import { SEG_HEADER } from './segment';

/** A bucket's read position, as `readPos` gives it and `restore` takes it back. */
export interface ReadPos {
  gen: number;
  off: number;
  unread: number;
  readRecs: number;
}

/** Per bucket, the processed and read positions and the records after them. */
export class Positions {
  /** Processed up to (doneGen, doneOff): the cursor. */
  readonly doneGen: Uint32Array;
  readonly doneOff: Uint32Array;
  /** Read back (or delivered from memory) up to (readGen, readOff). */
  readonly readGen: Uint32Array;
  readonly readOff: Uint32Array;
  /** Records of the segment being read already read back. */
  readonly readRecs: Float64Array;
  /** Records in [done, end) and in [read, end). */
  readonly unprocessed: Float64Array;
  readonly unread: Float64Array;
  /** The sums of `unprocessed` and `unread` over all buckets. */
  totalUnprocessed = 0;
  totalUnread = 0;

  constructor(buckets: number) {
    this.doneGen = new Uint32Array(buckets);
    this.doneOff = new Uint32Array(buckets);
    this.readGen = new Uint32Array(buckets);
    this.readOff = new Uint32Array(buckets);
    this.readRecs = new Float64Array(buckets);
    this.unprocessed = new Float64Array(buckets);
    this.unread = new Float64Array(buckets);
  }

  /** `records` more at bucket `b`'s end (written, or found at start-up): to read and process. */
  added(b: number, records: number): void {
    this.unprocessed[b] += records;
    this.unread[b] += records;
    this.totalUnprocessed += records;
    this.totalUnread += records;
  }

  /** Bucket `b` is processed up to (gen, off), `records` more than before. False if that is not ahead of it. */
  commit(b: number, gen: number, off: number, records: number): boolean {
    if (gen < this.doneGen[b]! || (gen === this.doneGen[b] && off <= this.doneOff[b]!)) return false;
    this.doneGen[b] = gen;
    this.doneOff[b] = off;
    this.unprocessed[b] -= records;
    this.totalUnprocessed -= records;
    return true;
  }

  /** Bucket `b`'s records up to (gen, off), `records` of them, were delivered from memory. */
  markRead(b: number, gen: number, off: number, records: number): void {
    this.readGen[b] = gen;
    this.readOff[b] = off;
    this.unread[b] -= records;
    this.totalUnread -= records;
  }

  /** `records` more of bucket `b`'s current segment were read back. */
  readMore(b: number, records: number): void {
    this.readRecs[b] += records;
    this.unread[b] -= records;
    this.totalUnread -= records;
  }

  /** Bucket `b` reads on from offset `off` of the same segment. */
  readAt(b: number, off: number): void {
    this.readOff[b] = off;
  }

  /** `records` of bucket `b` were found corrupt and skipped: never read, never processed. */
  lost(b: number, records: number): void {
    this.unread[b] -= records;
    this.unprocessed[b] -= records;
    this.totalUnread -= records;
    this.totalUnprocessed -= records;
  }

  /** Bucket `b`'s read position, to go back to with `restore`. */
  readPos(b: number): ReadPos {
    return { gen: this.readGen[b]!, off: this.readOff[b]!, unread: this.unread[b]!, readRecs: this.readRecs[b]! };
  }

  /** Puts bucket `b`'s read position back to `pos`; returns the records to read again. */
  restore(b: number, pos: ReadPos): number {
    const again = pos.unread - this.unread[b]!;
    this.totalUnread += again;
    this.readGen[b] = pos.gen;
    this.readOff[b] = pos.off;
    this.unread[b] = pos.unread;
    this.readRecs[b] = pos.readRecs;
    return again;
  }

  /** Bucket `b` reads on from the start of its segment `gen`. */
  readFrom(b: number, gen: number): void {
    this.readGen[b] = gen;
    this.readOff[b] = SEG_HEADER;
    this.readRecs[b] = 0;
  }

  /** Bucket `b`'s cursor moves to the start of its segment `gen` (those before it are gone). */
  doneFrom(b: number, gen: number): void {
    this.doneGen[b] = gen;
    this.doneOff[b] = SEG_HEADER;
  }

  /** Bucket `b` processes and reads from the start of segment `gen`, its first. */
  startAt(b: number, gen: number): void {
    this.doneFrom(b, gen);
    this.readFrom(b, gen);
  }

  /** Bucket `b` reads on from its cursor (at start-up). */
  readFromDone(b: number): void {
    this.readGen[b] = this.doneGen[b]!;
    this.readOff[b] = this.doneOff[b]!;
  }

  /** Sets every bucket's cursor as the cursor file has it (at start-up). */
  loadDone(gen: Uint32Array, off: Uint32Array): void {
    this.doneGen.set(gen);
    this.doneOff.set(off);
  }

  /** Bucket `b`'s segment at its cursor has `records` read before it (at start-up). */
  setReadRecs(b: number, records: number): void {
    this.readRecs[b] = records;
  }
}
