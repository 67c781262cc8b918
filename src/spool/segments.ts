/**
 * The segment files of a stream's buckets through their lives: found and checked at start-up,
 * begun (the next one prepared ahead on the thread pool), written to, and deleted once
 * processed. A bucket appends to its newest segment; one grown past `segmentBytes` is finished
 * and the next generation begun. The format of one segment is `segment.ts`.
 */
import { close, closeSync, fdatasyncSync, ftruncateSync, open, openSync, readdirSync, unlinkSync, write, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Positions } from './positions';
import { SEG_HEADER, type Segment, checkSegment, parseSegmentName, segmentHeader, segmentName } from './segment';

const MIN_SEGMENT_BYTES = 16 << 10;

/** What the segments need of the fsync policy when a segment file is closed. */
export interface SegmentSync {
  /** Bucket `b`'s segment `fd` is finished: closed now, or synced and closed later. */
  retire(b: number, fd: number): void;
  /** Bucket `b`'s segment is being deleted: it needs no sync. */
  forget(b: number): void;
}

/** Every bucket's segments, oldest first, and the files open to write them. */
export class Segments {
  /** A segment this big is finished, and the next generation begun. */
  readonly segmentBytes: number;
  /** Bytes in all segments. */
  bytes = 0;
  /** Segments in all buckets. */
  count = 0;
  /** Per bucket, oldest first; the last is the one written to. */
  private readonly segs: Segment[][];
  /** Per bucket, the next segment opened ahead (see prepareNext): its fd (-1 none, -2 under way) and generation. */
  private readonly nextFd: Int32Array;
  private readonly nextGen: Uint32Array;
  /** A segment this big gets its successor prepared. */
  private readonly prepareAt: number;
  private closed = false;

  constructor(
    private readonly dir: string,
    private readonly buckets: number,
    maxBytes: number,
    /** Each bucket's newest segment, open for writing; -1 when not open. (The fsync policy reads it too.) */
    readonly writeFd: Int32Array,
    private readonly positions: Positions,
    private readonly sync: SegmentSync,
    private readonly countCause: (cause: string, example: string) => void,
  ) {
    this.segmentBytes = Math.max(MIN_SEGMENT_BYTES, Math.floor(maxBytes / buckets / 4));
    this.prepareAt = Math.floor(this.segmentBytes * 0.75);
    this.segs = Array.from({ length: buckets }, () => []);
    this.nextFd = new Int32Array(buckets).fill(-1);
    this.nextGen = new Uint32Array(buckets);
  }

  /**
   * Finds the segments on disk at start-up (the cursor loaded into the positions): deletes those
   * before a bucket's cursor, checks the others record by record, cutting torn or corrupt tails,
   * and sets each bucket to read on from its cursor. Returns the tails cut and their bytes.
   */
  recover(): { tornTails: number; cutBytes: number } {
    const pos = this.positions;
    const cuts = { tornTails: 0, cutBytes: 0 };
    const names = readdirSync(this.dir).filter((n) => n.endsWith('.seg')).sort();
    for (const name of names) {
      const id = parseSegmentName(name);
      if (!id || id.bucket >= this.buckets) {
        this.countCause('SPOOL_STRAY_FILE', `${join(this.dir, name)} is not a segment of this stream's ${this.buckets} buckets; left alone`);
        continue;
      }
      const { bucket, gen } = id;
      const done = pos.doneGen[bucket]!;
      if (gen < done) {
        unlinkSync(join(this.dir, name)); // processed before the crash; its deletion was pending
        continue;
      }
      const file = this.file(bucket, gen);
      const { size, records, after } = checkSegment(file, bucket, gen, gen === done ? pos.doneOff[bucket]! : SEG_HEADER, (at, bytes, why) => {
        cuts.tornTails++;
        cuts.cutBytes += bytes;
        this.countCause('SPOOL_TORN_TAIL', `${file}: ${why}; cut ${bytes} bytes at offset ${at}, kept the records before it`);
      });
      this.segs[bucket]!.push({ gen, size, records });
      if (gen === done) pos.setReadRecs(bucket, records - after);
      this.count++;
      this.bytes += size;
      pos.added(bucket, after);
    }
    for (let b = 0; b < this.buckets; b++) {
      const segs = this.segs[b]!;
      // The cursor may point into a segment since deleted or cut: start at the first one there is.
      if (segs.length > 0 && (segs[0]!.gen !== pos.doneGen[b] || pos.doneOff[b]! > segs[0]!.size)) {
        pos.doneFrom(b, segs[0]!.gen);
        pos.setReadRecs(b, 0);
      }
      if (segs.length === 0) pos.doneFrom(b, pos.doneGen[b]!);
      pos.readFromDone(b);
    }
    return cuts;
  }

  /** The path of bucket `b`'s segment of generation `gen`. */
  file(b: number, gen: number): string {
    return join(this.dir, segmentName(b, gen));
  }

  /** Bucket `b`'s segments, oldest first. */
  of(b: number): Segment[] {
    return this.segs[b]!;
  }

  /** Bucket `b`'s newest segment: the one written to. */
  newest(b: number): Segment {
    const segs = this.segs[b]!;
    return segs[segs.length - 1]!;
  }

  /**
   * Picks the segment bucket `b`'s records go to while none is staged for it: its newest, or a
   * new generation when that one is full. (One flush writes one segment per bucket.)
   */
  stageInto(b: number): Segment {
    const segs = this.segs[b]!;
    const seg = segs[segs.length - 1];
    return seg && seg.size < this.segmentBytes ? seg : this.begin(b, seg);
  }

  /** Bucket `b`'s segment `seg` (its newest), open for writing. */
  openForWrite(b: number, seg: Segment): number {
    if (this.writeFd[b]! < 0) this.writeFd[b] = openSync(this.file(b, seg.gen), 'r+');
    return this.writeFd[b]!;
  }

  /** `bytes` holding `records` were appended to bucket `b`'s segment `seg`. */
  grew(b: number, seg: Segment, bytes: number, records: number): void {
    seg.size += bytes;
    seg.records += records;
    this.bytes += bytes;
    if (seg.size >= this.prepareAt) this.prepareNext(b, seg.gen + 1);
  }

  /** Cuts bucket `b`'s newest segment back to its size before a failed write (if it can). */
  cutBack(b: number): void {
    const segs = this.segs[b]!;
    const seg = segs[segs.length - 1]!;
    try {
      ftruncateSync(this.writeFd[b]!, seg.size);
    } catch {
      // the segment keeps a tail the next start-up finds and cuts
    }
  }

  /**
   * Creates bucket `b`'s next segment (generation `gen`, header written) on the thread pool, so
   * that beginning it later costs the event loop no file creation. (A crash leaves it empty on
   * disk, which start-up reads as a segment with no records.)
   */
  private prepareNext(b: number, gen: number): void {
    if (this.nextFd[b] !== -1 || this.closed) return;
    this.nextFd[b] = -2; // under way
    const file = this.file(b, gen);
    // Exclusive: a file that exists already (begun meanwhile on this thread) is never truncated.
    open(file, 'wx+', (err, fd) => {
      if (err) {
        if (this.nextFd[b] === -2) this.nextFd[b] = -1;
        return;
      }
      write(fd, segmentHeader(b, gen), 0, SEG_HEADER, 0, (werr) => {
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

  /** Begins bucket `b`'s next segment generation after `last` (finishing that one). */
  private begin(b: number, last: Segment | undefined): Segment {
    const segs = this.segs[b]!;
    // Never a generation the cursor has seen: its offsets would say records of the new file done.
    const gen = last ? last.gen + 1 : this.positions.doneGen[b]! + 1;
    const old = this.writeFd[b]!;
    if (old >= 0) {
      // A finished segment still to be synced (fsync interval) is synced and closed at the next sync.
      this.sync.retire(b, old);
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
      if (!segs.some((x) => x.gen === stale)) unlinkSync(this.file(b, stale));
    }
    // (A preparation still under way is abandoned: its callback closes what it opened.)
    this.nextFd[b] = -1;
    if (fd < 0) {
      const file = this.file(b, gen);
      try {
        fd = openSync(file, 'wx+');
      } catch (err) {
        // Created a moment ago by an abandoned preparation: take it as it is (never truncate).
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        fd = openSync(file, 'r+');
      }
      try {
        writeSync(fd, segmentHeader(b, gen), 0, SEG_HEADER, 0);
      } catch (err) {
        closeSync(fd);
        unlinkSync(file);
        throw err;
      }
    }
    this.writeFd[b] = fd;
    const seg: Segment = { gen, size: SEG_HEADER, records: 0 };
    segs.push(seg);
    this.count++;
    this.bytes += SEG_HEADER;
    // A bucket with no segment left starts reading and processing at the new one.
    if (segs.length === 1) this.positions.startAt(b, gen);
    return seg;
  }

  /**
   * Deletes segments wholly before each bucket's cursor; a bucket's last segment too once all of
   * it is processed, if it is full size or the spool is `pressed` for room, and no records are
   * staged for it (`staged[b]`: the next flush writes there). Returns the bytes deleted.
   */
  dropProcessed(pressed: boolean, staged: Uint32Array): number {
    const pos = this.positions;
    let freed = 0;
    for (let b = 0; b < this.buckets; b++) {
      const segs = this.segs[b]!;
      const only = segs.length === 1 ? segs[0]! : null;
      const idle = only !== null && staged[b] === 0;
      if (idle && only.gen === pos.doneGen[b] && pos.doneOff[b]! >= only.size && only.size > SEG_HEADER && (pressed || only.size >= this.segmentBytes)) {
        if (this.writeFd[b]! >= 0) {
          this.sync.forget(b);
          closeSync(this.writeFd[b]!);
          this.writeFd[b] = -1;
        }
        segs.length = 0;
        this.count--;
        this.bytes -= only.size;
        freed += only.size;
        pos.setReadRecs(b, 0);
        this.unlink(b, only.gen);
        continue;
      }
      while (segs.length > 1) {
        const first = segs[0]!;
        const done = pos.doneGen[b]!;
        const past = first.gen < done || (first.gen === done && pos.doneOff[b]! >= first.size);
        if (!past) break;
        if (first.gen === done) pos.doneFrom(b, segs[1]!.gen);
        if (pos.readGen[b] === first.gen) pos.readFrom(b, segs[1]!.gen);
        segs.shift();
        this.count--;
        this.bytes -= first.size;
        freed += first.size;
        this.unlink(b, first.gen);
      }
    }
    return freed;
  }

  private unlink(b: number, gen: number): void {
    try {
      unlinkSync(this.file(b, gen));
    } catch (err) {
      this.countCause('SPOOL_UNLINK_FAILED', (err as Error).message);
    }
  }

  /** Closes every segment file, syncing those written first if `sync`; prepares no more. */
  close(sync: boolean): void {
    this.closed = true;
    for (let b = 0; b < this.buckets; b++) {
      if (this.nextFd[b]! >= 0) closeSync(this.nextFd[b]!);
      this.nextFd[b] = -1;
      const fd = this.writeFd[b]!;
      if (fd < 0) continue;
      if (sync) fdatasyncSync(fd);
      closeSync(fd);
      this.writeFd[b] = -1;
    }
  }
}
