/**
 * The record envelope (RFlow's message, in Avro): every record on the wire is one Avro-encoded
 * `flotilla.Envelope`, and a batch body is envelopes laid end to end. Stock Avro libraries can
 * write and read it (see docs/protocol.md); this file holds the fast paths Flotilla itself uses:
 * an appending writer for senders and a scanner that finds each record's key and end without
 * decoding anything else, for portals.
 */
import { isUtf8 } from 'node:buffer';
import type avro from 'avsc';

/** The envelope's Avro schema, exactly as docs/protocol.md states it. */
export const ENVELOPE_SCHEMA = {
  type: 'record',
  name: 'Envelope',
  namespace: 'flotilla',
  fields: [
    { name: 'key', type: 'string' },
    { name: 'id', type: { type: 'fixed', name: 'RecordId', size: 16 } },
    { name: 'timestamp', type: 'long' },
    { name: 'provenance', type: { type: 'array', items: 'string' } },
    { name: 'payload', type: 'bytes' },
  ],
} as const;

/** A record as a component sees it: envelope fields plus the decoded payload. */
export interface Delivered<T = Record<string, unknown>> {
  key: string;
  /** 16 bytes: the sender's 8-byte id, then a big-endian 64-bit counter. */
  id: Buffer;
  /** Milliseconds since the Unix epoch, set by the sender. */
  timestamp: number;
  /** The hops the record took before this one, oldest first (`server/stream/slot`). */
  provenance: string[];
  value: T;
}

const EMPTY = Buffer.alloc(0);

/**
 * Appends envelopes to one growing buffer: the body of the next batch. Reused batch after batch;
 * `take()` hands over the body and starts a fresh one.
 */
export class EnvelopeWriter {
  private buf: Buffer;
  private pos = 0;
  /** Records in the current body. */
  count = 0;
  private scratch = Buffer.allocUnsafe(4096);

  constructor(initialBytes = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  /** Bytes in the current body. */
  get size(): number {
    return this.pos;
  }

  /** Appends one record whose payload is encoded here with `type`. */
  append(key: string, id: Buffer, timestamp: number, provenance: readonly string[], type: avro.Type, value: unknown): void {
    let end = type.encode(value, this.scratch, 0);
    while (end < 0) {
      this.scratch = Buffer.allocUnsafe(Math.max(this.scratch.length * 2, this.scratch.length - end));
      end = type.encode(value, this.scratch, 0);
    }
    this.appendEncoded(key, id, timestamp, provenance, this.scratch, 0, end);
  }

  /** Appends one record whose payload is already Avro-encoded in `payload[start, end)`. */
  appendEncoded(
    key: string,
    id: Buffer,
    timestamp: number,
    provenance: readonly string[],
    payload: Buffer,
    start = 0,
    end = payload.length,
  ): void {
    let need = 3 * key.length + 10 + 16 + 10 + 10 + (end - start) + 10;
    for (const p of provenance) need += 3 * p.length + 10;
    this.reserve(need);
    this.writeString(key);
    // 16 bytes: a loop beats Buffer.copy's call overhead at this size.
    const buf = this.buf;
    let pos = this.pos;
    for (let i = 0; i < 16; i++) buf[pos++] = id[i]!;
    this.pos = pos;
    this.writeLong(timestamp);
    if (provenance.length > 0) {
      this.writeLong(provenance.length);
      for (const p of provenance) this.writeString(p);
    }
    this.writeLong(0);
    this.writeLong(end - start);
    if (start === 0 && end === payload.length) this.buf.set(payload, this.pos);
    else payload.copy(this.buf, this.pos, start, end);
    this.pos += end - start;
    this.count++;
  }

  /** Appends envelopes already encoded, e.g. records being routed again after a redirect. */
  appendRaw(body: Buffer, start: number, end: number, count: number): void {
    this.reserve(end - start);
    body.copy(this.buf, this.pos, start, end);
    this.pos += end - start;
    this.count += count;
  }

  /** Drops the record appended last, which began at byte `mark` (the size before it). */
  truncate(mark: number): void {
    this.pos = mark;
    this.count--;
  }

  /** Returns the current body (a copy sized to fit) and starts a new one. */
  take(): Buffer {
    const body = this.pos === 0 ? EMPTY : Buffer.from(this.buf.subarray(0, this.pos));
    this.pos = 0;
    this.count = 0;
    return body;
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  private writeString(s: string): void {
    // Keys are usually short ASCII: write them byte by byte after a one-byte length.
    const len = s.length;
    if (len < 64) {
      const buf = this.buf;
      const start = this.pos;
      let pos = start + 1;
      let i = 0;
      for (; i < len; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        buf[pos++] = c;
      }
      if (i === len) {
        buf[start] = len * 2; // zig-zag of len < 64 fits one byte
        this.pos = pos;
        return;
      }
    }
    // Otherwise write the UTF-8 bytes first (leaving room for the longest length prefix),
    // then the length.
    const room = 5;
    const n = this.buf.write(s, this.pos + room, 'utf8');
    const lenBytes = varintSize(n * 2);
    if (lenBytes !== room) this.buf.copyWithin(this.pos + lenBytes, this.pos + room, this.pos + room + n);
    this.writeLong(n);
    this.pos += n;
  }

  /** Avro long: zig-zag, then base-128 varint, low group first. Safe for |v| < 2^52. */
  private writeLong(v: number): void {
    let z = v >= 0 ? v * 2 : -v * 2 - 1;
    const buf = this.buf;
    while (z >= 0x80) {
      buf[this.pos++] = (z % 0x80) | 0x80;
      z = Math.floor(z / 0x80);
    }
    buf[this.pos++] = z;
  }
}

function varintSize(z: number): number {
  let n = 1;
  while (z >= 0x80) {
    z = Math.floor(z / 0x80);
    n++;
  }
  return n;
}

/**
 * Where each record of a body starts and where its key lies. Arrays are reused from batch to
 * batch and grow as needed; only the first `count` entries are meaningful.
 */
export class RecordIndex {
  count = 0;
  /** starts[i] is where record i begins; starts[count] is where the body ends. */
  starts = new Uint32Array(1025);
  keyStarts = new Uint32Array(1024);
  keyEnds = new Uint32Array(1024);
  /** Why the last scan failed, for the MALFORMED reply. */
  error = '';

  private grow(): void {
    const n = this.keyStarts.length * 2;
    const grow = (a: Uint32Array, len: number) => {
      const b = new Uint32Array(len);
      b.set(a);
      return b;
    };
    this.starts = grow(this.starts, n + 1);
    this.keyStarts = grow(this.keyStarts, n);
    this.keyEnds = grow(this.keyEnds, n);
  }

  /**
   * Finds the records of `body`, checking that it holds exactly `expected` well-formed
   * envelopes (any number when `expected` is -1). Reads lengths only; the payload is not decoded. Returns false (and sets
   * `error`) on anything malformed.
   */
  scan(body: Uint8Array, expected: number): boolean {
    const end = body.length;
    let pos = 0;
    let n = 0;
    const fail = (why: string) => {
      this.error = `record ${n}: ${why}`;
      return false;
    };
    while (pos < end) {
      if (n === expected) return fail(`body continues past the ${expected} records the header announces`);
      if (n === this.keyStarts.length) this.grow();
      this.starts[n] = pos;
      // key: string
      let len = readLength(body, pos);
      if (len < 0) return fail('bad key length');
      pos = lastPos;
      if (pos + len > end) return fail('key runs past the end of the body');
      // Avro strings are UTF-8: a key that is not would reach a component replaced, and no longer
      // hash to its bucket. Keys are mostly ASCII, so only a key with a high byte is checked whole.
      for (let i = pos; i < pos + len; i++) {
        if (body[i]! >= 0x80) {
          if (!isUtf8(body.subarray(pos, pos + len))) return fail('key is not valid UTF-8');
          break;
        }
      }
      this.keyStarts[n] = pos;
      this.keyEnds[n] = pos + len;
      pos += len;
      // id: fixed(16)
      pos += 16;
      if (pos > end) return fail('id runs past the end of the body');
      // timestamp: long
      pos = skipVarint(body, pos);
      if (pos < 0) return fail('bad timestamp');
      // provenance: array<string>, in blocks
      for (;;) {
        let items = readLong(body, pos);
        if (Number.isNaN(items)) return fail('bad provenance block');
        pos = lastPos;
        if (items === 0) break;
        if (items < 0) {
          items = -items;
          if (Number.isNaN(readLong(body, pos))) return fail('bad provenance block size');
          pos = lastPos;
        }
        for (let i = 0; i < items; i++) {
          len = readLength(body, pos);
          if (len < 0) return fail('bad provenance entry');
          pos = lastPos + len;
          if (pos > end) return fail('provenance runs past the end of the body');
        }
      }
      // payload: bytes
      len = readLength(body, pos);
      if (len < 0) return fail('bad payload length');
      pos = lastPos + len;
      if (pos > end) return fail('payload runs past the end of the body');
      n++;
    }
    if (expected >= 0 && n !== expected) return fail(`header announces ${expected} records, body holds ${n}`);
    this.starts[n] = end;
    this.count = n;
    return true;
  }
}

// Position after the last varint read; a module variable so reads allocate nothing.
let lastPos = 0;

/** Reads an Avro long at `pos` (sets lastPos). NaN if truncated or longer than 10 bytes. */
export function readLong(buf: Uint8Array, pos: number): number {
  let z = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) return NaN;
    const b = buf[pos++]!;
    z += (b & 0x7f) * mul;
    if (b < 0x80) {
      lastPos = pos;
      return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
    }
    mul *= 0x80;
  }
  return NaN;
}

/** Reads a non-negative Avro long used as a length; -1 if malformed. Sets lastPos. */
function readLength(buf: Uint8Array, pos: number): number {
  const v = readLong(buf, pos);
  return v >= 0 && v <= 0x7fffffff ? v : -1;
}

function skipVarint(buf: Uint8Array, pos: number): number {
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) return -1;
    if (buf[pos++]! < 0x80) return pos;
  }
  return -1;
}

let decodeIndex: RecordIndex | undefined;

/**
 * Decodes every envelope of a body and its payload with `type`. The component side: the
 * portal never calls this. A record whose payload does not decode as exactly its declared
 * bytes is passed to `onBadRecord` (with its index and why) and left out, so one bad record
 * cannot stop a slot; a body whose envelopes are broken is skipped whole, the same way.
 */
export function decodeBody<T>(body: Buffer, type: avro.Type, onBadRecord?: (index: number, why: string) => void): Delivered<T>[] {
  const out: Delivered<T>[] = [];
  let pos = 0;
  let index = 0;
  // The portal checked every envelope's framing; should a body still be broken, say so and stop
  // rather than read (or loop) past its end.
  const scan = (decodeIndex ??= new RecordIndex());
  if (!scan.scan(body, -1)) {
    onBadRecord?.(0, `delivery is not well-formed envelopes (${scan.error}); skipped`);
    return out;
  }
  while (pos < body.length) {
    let len = readLong(body, pos);
    pos = lastPos;
    const key = body.toString('utf8', pos, pos + len);
    pos += len;
    const id = body.subarray(pos, pos + 16);
    pos += 16;
    const timestamp = readLong(body, pos);
    pos = lastPos;
    const provenance: string[] = [];
    for (;;) {
      let items = readLong(body, pos);
      pos = lastPos;
      if (items === 0) break;
      if (items < 0) {
        items = -items;
        readLong(body, pos);
        pos = lastPos;
      }
      for (let i = 0; i < items; i++) {
        len = readLong(body, pos);
        pos = lastPos;
        provenance.push(body.toString('utf8', pos, pos + len));
        pos += len;
      }
    }
    len = readLong(body, pos);
    pos = lastPos;
    const end = pos + len;
    let value: T | undefined;
    let why = '';
    try {
      const r = type.decode(body.subarray(0, end), pos);
      if (r.offset === end) value = r.value as T;
      else why = r.offset < 0 ? 'payload is shorter than its schema needs' : `payload has ${end - r.offset} bytes left over after decoding`;
    } catch (err) {
      why = `payload does not decode: ${(err as Error).message}`;
    }
    if (value !== undefined) out.push({ key, id, timestamp, provenance, value });
    else onBadRecord?.(index, why);
    pos = end;
    index++;
  }
  return out;
}
