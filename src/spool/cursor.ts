/**
 * The cursor file: how far each bucket is processed, as (generation, offset), in two copies
 * written alternately so that a write torn by a crash leaves the other one.
 *
 *   copy = [magic "FLCU" u32][sequence u32][crc32 u32][buckets u32] then per bucket [gen u32][off u32]
 *
 * (little-endian; the CRC-32 covers the per-bucket part). Copy `seq % 2` sits at offset
 * `(seq % 2) * copy size`; the valid copy with the higher sequence number is the cursor.
 */
import { closeSync, fdatasyncSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from './crc32';
import { SEG_HEADER } from './segment';

const CURSOR_MAGIC = 0x55434c46; // "FLCU"

/** What the cursor file held: each bucket's processed position (the start when nothing was). */
export interface LoadedCursor {
  gen: Uint32Array;
  off: Uint32Array;
  /** The file held bytes, but no valid copy: every record in the spool is replayed. */
  invalid: boolean;
}

/** A stream's cursor file, open from `load` to `close`. */
export class CursorFile {
  /** Its path. */
  readonly file: string;
  /** Its descriptor, -1 when not open (the interval sync syncs it too). */
  fd = -1;
  private seq = 0;
  private readonly buf: Buffer;

  constructor(
    dir: string,
    private readonly buckets: number,
  ) {
    this.file = join(dir, 'cursor');
    this.buf = Buffer.alloc(16 + 8 * buckets);
  }

  /** Opens the file (creating it, with room for both copies) and reads the newer valid copy. */
  load(): LoadedCursor {
    this.fd = openSync(this.file, 'a+');
    closeSync(this.fd);
    this.fd = openSync(this.file, 'r+');
    const region = this.buf.length;
    const buf = Buffer.alloc(2 * region);
    const got = readSync(this.fd, buf, 0, buf.length, 0);
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
      writeSync(this.fd, zeros, 0, zeros.length, got);
    }
    const gen = new Uint32Array(this.buckets);
    const off = new Uint32Array(this.buckets).fill(SEG_HEADER);
    if (!best) {
      // All zeros: the room taken at creation, never written (nothing was processed yet).
      return { gen, off, invalid: buf.subarray(0, got).some((x) => x !== 0) };
    }
    this.seq = bestSeq;
    for (let b = 0; b < this.buckets; b++) {
      gen[b] = best.readUInt32LE(16 + 8 * b);
      off[b] = Math.max(SEG_HEADER, best.readUInt32LE(20 + 8 * b));
    }
    return { gen, off, invalid: false };
  }

  /** Writes the cursor `gen`/`off` into the older copy. Throws if the write fails. */
  save(gen: Uint32Array, off: Uint32Array): void {
    const c = this.buf;
    this.seq = (this.seq + 1) >>> 0;
    c.writeUInt32LE(CURSOR_MAGIC, 0);
    c.writeUInt32LE(this.seq, 4);
    c.writeUInt32LE(this.buckets, 12);
    for (let b = 0; b < this.buckets; b++) {
      c.writeUInt32LE(gen[b]!, 16 + 8 * b);
      c.writeUInt32LE(off[b]!, 20 + 8 * b);
    }
    c.writeUInt32LE(crc32(c.subarray(16)), 8);
    writeSync(this.fd, c, 0, c.length, (this.seq % 2) * c.length);
  }

  /** Closes the file, syncing it first if `sync`. */
  close(sync: boolean): void {
    if (this.fd < 0) return;
    if (sync) fdatasyncSync(this.fd);
    closeSync(this.fd);
    this.fd = -1;
  }
}
