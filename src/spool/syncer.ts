/**
 * Syncs the spool's files to disk on a worker thread (fsync `interval`), so that a thousand
 * fdatasync calls a second cost the portal's event loop one message, not a thousand requests.
 */
import { Worker } from 'node:worker_threads';

const WORKER = `
const { parentPort } = require('node:worker_threads');
const { closeSync, fdatasyncSync } = require('node:fs');
parentPort.on('message', ({ sync, close }) => {
  let failed = 0;
  for (const fd of sync) {
    try { fdatasyncSync(fd); } catch { failed++; }
  }
  for (const fd of close) {
    try { fdatasyncSync(fd); } catch { failed++; }
    try { closeSync(fd); } catch {}
  }
  parentPort.postMessage(failed);
});
`;

/** A worker thread that syncs and closes files, one batch at a time. */
export class Syncer {
  private readonly worker = new Worker(WORKER, { eval: true });
  private busy = false;
  /** Files in the batch under way. */
  private files = 0;

  /** `onDone` is told of each finished batch: the files that could not be synced, and all its files. */
  constructor(onDone: (failed: number, files: number) => void) {
    this.worker.on('message', (failed: number) => {
      this.busy = false;
      onDone(failed, this.files);
    });
    // After the listener: adding a 'message' listener refs the worker again, and a spool left
    // open must not keep its process alive.
    this.worker.unref();
  }

  /** A sync under way: the next one waits for it. */
  get running(): boolean {
    return this.busy;
  }

  /** Syncs `sync`, then syncs and closes `close` (file descriptors this side no longer uses). */
  start(sync: number[], close: number[]): void {
    this.busy = true;
    this.files = sync.length + close.length;
    this.worker.postMessage({ sync, close });
  }

  /** Ends the worker; a batch under way may be left unfinished. */
  stop(): Promise<number> {
    return this.worker.terminate();
  }
}
