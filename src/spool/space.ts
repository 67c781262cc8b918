/**
 * Room for records: whether the spool takes `bytes` more now, and why not. Three reasons, in
 * this order: a write failed (the disk really full, or failing) and space has not come back
 * since; the filesystem's free space is under `min_free_bytes`; or the files would pass
 * `max_bytes`. The free space is read every second (`statfs`, no process spawned) and kept up to
 * date with each write and deletion in between.
 */
import { statfsSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { FlotillaError } from '../errors';
import type { Logger } from '../log';

const DISK_CHECK_MS = 1000;

/** Why the spool takes no records now; `ok` when it does. */
export type SpoolState = 'ok' | 'full' | 'low_disk' | 'write_failed';

/** The spool has no room for a write; `state` says why. */
export class SpoolFullError extends FlotillaError {
  constructor(
    readonly state: SpoolState,
    message: string,
  ) {
    super('SPOOL_FULL', message);
  }
}

/** The spool's room: its limits, the free space, and the state of its last write. */
export class Space {
  /** Free bytes on the spool's filesystem, as last read and since kept up to date. */
  freeBytes = Number.MAX_SAFE_INTEGER;
  /** The last write was refused for max_bytes, and nothing has been freed since. */
  wasFull = false;
  /** Why the last write failed, until space comes back; '' when it did not. */
  private writeFailed = '';
  /** The free space when it failed: space is back once there is more. */
  private failedFree = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly dir: string,
    private readonly maxBytes: number,
    private readonly minFreeBytes: number,
    private readonly log: Logger,
    private readonly count: (cause: string, example: string) => void,
  ) {}

  /** Why the spool would refuse `bytes` more, holding `held` bytes (written and staged) now; null if it takes them. */
  refusal(bytes: number, held: number): SpoolFullError | null {
    if (this.writeFailed) return new SpoolFullError('write_failed', `the spool ${this.dir} could not write: ${this.writeFailed}`);
    if (this.freeBytes < this.minFreeBytes) {
      return new SpoolFullError('low_disk', `the spool's filesystem has ${this.freeBytes} bytes free, under the floor of ${this.minFreeBytes} (min_free_bytes)`);
    }
    if (held + bytes > this.maxBytes) {
      return new SpoolFullError('full', `the spool ${this.dir} holds ${held} bytes; ${bytes} more would pass max_bytes ${this.maxBytes}`);
    }
    return null;
  }

  /** Short of room: processed segments are deleted even if not full size. */
  get pressed(): boolean {
    return this.wasFull || this.writeFailed !== '' || this.freeBytes < this.minFreeBytes;
  }

  /** A write failed (the disk is full, or failing): no more records until space is back. */
  failed(e: NodeJS.ErrnoException): SpoolFullError {
    this.writeFailed = `${e.code ?? 'EIO'}: ${e.message}`;
    this.count('SPOOL_WRITE_FAILED', `${this.dir}: ${e.message}`);
    this.check();
    this.failedFree = this.freeBytes;
    return new SpoolFullError('write_failed', `the spool ${this.dir} could not write: ${this.writeFailed}`);
  }

  /** `bytes` were written: kept up to date between the disk checks, so the floor holds even in a fast burst. */
  wrote(bytes: number): void {
    this.freeBytes = Math.max(0, this.freeBytes - bytes);
  }

  /** A segment of `bytes` was deleted. */
  freed(bytes: number): void {
    this.freeBytes += bytes;
    this.wasFull = false;
  }

  /** Reads the free space now. */
  check(): void {
    try {
      const s = statfsSync(this.dir);
      this.freeBytes = s.bavail * s.bsize;
    } catch {
      // keep the last reading
    }
  }

  /** Reads the free space every second from now on, calling `tick` first each time. */
  watch(tick: () => void): void {
    this.timer = setInterval(() => void this.recheck(tick), DISK_CHECK_MS);
    this.timer.unref();
  }

  /** Stops watching. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private async recheck(tick: () => void): Promise<void> {
    tick();
    try {
      const s = await statfs(this.dir);
      this.freeBytes = s.bavail * s.bsize;
    } catch {
      return;
    }
    // A failed write (the disk was full) is tried again once space has come back.
    if (this.writeFailed && this.freeBytes >= this.minFreeBytes && this.freeBytes > this.failedFree + (64 << 10)) {
      this.log.info({ dir: this.dir, freeBytes: this.freeBytes }, `spool ${this.dir}: space is back (${this.freeBytes} bytes free); taking records again`);
      this.writeFailed = '';
    }
  }

  /** The spool's state: why it refuses records, or `ok`. */
  state(held: number): SpoolState {
    return this.refusal(0, held)?.state ?? (this.wasFull ? 'full' : 'ok');
  }
}
