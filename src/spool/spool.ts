/**
 * The spool: a portal's records on disk, in files per bucket.
 *
 *   <dir>/<server>/<stream>/BBBBB-GGGGGGGG.seg   bucket B's segment of generation G
 *   <dir>/<server>/<stream>/cursor               how far each bucket is processed
 *
 * A segment is a 16-byte header ("FLSG", version, bucket, generation) and then records, each
 * framed as [length u32][crc32 u32][envelope bytes]. A bucket's records are appended to its
 * newest segment; a segment that has grown past `segmentBytes` is closed and a new generation
 * begun. Three positions per bucket, each (generation, offset):
 *
 *   done  <=  read  <=  end
 *   |processed|delivered, not yet done|on disk only, to be read back|
 *
 * `done` is the cursor, written to the cursor file after every round of acknowledgements; a
 * segment wholly before it is deleted. At start-up every segment is checked record by record: a
 * torn or corrupt tail is cut off (counted and logged), and reading starts again at `done`, so
 * after a crash replay starts where processing stopped.
 */
import {
  close,
  closeSync,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  open,
  readSync,
  statfsSync,
  unlinkSync,
  write,
  writeSync,
} from 'node:fs';
import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32, crc32Copy } from './crc32';
import { Syncer } from './syncer';
import { FlotillaError } from '../errors';
import type { Logger } from '../log';
import type { FsyncPolicy, SpoolSettings } from '../map/types';

const SEG_MAGIC = 0x47534c46; // "FLSG" little-endian
const CURSOR_MAGIC = 0x55434c46; // "FLCU"
const VERSION = 1;
export const SEG_HEADER = 16;
export const FRAME = 8;
const MIN_SEGMENT_BYTES = 16 << 10;
const DISK_CHECK_MS = 1000;

/** Why the spool takes no records now; `ok` when it does. */
export type SpoolState = 'ok' | 'full' | 'low_disk' | 'write_failed';

export interface SpoolStats {
  mode: string;
  dir: string;
  state: SpoolState;
  /** Records on disk not yet processed. */
  records: number;
  /** Of those, records not yet read back for delivery. */
  backlog: number;
  bytes: number;
  maxBytes: number;
  freeBytes: number;
  minFreeBytes: number;
  fsync: FsyncPolicy;
  segments: number;
  written: number;
  replayed: number;
  /** Torn or corrupt tails cut at start-up or found while reading, and their bytes. */
  tornTails: number;
  cutBytes: number;
}

/** Where a write put each bucket's records: valid until the next write. */
export interface WriteResult {
  n: number;
  bucket: Uint32Array;
  /** The generation and offset just past the bucket's last record written. */
  gen: Uint32Array;
  off: Uint32Array;
  records: Uint32Array;
}

export interface ReadPos {
  gen: number;
  off: number;
  unread: number;
  readRecs: number;
}

/** Records read back from one bucket, framing stripped: a DELIVER body. */
export interface ReadResult {
  bucket: number;
  body: Buffer;
  count: number;
  gen: number;
  off: number;
}

export class SpoolFullError extends FlotillaError {
  constructor(
    readonly state: SpoolState,
    message: string,
  ) {
    super('SPOOL_FULL', message);
  }
}

interface Segment {
  gen: number;
  size: number;
  /** Records in the segment. */
  records: number;
}

export class Spool {
  readonly dir: string;
  private readonly buckets: number;
  private readonly segmentBytes: number;
  /** Per bucket, oldest first; the last is the one written to. */
  private readonly segs: Segment[][];
  private readonly writeFd: Int32Array;
  /** Per bucket, the next segment opened ahead (see prepareNext): its fd (-1 none, -2 under way) and generation. */
  private readonly nextFd: Int32Array;
  private readonly nextGen: Uint32Array;
  /** A segment this big gets its successor prepared. */
  private readonly prepareAt: number;
  private readonly readGen: Uint32Array;
  private readonly readOff: Uint32Array;
  private readonly doneGen: Uint32Array;
  private readonly doneOff: Uint32Array;
  /** Records in [done, end) and in [read, end), per bucket. */
  private readonly unprocessed: Float64Array;
  private readonly unread: Float64Array;
  private totalUnprocessed = 0;
  private totalUnread = 0;
  private bytes = 0;
  private segmentCount = 0;
  private freeBytes = Number.MAX_SAFE_INTEGER;
  private writeFailed = '';
  private readonly dirty = new Set<number>();
  private cursorFd = -1;
  private cursorSeq = 0;
  private cursorDirty = false;
  private cursorSoon: NodeJS.Immediate | null = null;
  private readonly cursorBuf: Buffer;
  private diskTimer: NodeJS.Timeout | null = null;
  private syncTimer: NodeJS.Timeout | null = null;
  private syncer: Syncer | null = null;
  /** Finished segments' descriptors, closed by the syncer once synced. */
  private toClose: number[] = [];
  private closed = false;
  private counters = { written: 0, replayed: 0, tornTails: 0, cutBytes: 0 };
  private bucketBytes: Uint32Array;
  private bucketRecs: Uint32Array;
  /** Staged and not yet written, per bucket: framed bytes, their length and record count. */
  private readonly stageBuf: (Buffer | null)[];
  private readonly stageLen: Uint32Array;
  private readonly stageRecs: Uint32Array;
  private readonly stagedList: number[] = [];
  private stagedBytes = 0;
  private bucketFill: Uint32Array;
  /** Records of the current read segment already read back, per bucket. */
  private readonly readRecs: Float64Array;
  private failedFree = 0;
  /** The last write was refused for max_bytes, and nothing has been freed since. */
  private wasFull = false;
  private touched: Uint32Array;
  private readonly result: WriteResult;

  constructor(
    private readonly settings: SpoolSettings,
    server: string,
    stream: string,
    buckets: number,
    private readonly log: Logger,
    /** Counts a failure by cause (logged once per interval), as the portal's other errors. */
    private readonly count: (cause: string, example: string) => void,
  ) {
    this.dir = join(settings.dir, server, stream);
    this.buckets = buckets;
    this.segmentBytes = Math.max(MIN_SEGMENT_BYTES, Math.floor(settings.maxBytes / buckets / 4));
    this.prepareAt = Math.floor(this.segmentBytes * 0.75);
    this.segs = Array.from({ length: buckets }, () => []);
    this.writeFd = new Int32Array(buckets).fill(-1);
    this.nextFd = new Int32Array(buckets).fill(-1);
    this.nextGen = new Uint32Array(buckets);
    this.readGen = new Uint32Array(buckets);
    this.readOff = new Uint32Array(buckets);
    this.doneGen = new Uint32Array(buckets);
    this.doneOff = new Uint32Array(buckets);
    this.unprocessed = new Float64Array(buckets);
    this.unread = new Float64Array(buckets);
    this.cursorBuf = Buffer.alloc(16 + 8 * buckets);
    this.bucketBytes = new Uint32Array(buckets);
    this.bucketRecs = new Uint32Array(buckets);
    this.stageBuf = new Array<Buffer | null>(buckets).fill(null);
    this.stageLen = new Uint32Array(buckets);
    this.stageRecs = new Uint32Array(buckets);
    this.readRecs = new Float64Array(buckets);
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

  // ---- start-up ----------------------------------------------------------------------------

  /** Opens the spool: checks every segment, cuts torn tails, and starts reading at the cursor. */
  open(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    this.loadCursor();
    const names = readdirSync(this.dir).filter((n) => n.endsWith('.seg')).sort();
    for (const name of names) {
      const m = /^(\d{5})-(\d{8})\.seg$/.exec(name);
      const bucket = m ? Number(m[1]) : -1;
      if (!m || bucket >= this.buckets) {
        this.count('SPOOL_STRAY_FILE', `${join(this.dir, name)} is not a segment of this stream's ${this.buckets} buckets; left alone`);
        continue;
      }
      const gen = Number(m[2]);
      const done = this.doneGen[bucket]!;
      if (gen < done) {
        unlinkSync(join(this.dir, name)); // processed before the crash; its deletion was pending
        continue;
      }
      const { size, records, after } = this.check(bucket, gen, gen === done ? this.doneOff[bucket]! : SEG_HEADER);
      this.segs[bucket]!.push({ gen, size, records });
      if (gen === done) this.readRecs[bucket] = records - after;
      this.segmentCount++;
      this.bytes += size;
      this.unprocessed[bucket] += after;
      this.unread[bucket] += after;
      this.totalUnprocessed += after;
      this.totalUnread += after;
    }
    for (let b = 0; b < this.buckets; b++) {
      const segs = this.segs[b]!;
      // The cursor may point into a segment since deleted or cut: start at the first one there is.
      if (segs.length > 0 && (segs[0]!.gen !== this.doneGen[b] || this.doneOff[b]! > segs[0]!.size)) {
        this.doneGen[b] = segs[0]!.gen;
        this.doneOff[b] = SEG_HEADER;
        this.readRecs[b] = 0;
      }
      if (segs.length === 0) this.doneOff[b] = SEG_HEADER;
      this.readGen[b] = this.doneGen[b]!;
      this.readOff[b] = this.doneOff[b]!;
    }
    this.checkDisk();
    this.diskTimer = setInterval(() => void this.watchDisk(), DISK_CHECK_MS);
    this.diskTimer.unref();
    if (this.settings.fsync === 'interval') {
      this.syncer = new Syncer((failed) => {
        if (failed > 0) this.count('SPOOL_SYNC_FAILED', `${this.dir}: ${failed} files could not be synced to disk`);
      });
      this.syncTimer = setInterval(() => this.syncDirty(), this.settings.fsyncIntervalMs);
      this.syncTimer.unref();
    }
    if (this.totalUnprocessed > 0 || this.counters.tornTails > 0) {
      this.log.info(
        { dir: this.dir, records: this.totalUnprocessed, bytes: this.bytes, tornTails: this.counters.tornTails },
        `spool ${this.dir}: ${this.totalUnprocessed} records to replay${this.counters.tornTails > 0 ? `, ${this.counters.tornTails} torn tails cut (${this.counters.cutBytes} bytes)` : ''}`,
      );
    }
  }

  /**
   * Reads a segment record by record; cuts it at the first frame that is short or fails its
   * checksum. Returns its size after the cut and the records from `from` on.
   */
  private check(bucket: number, gen: number, from: number): { size: number; records: number; after: number } {
    const file = this.segFile(bucket, gen);
    const fd = openSync(file, 'r+');
    try {
      const size = fstatSync(fd).size;
      const head = Buffer.alloc(SEG_HEADER);
      const okHeader =
        readSync(fd, head, 0, SEG_HEADER, 0) === SEG_HEADER &&
        head.readUInt32LE(0) === SEG_MAGIC &&
        head.readUInt32LE(8) === bucket &&
        head.readUInt32LE(12) === gen;
      if (!okHeader) {
        this.cut(file, fd, 0, size, 'no valid segment header');
        writeSync(fd, segHeader(bucket, gen), 0, SEG_HEADER, 0);
        return { size: SEG_HEADER, records: 0, after: 0 };
      }
      let off = SEG_HEADER;
      let records = 0;
      let after = 0;
      let buf = Buffer.alloc(1 << 20);
      let bufStart = -1;
      let bufLen = 0;
      // Reads [at, at+len) through a window buffer; null past the end of the file.
      const view = (at: number, len: number): Buffer | null => {
        if (at + len > size) return null;
        if (bufStart < 0 || at < bufStart || at + len > bufStart + bufLen) {
          if (len > buf.length) buf = Buffer.alloc(len);
          bufLen = readSync(fd, buf, 0, Math.min(buf.length, size - at), at);
          bufStart = at;
        }
        return buf.subarray(at - bufStart, at - bufStart + len);
      };
      let problem = '';
      while (off < size) {
        const frame = view(off, FRAME);
        if (!frame) {
          problem = `a frame header cut short at offset ${off}`;
          break;
        }
        const len = frame.readUInt32LE(0);
        const sum = frame.readUInt32LE(4);
        if (len === 0 || len > 0x7fffffff) {
          problem = `a record length of ${len} at offset ${off}`;
          break;
        }
        const rec = view(off + FRAME, len);
        if (!rec) {
          problem = `a ${len}-byte record cut short at offset ${off}`;
          break;
        }
        if (crc32(rec) !== sum) {
          problem = `a checksum mismatch at offset ${off}`;
          break;
        }
        off += FRAME + len;
        records++;
        if (off > from) after++;
      }
      if (problem) this.cut(file, fd, off, size, problem);
      return { size: off, records, after };
    } finally {
      closeSync(fd);
    }
  }

  private cut(file: string, fd: number, at: number, size: number, why: string): void {
    ftruncateSync(fd, at);
    this.counters.tornTails++;
    this.counters.cutBytes += size - at;
    this.count('SPOOL_TORN_TAIL', `${file}: ${why}; cut ${size - at} bytes at offset ${at}, kept the records before it`);
  }

  private loadCursor(): void {
    const file = join(this.dir, 'cursor');
    this.cursorFd = openSync(file, 'a+');
    closeSync(this.cursorFd);
    this.cursorFd = openSync(file, 'r+');
    const region = this.cursorBuf.length;
    const buf = Buffer.alloc(2 * region);
    const got = readSync(this.cursorFd, buf, 0, buf.length, 0);
    let best: Buffer | null = null;
    let bestSeq = -1;
    for (let r = 0; r < 2; r++) {
      const c = buf.subarray(r * region, (r + 1) * region);
      if (got < (r + 1) * region || c.readUInt32LE(0) !== CURSOR_MAGIC || c.readUInt32LE(12) !== this.buckets) continue;
      if (crc32(c.subarray(16)) !== c.readUInt32LE(8)) continue;
      if (c.readUInt32LE(4) > bestSeq) {
        bestSeq = c.readUInt32LE(4);
        best = c;
      }
    }
    if (got < buf.length) {
      // Both copies' room taken now, so writing the cursor never needs space a full disk lacks.
      const zeros = Buffer.alloc(buf.length - got);
      writeSync(this.cursorFd, zeros, 0, zeros.length, got);
    }
    if (!best) {
      this.doneOff.fill(SEG_HEADER);
      // All zeros: the room taken at creation, never written (nothing was processed yet).
      if (buf.subarray(0, got).some((x) => x !== 0)) this.count('SPOOL_CURSOR_INVALID', `${file} has no valid copy; replaying every record in the spool`);
      return;
    }
    this.cursorSeq = bestSeq;
    for (let b = 0; b < this.buckets; b++) {
      this.doneGen[b] = best.readUInt32LE(16 + 8 * b);
      this.doneOff[b] = Math.max(SEG_HEADER, best.readUInt32LE(20 + 8 * b));
    }
  }

  // ---- writing -----------------------------------------------------------------------------

  /** Why the spool would refuse `bytes` more now, or null if it takes them. */
  refusal(bytes: number): SpoolFullError | null {
    if (this.writeFailed) return new SpoolFullError('write_failed', `the spool ${this.dir} could not write: ${this.writeFailed}`);
    if (this.freeBytes < this.settings.minFreeBytes) {
      return new SpoolFullError('low_disk', `the spool's filesystem has ${this.freeBytes} bytes free, under the floor of ${this.settings.minFreeBytes} (min_free_bytes)`);
    }
    if (this.bytes + this.stagedBytes + bytes > this.settings.maxBytes) {
      return new SpoolFullError('full', `the spool ${this.dir} holds ${this.bytes + this.stagedBytes} bytes; ${bytes} more would pass max_bytes ${this.settings.maxBytes}`);
    }
    return null;
  }

  /**
   * Frames the records `i` of `body` for which `take[i]` is set (all when `take` is null) into
   * their buckets' staging buffers, in order, and returns where each bucket's records will end
   * once written. Nothing touches the disk until `flush()`, which writes all that was staged
   * with one write per bucket. Throws SpoolFullError, staging nothing, if the spool has no room.
   */
  stage(body: Buffer, starts: Uint32Array, bucketOf: Uint32Array, count: number, take: Uint8Array | null): WriteResult {
    const bytes = this.bucketBytes;
    const touched = this.touched;
    const res = this.result;
    let n = 0;
    let total = 0;
    for (let i = 0; i < count; i++) {
      if (take !== null && take[i] === 0) continue;
      const b = bucketOf[i]!;
      if (bytes[b] === 0) touched[n++] = b;
      bytes[b] += FRAME + starts[i + 1]! - starts[i]!;
      this.bucketRecs[b]++;
      total += FRAME + starts[i + 1]! - starts[i]!;
    }
    res.n = n;
    if (n === 0) return res;
    const refused = this.refusal(total);
    if (refused) {
      this.resetScratch(n);
      if (refused.state === 'full') this.wasFull = true;
      throw refused;
    }
    this.wasFull = false;
    const fill = this.bucketFill;
    for (let k = 0; k < n; k++) {
      const b = touched[k]!;
      if (this.stageLen[b] === 0) {
        try {
          this.stageSegment(b);
        } catch (err) {
          this.resetScratch(n);
          throw this.failed(err as NodeJS.ErrnoException);
        }
      }
      const need = this.stageLen[b]! + bytes[b]!;
      let buf = this.stageBuf[b];
      if (!buf || buf.length < need) {
        const grown = Buffer.allocUnsafe(Math.max(need, 2 * (buf?.length ?? 0), 4096));
        if (buf) buf.copy(grown, 0, 0, this.stageLen[b]);
        this.stageBuf[b] = buf = grown;
      }
      fill[b] = this.stageLen[b]!;
    }
    for (let i = 0; i < count; i++) {
      if (take !== null && take[i] === 0) continue;
      const b = bucketOf[i]!;
      const s = starts[i]!;
      const e = starts[i + 1]!;
      const out = this.stageBuf[b]!;
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
      const segs = this.segs[b]!;
      const seg = segs[segs.length - 1]!;
      if (this.stageLen[b] === 0) this.stagedList.push(b);
      this.stageLen[b] = fill[b]!;
      this.stageRecs[b] += this.bucketRecs[b]!;
      this.stagedBytes += bytes[b]!;
      res.bucket[k] = b;
      res.gen[k] = seg.gen;
      res.off[k] = seg.size + fill[b]!;
      res.records[k] = this.bucketRecs[b]!;
    }
    this.resetScratch(n);
    return res;
  }

  /** Records staged for bucket `b` and not yet written. */
  stagedOf(b: number): number {
    return this.stageRecs[b]!;
  }

  /** Bytes staged and not yet written. */
  get stagedTotalBytes(): number {
    return this.stagedBytes;
  }

  /** True when records are staged and not yet written. */
  get hasStaged(): boolean {
    return this.stagedList.length > 0;
  }

  /**
   * Writes everything staged, one write per bucket, then (fsync always) syncs those files. All
   * or nothing: on a failure every segment touched is cut back, the staging emptied, and a
   * SpoolFullError thrown.
   */
  flush(): void {
    const list = this.stagedList;
    if (list.length === 0) return;
    let k = 0;
    try {
      for (; k < list.length; k++) {
        const b = list[k]!;
        const seg = this.segs[b]![this.segs[b]!.length - 1]!;
        const fd = this.openForWrite(b, seg);
        const len = this.stageLen[b]!;
        let done = 0;
        while (done < len) done += writeSync(fd, this.stageBuf[b]!, done, len - done, seg.size + done);
        if (this.settings.fsync === 'always') fdatasyncSync(fd);
        else if (this.settings.fsync === 'interval') this.dirty.add(b);
      }
    } catch (err) {
      // Cut back every bucket this flush reached, so no half-written batch stays behind.
      for (let j = 0; j <= k && j < list.length; j++) {
        const b = list[j]!;
        const seg = this.segs[b]![this.segs[b]!.length - 1]!;
        try {
          ftruncateSync(this.writeFd[b]!, seg.size);
        } catch {
          // the segment keeps a tail the next start-up finds and cuts
        }
      }
      this.dropStaged();
      throw this.failed(err as NodeJS.ErrnoException);
    }
    for (const b of list) {
      const seg = this.segs[b]![this.segs[b]!.length - 1]!;
      const len = this.stageLen[b]!;
      const r = this.stageRecs[b]!;
      seg.size += len;
      seg.records += r;
      this.bytes += len;
      if (seg.size >= this.prepareAt) this.prepareNext(b, seg.gen + 1);
      // Kept up to date between the disk checks, so the floor holds even in a fast burst.
      this.freeBytes = Math.max(0, this.freeBytes - len);
      this.unprocessed[b] += r;
      this.unread[b] += r;
      this.totalUnprocessed += r;
      this.totalUnread += r;
      this.counters.written += r;
      this.stageLen[b] = 0;
      this.stageRecs[b] = 0;
      // A big staging buffer is not kept for a bucket that may stay quiet.
      if (this.stageBuf[b]!.length > 1 << 20) this.stageBuf[b] = null;
    }
    this.stagedBytes = 0;
    list.length = 0;
  }

  /** A write failed (the disk is full, or failing): no more records until space is back. */
  private failed(e: NodeJS.ErrnoException): SpoolFullError {
    this.writeFailed = `${e.code ?? 'EIO'}: ${e.message}`;
    this.count('SPOOL_WRITE_FAILED', `${this.dir}: ${e.message}`);
    this.checkDisk();
    this.failedFree = this.freeBytes;
    return new SpoolFullError('write_failed', `the spool ${this.dir} could not write: ${this.writeFailed}`);
  }

  /** Forgets everything staged (a flush failed). */
  private dropStaged(): void {
    for (const b of this.stagedList) {
      this.stageLen[b] = 0;
      this.stageRecs[b] = 0;
    }
    this.stagedList.length = 0;
    this.stagedBytes = 0;
  }

  /** `stage` then `flush`: the records are written when this returns. */
  write(body: Buffer, starts: Uint32Array, bucketOf: Uint32Array, count: number, take: Uint8Array | null): WriteResult {
    const res = this.stage(body, starts, bucketOf, count, take);
    this.flush();
    return res;
  }

  /** Per-bucket scratch counters back to zero for the next stage. */
  private resetScratch(n: number): void {
    for (let k = 0; k < n; k++) {
      const b = this.touched[k]!;
      this.bucketBytes[b] = 0;
      this.bucketRecs[b] = 0;
    }
  }

  /**
   * Picks the segment bucket `b`'s records go to while none is staged for it: its newest, or a
   * new generation when that one is full. (One flush writes one segment per bucket.)
   */
  private stageSegment(b: number): Segment {
    const segs = this.segs[b]!;
    const seg = segs[segs.length - 1];
    return seg && seg.size < this.segmentBytes ? seg : this.newSegment(b, seg);
  }

  private openForWrite(b: number, seg: Segment): number {
    if (this.writeFd[b]! < 0) this.writeFd[b] = openSync(this.segFile(b, seg.gen), 'r+');
    return this.writeFd[b]!;
  }

  /**
   * Creates bucket `b`'s next segment (generation `gen`, header written) on the thread pool, so
   * that beginning it later costs the event loop no file creation. (A crash leaves it empty on
   * disk, which start-up reads as a segment with no records.)
   */
  private prepareNext(b: number, gen: number): void {
    if (this.nextFd[b] !== -1 || this.closed) return;
    this.nextFd[b] = -2; // under way
    const file = this.segFile(b, gen);
    // Exclusive: a file that exists already (begun meanwhile on this thread) is never truncated.
    open(file, 'wx+', (err, fd) => {
      if (err) {
        if (this.nextFd[b] === -2) this.nextFd[b] = -1;
        return;
      }
      write(fd, segHeader(b, gen), 0, SEG_HEADER, 0, (werr) => {
        if (werr || this.closed || this.nextFd[b] !== -2) {
          // Failed, or abandoned because the segment was begun meanwhile (which uses the file).
          close(fd, () => undefined);
          if (this.nextFd[b] === -2) this.nextFd[b] = -1;
          return;
        }
        this.nextFd[b] = fd;
        this.nextGen[b] = gen;
      });
    });
  }

  /** Begins bucket `b`'s next segment generation (closing the one before). */
  private newSegment(b: number, last: Segment | undefined): Segment {
    const segs = this.segs[b]!;
    // Never a generation the cursor has seen: its offsets would say records of the new file done.
    const gen = last ? last.gen + 1 : this.doneGen[b]! + 1;
    const old = this.writeFd[b]!;
    if (old >= 0) {
      // A finished segment still to be synced (fsync interval) is synced and closed at the next sync.
      if (this.dirty.delete(b)) this.toClose.push(old);
      else closeSync(old);
      this.writeFd[b] = -1;
    }
    let fd = -1;
    const ahead = this.nextFd[b]!;
    if (ahead >= 0 && this.nextGen[b] === gen) {
      fd = ahead; // opened ahead, off this thread
    } else if (ahead >= 0) {
      // Prepared for a generation that did not come next: drop it, unless it is in use.
      closeSync(ahead);
      const stale = this.nextGen[b]!;
      if (!segs.some((x) => x.gen === stale)) unlinkSync(this.segFile(b, stale));
    }
    // (A preparation still under way is abandoned: its callback closes what it opened.)
    this.nextFd[b] = -1;
    if (fd < 0) {
      const file = this.segFile(b, gen);
      try {
        fd = openSync(file, 'wx+');
      } catch (err) {
        // Created a moment ago by an abandoned preparation: take it as it is (never truncate).
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        fd = openSync(file, 'r+');
      }
      try {
        writeSync(fd, segHeader(b, gen), 0, SEG_HEADER, 0);
      } catch (err) {
        closeSync(fd);
        unlinkSync(file);
        throw err;
      }
    }
    this.writeFd[b] = fd;
    const seg: Segment = { gen, size: SEG_HEADER, records: 0 };
    segs.push(seg);
    this.segmentCount++;
    this.bytes += SEG_HEADER;
    if (segs.length === 1) {
      // A bucket with no segment left starts reading and processing at the new one.
      this.doneGen[b] = gen;
      this.doneOff[b] = SEG_HEADER;
      this.readGen[b] = gen;
      this.readOff[b] = SEG_HEADER;
      this.readRecs[b] = 0;
    }
    return seg;
  }

  // ---- reading back ------------------------------------------------------------------------

  /** Records on disk and not yet read back, in all buckets. */
  get unreadTotal(): number {
    return this.totalUnread;
  }

  /** Records of bucket `b` on disk and not yet read back. */
  unreadOf(b: number): number {
    return this.unread[b]!;
  }

  /** Bucket `b`'s read position, to go back to with `restore` (records read and not taken). */
  readPos(b: number): ReadPos {
    return { gen: this.readGen[b]!, off: this.readOff[b]!, unread: this.unread[b]!, readRecs: this.readRecs[b]! };
  }

  /** Puts bucket `b`'s read position back where `readPos` found it: those records are read again. */
  restore(b: number, pos: ReadPos): void {
    this.totalUnread += pos.unread - this.unread[b]!;
    this.counters.replayed -= pos.unread - this.unread[b]!;
    this.readGen[b] = pos.gen;
    this.readOff[b] = pos.off;
    this.unread[b] = pos.unread;
    this.readRecs[b] = pos.readRecs;
  }

  /** Marks what a write just put in bucket `b` as read: it is delivered from memory. */
  markRead(b: number, gen: number, off: number, records: number): void {
    this.readGen[b] = gen;
    this.readOff[b] = off;
    this.unread[b] -= records;
    this.totalUnread -= records;
  }

  /**
   * Reads bucket `b`'s next records back, up to about `maxBytes` and `maxRecords` (at least one
   * record), and moves its read position past them. Null when nothing is left to read.
   */
  read(b: number, maxBytes: number, maxRecords = Infinity): ReadResult | null {
    const segs = this.segs[b]!;
    for (;;) {
      if (this.unread[b]! <= 0) return null;
      const i = segs.findIndex((s) => s.gen === this.readGen[b]);
      const seg = segs[i];
      if (!seg) return null;
      if (this.readOff[b]! >= seg.size) {
        const next = segs[i + 1];
        if (!next) return null;
        this.readGen[b] = next.gen;
        this.readOff[b] = SEG_HEADER;
        this.readRecs[b] = 0;
        continue;
      }
      const file = this.segFile(b, seg.gen);
      const fd = this.writeFd[b]! >= 0 && i === segs.length - 1 ? this.writeFd[b]! : openSync(file, 'r');
      try {
        const start = this.readOff[b]!;
        let want = Math.min(maxBytes, seg.size - start);
        let buf = Buffer.allocUnsafe(want);
        let got = readSync(fd, buf, 0, want, start);
        // A record bigger than maxBytes is read whole.
        if (got >= FRAME && FRAME + buf.readUInt32LE(0) > got && FRAME + buf.readUInt32LE(0) <= seg.size - start) {
          want = FRAME + buf.readUInt32LE(0);
          buf = Buffer.allocUnsafe(want);
          got = readSync(fd, buf, 0, want, start);
        }
        const out = Buffer.allocUnsafe(got);
        let p = 0;
        let o = 0;
        let count = 0;
        let bad = '';
        while (p + FRAME <= got && count < maxRecords) {
          const len = buf.readUInt32LE(p);
          if (p + FRAME + len > got) break;
          const rec = buf.subarray(p + FRAME, p + FRAME + len);
          if (len === 0 || crc32(rec) !== buf.readUInt32LE(p + 4)) {
            bad = `a checksum mismatch at offset ${start + p}`;
            break;
          }
          rec.copy(out, o);
          o += len;
          p += FRAME + len;
          count++;
        }
        if (bad) {
          // Found while running (the disk changed under us): skip the rest of this segment.
          this.counters.tornTails++;
          this.counters.cutBytes += seg.size - start - p;
          this.count('SPOOL_CORRUPT', `${file}: ${bad}; the rest of the segment (${seg.size - start - p} bytes) is skipped`);
          const lost = Math.max(0, seg.records - this.readRecs[b]! - count);
          seg.records -= lost;
          this.unread[b] -= lost;
          this.unprocessed[b] -= lost;
          this.totalUnread -= lost;
          this.totalUnprocessed -= lost;
          this.readOff[b] = seg.size;
        } else {
          this.readOff[b] = start + p;
        }
        if (count === 0) continue;
        this.readRecs[b] += count;
        this.unread[b] -= count;
        this.totalUnread -= count;
        this.counters.replayed += count;
        return { bucket: b, body: out.subarray(0, o), count, gen: seg.gen, off: start + p };
      } finally {
        if (fd !== this.writeFd[b]) closeSync(fd);
      }
    }
  }

  // ---- the cursor --------------------------------------------------------------------------

  /** Bucket `b` is processed up to (gen, off), `records` more than before. */
  commit(b: number, gen: number, off: number, records: number): void {
    if (gen < this.doneGen[b]! || (gen === this.doneGen[b] && off <= this.doneOff[b]!)) return;
    this.doneGen[b] = gen;
    this.doneOff[b] = off;
    this.unprocessed[b] -= records;
    this.totalUnprocessed -= records;
    this.cursorDirty = true;
    if (!this.cursorSoon) this.cursorSoon = setImmediate(() => this.saveCursor());
  }

  /** Writes the cursor now (into the older of its two copies) and deletes processed segments. */
  saveCursor(): void {
    this.cursorSoon = null;
    if (!this.cursorDirty || this.closed) return;
    this.cursorDirty = false;
    const c = this.cursorBuf;
    this.cursorSeq = (this.cursorSeq + 1) >>> 0;
    c.writeUInt32LE(CURSOR_MAGIC, 0);
    c.writeUInt32LE(this.cursorSeq, 4);
    c.writeUInt32LE(this.buckets, 12);
    for (let b = 0; b < this.buckets; b++) {
      c.writeUInt32LE(this.doneGen[b]!, 16 + 8 * b);
      c.writeUInt32LE(this.doneOff[b]!, 20 + 8 * b);
    }
    c.writeUInt32LE(crc32(c.subarray(16)), 8);
    try {
      writeSync(this.cursorFd, c, 0, c.length, (this.cursorSeq % 2) * c.length);
    } catch (err) {
      // Tried again at the next commit or disk check; a stale cursor only means more replayed.
      this.count('SPOOL_CURSOR_FAILED', `${this.dir}/cursor: ${(err as Error).message}`);
      this.cursorDirty = true;
    }
    // Safe even when the cursor is stale: a deleted segment was processed, and a bucket's next
    // segment is always a generation after its cursor's.
    this.dropProcessed();
  }

  /**
   * Deletes segments wholly before each bucket's cursor; a bucket's last segment too once all of
   * it is processed, if it is full size or the spool is short of room.
   */
  private dropProcessed(): void {
    const pressed = this.wasFull || this.writeFailed !== '' || this.freeBytes < this.settings.minFreeBytes;
    for (let b = 0; b < this.buckets; b++) {
      const segs = this.segs[b]!;
      const only = segs.length === 1 ? segs[0]! : null;
      if (only && only.gen === this.doneGen[b] && this.doneOff[b]! >= only.size && only.size > SEG_HEADER && (pressed || only.size >= this.segmentBytes)) {
        if (this.writeFd[b]! >= 0) {
          this.dirty.delete(b);
          closeSync(this.writeFd[b]!);
          this.writeFd[b] = -1;
        }
        segs.length = 0;
        this.segmentCount--;
        this.bytes -= only.size;
        this.freeBytes += only.size;
        this.wasFull = false;
        this.readRecs[b] = 0;
        try {
          unlinkSync(this.segFile(b, only.gen));
        } catch (err) {
          this.count('SPOOL_UNLINK_FAILED', (err as Error).message);
        }
        continue;
      }
      while (segs.length > 1) {
        const first = segs[0]!;
        const done = this.doneGen[b]!;
        const past = first.gen < done || (first.gen === done && this.doneOff[b]! >= first.size);
        if (!past) break;
        if (first.gen === done) {
          this.doneGen[b] = segs[1]!.gen;
          this.doneOff[b] = SEG_HEADER;
        }
        if (this.readGen[b] === first.gen) {
          this.readGen[b] = segs[1]!.gen;
          this.readOff[b] = SEG_HEADER;
          this.readRecs[b] = 0;
        }
        segs.shift();
        this.wasFull = false;
        this.segmentCount--;
        this.bytes -= first.size;
        this.freeBytes += first.size;
        try {
          unlinkSync(this.segFile(b, first.gen));
        } catch (err) {
          this.count('SPOOL_UNLINK_FAILED', (err as Error).message);
        }
      }
    }
  }

  // ---- disk space and fsync -------------------------------------------------------------

  private checkDisk(): void {
    try {
      const s = statfsSync(this.dir);
      this.freeBytes = s.bavail * s.bsize;
    } catch {
      // keep the last reading
    }
  }

  private async watchDisk(): Promise<void> {
    if (this.cursorDirty && !this.cursorSoon) this.saveCursor();
    try {
      const s = await statfs(this.dir);
      this.freeBytes = s.bavail * s.bsize;
    } catch {
      return;
    }
    // A failed write (the disk was full) is tried again once space has come back.
    if (this.writeFailed && this.freeBytes >= this.settings.minFreeBytes && this.freeBytes > this.failedFree + (64 << 10)) {
      this.log.info({ dir: this.dir, freeBytes: this.freeBytes }, `spool ${this.dir}: space is back (${this.freeBytes} bytes free); taking records again`);
      this.writeFailed = '';
    }
  }

  /** fsync interval: the files written since the last sync, the cursor, and finished segments. */
  private syncDirty(): void {
    if (!this.syncer || this.syncer.running) return; // the interval stretches while one runs
    const sync: number[] = [];
    for (const b of this.dirty) if (this.writeFd[b]! >= 0) sync.push(this.writeFd[b]!);
    this.dirty.clear();
    if (this.cursorFd >= 0) sync.push(this.cursorFd);
    const close = this.toClose;
    this.toClose = [];
    this.syncer.start(sync, close);
  }

  // ---- status ------------------------------------------------------------------------------

  state(): SpoolState {
    return this.refusal(0)?.state ?? (this.wasFull ? 'full' : 'ok');
  }

  stats(): SpoolStats {
    return {
      mode: this.settings.mode,
      dir: this.dir,
      state: this.state(),
      records: this.totalUnprocessed,
      backlog: this.totalUnread,
      bytes: this.bytes,
      maxBytes: this.settings.maxBytes,
      freeBytes: this.freeBytes,
      minFreeBytes: this.settings.minFreeBytes,
      fsync: this.settings.fsync,
      segments: this.segmentCount,
      ...this.counters,
    };
  }

  /** Saves the cursor and closes every file; with fsync other than `never`, syncs first. */
  close(): void {
    if (this.closed) return;
    if (this.cursorSoon) clearImmediate(this.cursorSoon);
    this.saveCursor();
    this.closed = true;
    if (this.diskTimer) clearInterval(this.diskTimer);
    if (this.syncTimer) clearInterval(this.syncTimer);
    void this.syncer?.stop();
    for (const fd of this.toClose) {
      fdatasyncSync(fd);
      closeSync(fd);
    }
    this.toClose = [];
    for (let b = 0; b < this.buckets; b++) {
      if (this.nextFd[b]! >= 0) closeSync(this.nextFd[b]!);
      this.nextFd[b] = -1;
      const fd = this.writeFd[b]!;
      if (fd < 0) continue;
      if (this.settings.fsync !== 'never') fdatasyncSync(fd);
      closeSync(fd);
      this.writeFd[b] = -1;
    }
    if (this.cursorFd >= 0) {
      if (this.settings.fsync !== 'never') fdatasyncSync(this.cursorFd);
      closeSync(this.cursorFd);
      this.cursorFd = -1;
    }
  }

  private segFile(b: number, gen: number): string {
    return join(this.dir, `${String(b).padStart(5, '0')}-${String(gen).padStart(8, '0')}.seg`);
  }
}

function segHeader(bucket: number, gen: number): Buffer {
  const h = Buffer.alloc(SEG_HEADER);
  h.writeUInt32LE(SEG_MAGIC, 0);
  h.writeUInt32LE(VERSION, 4);
  h.writeUInt32LE(bucket, 8);
  h.writeUInt32LE(gen, 12);
  return h;
}
