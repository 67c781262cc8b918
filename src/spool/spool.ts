/**
 * The spool: a portal's records on disk, in files per bucket (docs/delivery.md).
 *
 *   <dir>/<server>/<stream>/BBBBB-GGGGGGGG.seg   bucket B's segment of generation G
 *   <dir>/<server>/<stream>/cursor               how far each bucket is processed
 *
 * `Spool` is the facade the portal uses; it wires the parts, each in its own file:
 *
 *   segment.ts    the segment format: names, header, frames; checking one and cutting its tail
 *   segments.ts   the segment files' lives: found at start-up, begun, prepared ahead, deleted
 *   positions.ts  per bucket: done <= read <= end, and the records between them
 *   cursor.ts     the cursor file, in two copies
 *   staging.ts    records framed per bucket until the next flush
 *   space.ts      room: max_bytes, the free space, a failed write; SpoolFullError
 *   fsync.ts      the fsync policy (and its diagnostics channel); syncer.ts its worker thread
 *   crc32.ts      the records' checksum
 *
 * `done` is the cursor, written to the cursor file after every round of acknowledgements; a
 * segment wholly before it is deleted. At start-up every segment is checked record by record: a
 * torn or corrupt tail is cut off (counted and logged), and reading starts again at `done`, so
 * after a crash replay starts where processing stopped.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { ensureOwnDir, SPOOL_DIR_MODE } from '../dirs';
import { join } from 'node:path';
import type { Logger } from '../log';
import type { FsyncPolicy, SpoolSettings } from '../map/types';
import { CursorFile } from './cursor';
import { Fsync } from './fsync';
import { type ReadPos, Positions } from './positions';
import { readFrames } from './segment';
import { Segments } from './segments';
import { Space, type SpoolState } from './space';
import { Staging, type WriteResult } from './staging';

export { SpoolFullError, type SpoolState } from './space';
export type { ReadPos } from './positions';
export type { WriteResult } from './staging';
export { SYNC_CHANNEL, type SyncMessage } from './fsync';

/** The spool's figures, as the portal's stats show them. */
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

/** Records read back from one bucket, framing stripped: a DELIVER body. */
export interface ReadResult {
  bucket: number;
  body: Buffer;
  count: number;
  gen: number;
  off: number;
}

/** A stream's spool: records staged, written, read back and committed per bucket. */
export class Spool {
  /** The stream's spool directory: `<settings.dir>/<server>/<stream>`. */
  readonly dir: string;
  private readonly positions: Positions;
  private readonly segments: Segments;
  private readonly staging: Staging;
  private readonly space: Space;
  private readonly fsync: Fsync;
  private readonly cursor: CursorFile;
  private cursorDirty = false;
  private cursorSoon: NodeJS.Immediate | null = null;
  private closed = false;
  private counters = { written: 0, replayed: 0, tornTails: 0, cutBytes: 0 };

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
    this.positions = new Positions(buckets);
    this.cursor = new CursorFile(this.dir, buckets);
    this.space = new Space(this.dir, settings.maxBytes, settings.minFreeBytes, log, count);
    const writeFd = new Int32Array(buckets).fill(-1);
    this.fsync = new Fsync(settings.fsync, settings.fsyncIntervalMs, this.dir, writeFd, this.cursor, count);
    this.segments = new Segments(this.dir, buckets, settings.maxBytes, writeFd, this.positions, this.fsync, count);
    this.staging = new Staging(buckets, this.segments, this.space);
  }

  /** Opens the spool: checks every segment, cuts torn tails, and starts reading at the cursor. */
  open(): void {
    ensureOwnDir(this.dir, SPOOL_DIR_MODE, 'spool directory');
    const loaded = this.cursor.load();
    this.positions.loadDone(loaded.gen, loaded.off);
    if (loaded.invalid) this.count('SPOOL_CURSOR_INVALID', `${this.cursor.file} has no valid copy; replaying every record in the spool`);
    const cuts = this.segments.recover();
    this.counters.tornTails += cuts.tornTails;
    this.counters.cutBytes += cuts.cutBytes;
    this.space.check();
    this.space.watch(() => {
      if (this.cursorDirty && !this.cursorSoon) this.saveCursor();
    });
    this.fsync.start();
    const records = this.positions.totalUnprocessed;
    const { tornTails, cutBytes } = this.counters;
    if (records > 0 || tornTails > 0) {
      this.log.info(
        { dir: this.dir, records, bytes: this.segments.bytes, tornTails },
        `spool ${this.dir}: ${records} records to replay${tornTails > 0 ? `, ${tornTails} torn tails cut (${cutBytes} bytes)` : ''}`,
      );
    }
  }

  // ---- writing -----------------------------------------------------------------------------

  /**
   * Frames the records `i` of `body` for which `take[i]` is set (all when `take` is null) into
   * their buckets' staging buffers, in order, and returns where each bucket's records will end
   * once written. Nothing touches the disk until `flush()`, which writes all that was staged
   * with one write per bucket. Throws SpoolFullError, staging nothing, if the spool has no room.
   */
  stage(body: Buffer, starts: Uint32Array, bucketOf: Uint32Array, count: number, take: Uint8Array | null): WriteResult {
    return this.staging.stage(body, starts, bucketOf, count, take);
  }

  /** Records staged for bucket `b` and not yet written. */
  stagedOf(b: number): number {
    return this.staging.recs[b]!;
  }

  /** Bytes staged and not yet written. */
  get stagedTotalBytes(): number {
    return this.staging.stagedBytes;
  }

  /** True when records are staged and not yet written. */
  get hasStaged(): boolean {
    return this.staging.list.length > 0;
  }

  /**
   * Writes everything staged, one write per bucket, then (fsync always) syncs those files. All
   * or nothing: on a failure every segment touched is cut back, the staging emptied, and a
   * SpoolFullError thrown.
   */
  flush(): void {
    const staging = this.staging;
    const segments = this.segments;
    const list = staging.list;
    if (list.length === 0) return;
    let k = 0;
    try {
      for (; k < list.length; k++) {
        const b = list[k]!;
        const seg = segments.newest(b);
        const fd = segments.openForWrite(b, seg);
        const len = staging.len[b]!;
        let done = 0;
        while (done < len) done += writeSync(fd, staging.buf[b]!, done, len - done, seg.size + done);
        this.fsync.written(b, fd);
      }
    } catch (err) {
      // Cut back every bucket this flush reached, so no half-written batch stays behind.
      for (let j = 0; j <= k && j < list.length; j++) segments.cutBack(list[j]!);
      staging.drop();
      throw this.space.failed(err as NodeJS.ErrnoException);
    }
    for (const b of list) {
      const len = staging.len[b]!;
      const r = staging.recs[b]!;
      segments.grew(b, segments.newest(b), len, r);
      this.space.wrote(len);
      this.positions.added(b, r);
      this.counters.written += r;
      staging.written(b);
    }
    staging.clear();
  }

  /** `stage` then `flush`: the records are written when this returns. */
  write(body: Buffer, starts: Uint32Array, bucketOf: Uint32Array, count: number, take: Uint8Array | null): WriteResult {
    const res = this.stage(body, starts, bucketOf, count, take);
    this.flush();
    return res;
  }

  // ---- reading back ------------------------------------------------------------------------

  /** Records on disk and not yet read back, in all buckets. */
  get unreadTotal(): number {
    return this.positions.totalUnread;
  }

  /** Records of bucket `b` on disk and not yet read back. */
  unreadOf(b: number): number {
    return this.positions.unread[b]!;
  }

  /** Bucket `b`'s read position, to go back to with `restore` (records read and not taken). */
  readPos(b: number): ReadPos {
    return this.positions.readPos(b);
  }

  /** Puts bucket `b`'s read position back where `readPos` found it: those records are read again. */
  restore(b: number, pos: ReadPos): void {
    this.counters.replayed -= this.positions.restore(b, pos);
  }

  /** Marks what a write just put in bucket `b` as read: it is delivered from memory. */
  markRead(b: number, gen: number, off: number, records: number): void {
    this.positions.markRead(b, gen, off, records);
  }

  /**
   * Reads bucket `b`'s next records back, up to about `maxBytes` and `maxRecords` (at least one
   * record), and moves its read position past them. Null when nothing is left to read.
   */
  read(b: number, maxBytes: number, maxRecords = Infinity): ReadResult | null {
    const pos = this.positions;
    const segs = this.segments.of(b);
    const writeFd = this.segments.writeFd;
    for (;;) {
      if (pos.unread[b]! <= 0) return null;
      let i = 0;
      while (i < segs.length && segs[i]!.gen !== pos.readGen[b]) i++;
      const seg = segs[i];
      if (!seg) return null;
      if (pos.readOff[b]! >= seg.size) {
        const next = segs[i + 1];
        if (!next) return null;
        pos.readFrom(b, next.gen);
        continue;
      }
      const file = this.segments.file(b, seg.gen);
      const fd = writeFd[b]! >= 0 && i === segs.length - 1 ? writeFd[b]! : openSync(file, 'r');
      try {
        const start = pos.readOff[b]!;
        const { body, count, used, bad } = readFrames(fd, start, seg.size, maxBytes, maxRecords);
        if (bad) {
          // Found while running (the disk changed under us): skip the rest of this segment.
          const skipped = seg.size - start - used;
          this.counters.tornTails++;
          this.counters.cutBytes += skipped;
          this.count('SPOOL_CORRUPT', `${file}: ${bad}; the rest of the segment (${skipped} bytes) is skipped`);
          const lost = Math.max(0, seg.records - pos.readRecs[b]! - count);
          seg.records -= lost;
          pos.lost(b, lost);
          pos.readAt(b, seg.size);
        } else {
          pos.readAt(b, start + used);
        }
        if (count === 0) continue;
        pos.readMore(b, count);
        this.counters.replayed += count;
        return { bucket: b, body, count, gen: seg.gen, off: start + used };
      } finally {
        if (fd !== writeFd[b]) closeSync(fd);
      }
    }
  }

  // ---- the cursor --------------------------------------------------------------------------

  /** Bucket `b` is processed up to (gen, off), `records` more than before. */
  commit(b: number, gen: number, off: number, records: number): void {
    if (!this.positions.commit(b, gen, off, records)) return;
    this.cursorDirty = true;
    if (!this.cursorSoon) this.cursorSoon = setImmediate(() => this.saveCursor());
  }

  /** Writes the cursor now (into the older of its two copies) and deletes processed segments. */
  saveCursor(): void {
    this.cursorSoon = null;
    if (!this.cursorDirty || this.closed) return;
    this.cursorDirty = false;
    try {
      this.cursor.save(this.positions.doneGen, this.positions.doneOff);
    } catch (err) {
      // Tried again at the next commit or disk check; a stale cursor only means more replayed.
      this.count('SPOOL_CURSOR_FAILED', `${this.dir}/cursor: ${(err as Error).message}`);
      this.cursorDirty = true;
    }
    // Safe even when the cursor is stale: a deleted segment was processed, and a bucket's next
    // segment is always a generation after its cursor's.
    const freed = this.segments.dropProcessed(this.space.pressed, this.staging.recs);
    if (freed > 0) this.space.freed(freed);
  }

  // ---- status ------------------------------------------------------------------------------

  /** Why the spool takes no records now, or `ok`. */
  state(): SpoolState {
    return this.space.state(this.segments.bytes + this.staging.stagedBytes);
  }

  /** The spool's figures now. */
  stats(): SpoolStats {
    return {
      mode: this.settings.mode,
      dir: this.dir,
      state: this.state(),
      records: this.positions.totalUnprocessed,
      backlog: this.positions.totalUnread,
      bytes: this.segments.bytes,
      maxBytes: this.settings.maxBytes,
      freeBytes: this.space.freeBytes,
      minFreeBytes: this.settings.minFreeBytes,
      fsync: this.settings.fsync,
      segments: this.segments.count,
      ...this.counters,
    };
  }

  /** Saves the cursor and closes every file; with fsync other than `never`, syncs first. */
  close(): void {
    if (this.closed) return;
    if (this.cursorSoon) clearImmediate(this.cursorSoon);
    this.saveCursor();
    this.closed = true;
    this.space.stop();
    this.fsync.close();
    this.segments.close(this.fsync.durable);
    this.cursor.close(this.fsync.durable);
  }
}
