/**
 * Staging: records framed into per-bucket buffers, in order, until the spool writes them all at
 * once (`Spool.flush`, one write per bucket). Each record is framed as [length u32][crc32 u32]
 * [envelope bytes] (`segment.ts`), its checksum computed while it is copied.
 */
import { crc32Copy } from './crc32';
import { FRAME, type Segment } from './segment';
import type { SpoolFullError } from './space';

/** Where a write put each bucket's records: valid until the next write. */
export interface WriteResult {
  /** Buckets written: entries [0, n) of the arrays below. */
  n: number;
  bucket: Uint32Array;
  /** The generation and offset just past the bucket's last record written. */
  gen: Uint32Array;
  off: Uint32Array;
  /** The bucket's records written. */
  records: Uint32Array;
}

/** What staging needs of the segments: their bytes, and the segment a bucket's records go to. */
export interface StageSegments {
  readonly bytes: number;
  /** The segment bucket `b`'s records go to while none is staged for it (may begin one). */
  stageInto(b: number): Segment;
  /** Bucket `b`'s newest segment. */
  newest(b: number): Segment;
}

/** What staging needs of the spool's room. */
export interface StageSpace {
  wasFull: boolean;
  refusal(bytes: number, held: number): SpoolFullError | null;
  failed(e: NodeJS.ErrnoException): SpoolFullError;
}

/** The records staged per bucket and not yet written. */
export class Staging {
  /** Per bucket: the framed bytes staged, their length and their records. */
  readonly buf: (Buffer | null)[];
  readonly len: Uint32Array;
  readonly recs: Uint32Array;
  /** Buckets with records staged, in the order first staged. */
  readonly list: number[] = [];
  /** Bytes staged in all buckets. */
  stagedBytes = 0;
  /** Scratch of one `stage` call, per bucket: its bytes, records and fill; the buckets it touched. */
  private readonly bucketBytes: Uint32Array;
  private readonly bucketRecs: Uint32Array;
  private readonly bucketFill: Uint32Array;
  private readonly touched: Uint32Array;
  private readonly result: WriteResult;

  constructor(
    buckets: number,
    private readonly segments: StageSegments,
    private readonly space: StageSpace,
  ) {
    this.buf = new Array<Buffer | null>(buckets).fill(null);
    this.len = new Uint32Array(buckets);
    this.recs = new Uint32Array(buckets);
    this.bucketBytes = new Uint32Array(buckets);
    this.bucketRecs = new Uint32Array(buckets);
    this.bucketFill = new Uint32Array(buckets);
    this.touched = new Uint32Array(buckets);
    this.result = {
      n: 0,
      bucket: new Uint32Array(buckets),
      gen: new Uint32Array(buckets),
      off: new Uint32Array(buckets),
      records: new Uint32Array(buckets),
    };
  }

  /**
   * Frames the records `i` of `body` for which `take[i]` is set (all when `take` is null) into
   * their buckets' buffers, in order, and returns where each bucket's records will end once
   * written. Throws SpoolFullError, staging nothing, if the spool has no room.
   */
  stage(body: Buffer, starts: Uint32Array, bucketOf: Uint32Array, count: number, take: Uint8Array | null): WriteResult {
    const bytes = this.bucketBytes;
    const recs = this.bucketRecs;
    const touched = this.touched;
    const res = this.result;
    let n = 0;
    let total = 0;
    for (let i = 0; i < count; i++) {
      if (take !== null && take[i] === 0) continue;
      const b = bucketOf[i]!;
      if (bytes[b] === 0) touched[n++] = b;
      bytes[b] += FRAME + starts[i + 1]! - starts[i]!;
      recs[b]++;
      total += FRAME + starts[i + 1]! - starts[i]!;
    }
    res.n = n;
    if (n === 0) return res;
    const refused = this.space.refusal(total, this.segments.bytes + this.stagedBytes);
    if (refused) {
      this.resetScratch(n);
      if (refused.state === 'full') this.space.wasFull = true;
      throw refused;
    }
    this.space.wasFull = false;
    const fill = this.bucketFill;
    const bufs = this.buf;
    const lens = this.len;
    for (let k = 0; k < n; k++) {
      const b = touched[k]!;
      if (lens[b] === 0) {
        try {
          this.segments.stageInto(b);
        } catch (err) {
          this.resetScratch(n);
          throw this.space.failed(err as NodeJS.ErrnoException);
        }
      }
      const need = lens[b]! + bytes[b]!;
      let buf = bufs[b];
      if (!buf || buf.length < need) {
        const grown = Buffer.allocUnsafe(Math.max(need, 2 * (buf?.length ?? 0), 4096));
        if (buf) buf.copy(grown, 0, 0, lens[b]);
        bufs[b] = buf = grown;
      }
      fill[b] = lens[b]!;
    }
    for (let i = 0; i < count; i++) {
      if (take !== null && take[i] === 0) continue;
      const b = bucketOf[i]!;
      const s = starts[i]!;
      const e = starts[i + 1]!;
      const out = bufs[b]!;
      const p = fill[b]!;
      const len = e - s;
      const sum = crc32Copy(body, s, e, out, p + FRAME);
      // The frame header, little-endian, byte by byte (cheaper than two writeUInt32LE calls).
      out[p] = len;
      out[p + 1] = len >>> 8;
      out[p + 2] = len >>> 16;
      out[p + 3] = len >>> 24;
      out[p + 4] = sum;
      out[p + 5] = sum >>> 8;
      out[p + 6] = sum >>> 16;
      out[p + 7] = sum >>> 24;
      fill[b] = p + FRAME + len;
    }
    for (let k = 0; k < n; k++) {
      const b = touched[k]!;
      const seg = this.segments.newest(b);
      if (lens[b] === 0) this.list.push(b);
      lens[b] = fill[b]!;
      this.recs[b] += recs[b]!;
      this.stagedBytes += bytes[b]!;
      res.bucket[k] = b;
      res.gen[k] = seg.gen;
      res.off[k] = seg.size + fill[b]!;
      res.records[k] = recs[b]!;
    }
    this.resetScratch(n);
    return res;
  }

  /** Bucket `b`'s staged records were written: its buffer is empty again. */
  written(b: number): void {
    this.len[b] = 0;
    this.recs[b] = 0;
    // A big staging buffer is not kept for a bucket that may stay quiet.
    if (this.buf[b]!.length > 1 << 20) this.buf[b] = null;
  }

  /** Every bucket listed was written. */
  clear(): void {
    this.stagedBytes = 0;
    this.list.length = 0;
  }

  /** Forgets everything staged (a flush failed). */
  drop(): void {
    for (const b of this.list) {
      this.len[b] = 0;
      this.recs[b] = 0;
    }
    this.list.length = 0;
    this.stagedBytes = 0;
  }

  /** Per-bucket scratch counters back to zero for the next stage. */
  private resetScratch(n: number): void {
    for (let k = 0; k < n; k++) {
      const b = this.touched[k]!;
      this.bucketBytes[b] = 0;
      this.bucketRecs[b] = 0;
    }
  }
}
