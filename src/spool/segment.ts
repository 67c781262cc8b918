/**
 * The segment format: one file of one bucket's records, of one generation.
 *
 *   BBBBB-GGGGGGGG.seg   bucket B, generation G (zero-padded decimal)
 *
 * A segment begins with a 16-byte header ("FLSG", version 1, bucket, generation, each unsigned
 * 32-bit little-endian) and then records, each framed as [length u32][crc32 u32][envelope bytes]
 * (little-endian; CRC-32 as zlib computes it, over the envelope bytes). This file names, checks
 * and reads segments; which segments exist and which is written to is `segments.ts`.
 */
import { closeSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { crc32 } from './crc32';

const SEG_MAGIC = 0x47534c46; // "FLSG" little-endian
const VERSION = 1;
/** Bytes of a segment's header; its first record starts here. */
export const SEG_HEADER = 16;
/** Bytes of a record's frame header: its length and its CRC-32. */
export const FRAME = 8;
const NAME = /^(\d{5})-(\d{8})\.seg$/;

/** A segment of a bucket as the spool keeps it in memory. */
export interface Segment {
  gen: number;
  size: number;
  /** Records in the segment. */
  records: number;
}

/** The file name of bucket `b`'s segment of generation `gen`. */
export function segmentName(b: number, gen: number): string {
  return `${String(b).padStart(5, '0')}-${String(gen).padStart(8, '0')}.seg`;
}

/** The bucket and generation a segment's file name says, or null for a name that is not one. */
export function parseSegmentName(name: string): { bucket: number; gen: number } | null {
  const m = NAME.exec(name);
  return m ? { bucket: Number(m[1]), gen: Number(m[2]) } : null;
}

/** A new segment's 16-byte header. */
export function segmentHeader(bucket: number, gen: number): Buffer {
  const h = Buffer.alloc(SEG_HEADER);
  h.writeUInt32LE(SEG_MAGIC, 0);
  h.writeUInt32LE(VERSION, 4);
  h.writeUInt32LE(bucket, 8);
  h.writeUInt32LE(gen, 12);
  return h;
}

/** What checking a segment found: its size after any cut, and its records. */
export interface SegmentCheck {
  size: number;
  records: number;
  /** Records that end past the offset `from` given to `checkSegment`. */
  after: number;
}

/** Told of a tail cut off a segment: where, how many bytes, and why. */
export type OnCut = (at: number, bytes: number, why: string) => void;

/**
 * Reads a segment record by record and cuts it (truncates the file, then tells `onCut`) at the
 * first frame that is short, has an impossible length, or fails its checksum; a segment without
 * a valid header is cut to a fresh header. Returns its size after the cut and its records.
 */
export function checkSegment(file: string, bucket: number, gen: number, from: number, onCut: OnCut): SegmentCheck {
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
      ftruncateSync(fd, 0);
      onCut(0, size, 'no valid segment header');
      writeSync(fd, segmentHeader(bucket, gen), 0, SEG_HEADER, 0);
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
    if (problem) {
      ftruncateSync(fd, off);
      onCut(off, size - off, problem);
    }
    return { size: off, records, after };
  } finally {
    closeSync(fd);
  }
}

/** Records read back from a segment, framing stripped. */
export interface Frames {
  /** The records' envelopes, one after the other. */
  body: Buffer;
  count: number;
  /** Bytes of the segment the records took, frames included. */
  used: number;
  /** Why reading stopped at a frame that fails its checksum; '' when none did. */
  bad: string;
}

/**
 * Reads the records of the segment open as `fd` from offset `start` (not past `size`), up to
 * about `maxBytes` and `maxRecords`: a record bigger than `maxBytes` is read whole.
 */
export function readFrames(fd: number, start: number, size: number, maxBytes: number, maxRecords: number): Frames {
  let want = Math.min(maxBytes, size - start);
  let buf = Buffer.allocUnsafe(want);
  let got = readSync(fd, buf, 0, want, start);
  if (got >= FRAME && FRAME + buf.readUInt32LE(0) > got && FRAME + buf.readUInt32LE(0) <= size - start) {
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
  return { body: out.subarray(0, o), count, used: p, bad };
}
