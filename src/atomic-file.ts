/**
 * Writing a small state file so that a crash leaves the old file or the new one, never half of
 * one: written to `<path>.tmp`, synced, renamed over the old one, and the directory synced so the
 * rename itself survives a power cut.
 */
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/** Replaces `path` with `text` atomically (mode `mode` for a new file). */
export function writeFileAtomic(path: string, text: string, mode = 0o660): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}
