/**
 * When written records reach the disk, by the stream's `fsync` setting (docs/delivery.md,
 * "Durability window"):
 *
 *   always     each segment written is fdatasync'ed before the write returns
 *   interval   every `fsync_interval_ms` a worker thread (`syncer.ts`) syncs the segments written
 *              since the last sync, the segments finished since (and closes them), and the cursor;
 *              a sync still running when the next is due delays it
 *   never      the kernel writes them back
 *
 * Diagnostics channel `flotilla:spool:sync` (`SYNC_CHANNEL`): each time the worker finishes an
 * interval sync, a `SyncMessage` `{ dir, files, failed }` is published on it: the spool's
 * directory, the files that sync covered (the cursor is one of them), and how many of them
 * could not be synced. Published only while the channel has subscribers, so it costs nothing
 * otherwise.
 */
import { channel } from 'node:diagnostics_channel';
import { closeSync, fdatasyncSync } from 'node:fs';
import type { FsyncPolicy } from '../map/types';
import { Syncer } from './syncer';

/** The name of the diagnostics channel an interval sync is published on. */
export const SYNC_CHANNEL = 'flotilla:spool:sync';

/** What `SYNC_CHANNEL` carries after each interval sync. */
export interface SyncMessage {
  /** The spool's directory. */
  dir: string;
  /** Files synced (segments written or finished since the last sync, and the cursor). */
  files: number;
  /** Of those, the files that could not be synced. */
  failed: number;
}

const syncChannel = channel(SYNC_CHANNEL);

/** The fsync policy at work: what is synced when, and the files waiting for the next sync. */
export class Fsync {
  /** Buckets whose segment was written since the last interval sync. */
  private readonly dirty = new Set<number>();
  /** Finished segments' descriptors, closed by the syncer once synced. */
  private toClose: number[] = [];
  private syncer: Syncer | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly policy: FsyncPolicy,
    private readonly intervalMs: number,
    private readonly dir: string,
    /** Each bucket's segment open for writing, -1 for none (owned by the segments). */
    private readonly writeFd: Int32Array,
    private readonly cursor: { readonly fd: number },
    private readonly count: (cause: string, example: string) => void,
  ) {}

  /** With fsync other than `never`, files are synced before they are closed. */
  get durable(): boolean {
    return this.policy !== 'never';
  }

  /** Bucket `b`'s segment, open as `fd`, was just written: synced now, or at the next interval. */
  written(b: number, fd: number): void {
    if (this.policy === 'always') fdatasyncSync(fd);
    else if (this.policy === 'interval') this.dirty.add(b);
  }

  /** Bucket `b`'s segment `fd` is finished: closed now, or synced and closed at the next interval. */
  retire(b: number, fd: number): void {
    if (this.dirty.delete(b)) this.toClose.push(fd);
    else closeSync(fd);
  }

  /** Bucket `b`'s segment is being deleted: it needs no sync. */
  forget(b: number): void {
    this.dirty.delete(b);
  }

  /** Starts the interval syncs (fsync `interval`). */
  start(): void {
    if (this.policy !== 'interval') return;
    this.syncer = new Syncer((failed, files) => {
      if (failed > 0) this.count('SPOOL_SYNC_FAILED', `${this.dir}: ${failed} files could not be synced to disk`);
      if (syncChannel.hasSubscribers) syncChannel.publish({ dir: this.dir, files, failed } satisfies SyncMessage);
    });
    this.timer = setInterval(() => this.syncDirty(), this.intervalMs);
    this.timer.unref();
  }

  /** The files written since the last sync, the cursor, and finished segments, to the worker. */
  private syncDirty(): void {
    if (!this.syncer || this.syncer.running) return; // the interval stretches while one runs
    const sync: number[] = [];
    for (const b of this.dirty) if (this.writeFd[b]! >= 0) sync.push(this.writeFd[b]!);
    this.dirty.clear();
    if (this.cursor.fd >= 0) sync.push(this.cursor.fd);
    const close = this.toClose;
    this.toClose = [];
    this.syncer.start(sync, close);
  }

  /** Stops the interval syncs; syncs and closes the finished segments still waiting. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    void this.syncer?.stop();
    for (const fd of this.toClose) {
      fdatasyncSync(fd);
      closeSync(fd);
    }
    this.toClose = [];
  }
}
