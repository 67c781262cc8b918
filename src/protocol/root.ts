/**
 * The root of a record (docs/protocol.md, "The root of a record"): the id of the record that
 * every record derived from it was made from, carried as the first provenance entry.
 *
 *   outside sender: provenance []                       root = the record's own id
 *   component emits from r: [root(r), ...hops of r, hop] root = root(r)
 *
 * A root entry is the 16-byte id as 32 lowercase hex digits; a hop always holds a `/`, so the
 * two cannot be mistaken. Only the first entry may be a root. Nothing here runs on the portal's
 * path while no cancellation is in force: `dropRoots` is called only when one is.
 */
import type { Delivered } from './envelope';

/** Characters of a root id: 16 bytes in lowercase hex. */
export const ROOT_ID_CHARS = 32;
const ROOT_RE = /^[0-9a-f]{32}$/;

/** True if `s` is a root id (32 lowercase hex digits). */
export function isRootId(s: string): boolean {
  return s.length === ROOT_ID_CHARS && ROOT_RE.test(s);
}

/** The root of a decoded record: its first provenance entry if that is a root, else its own id. */
export function rootOf(r: Pick<Delivered<unknown>, 'id' | 'provenance'>): string {
  const first = r.provenance[0];
  return first !== undefined && isRootId(first) ? first : r.id.toString('hex');
}

/**
 * The provenance of a record made from `from` by the component at `hop`: `from`'s root first
 * (added if `from` carried none), then `from`'s hops, then `hop`.
 */
export function provenanceFrom(from: Pick<Delivered<unknown>, 'id' | 'provenance'>, hop: string): string[] {
  const p = from.provenance;
  if (p.length > 0 && isRootId(p[0]!)) return [...p, hop];
  return [from.id.toString('hex'), ...p, hop];
}

/** A body with the records of cancelled roots taken out. */
export interface Filtered {
  body: Buffer;
  count: number;
  dropped: number;
}

// Position after the last varint read (module-level, so a read allocates nothing).
let at = 0;

function varint(buf: Uint8Array, pos: number): number {
  let z = 0;
  let mul = 1;
  for (let i = 0; i < 10 && pos < buf.length; i++) {
    const b = buf[pos++]!;
    z += (b & 0x7f) * mul;
    if (b < 0x80) {
      at = pos;
      return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
    }
    mul *= 0x80;
  }
  at = buf.length;
  return NaN;
}

/** The last 32 bits of a root id (its last 8 hex digits): what `dropRoots` compares first. */
export function rootTail(root: string): number {
  return Number.parseInt(root.slice(ROOT_ID_CHARS - 8), 16);
}

/**
 * Walks `count` well-formed envelopes of `body` (the portal scanned them already) and takes out
 * those whose root `cancelled(root)` says is cancelled, keeping the others in order. Null when
 * none is dropped (the body is used as it is). `tails` holds the rootTail of every root that may
 * be cancelled: a record whose root's tail is not in it is kept without its root being made a
 * string (per record: a number read, a Set looked up).
 */
export function dropRoots(body: Buffer, count: number, tails: ReadonlySet<number>, cancelled: (root: string) => boolean): Filtered | null {
  // Kept runs as [start, end) pairs; null until the first record is dropped.
  let runs: number[] | null = null;
  let runStart = 0;
  let pos = 0;
  let dropped = 0;
  for (let n = 0; n < count && pos < body.length; n++) {
    const start = pos;
    pos = walkRecord(body, start);
    if (!tails.has(lastTail) || !cancelled(rootString(body))) continue;
    runs ??= [];
    if (start > runStart) runs.push(runStart, start);
    runStart = pos;
    dropped++;
  }
  if (runs === null) return null;
  if (body.length > runStart) runs.push(runStart, body.length);
  let size = 0;
  for (let i = 0; i < runs.length; i += 2) size += runs[i + 1]! - runs[i]!;
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  for (let i = 0; i < runs.length; i += 2) o += body.copy(out, o, runs[i]!, runs[i + 1]!);
  return { body: out, count: count - dropped, dropped };
}

// The root of the record walkRecord walked last: its tail, and where it is (a root entry's 32
// characters, or else the record's own 16-byte id).
let lastTail = 0;
let lastRootAt = -1;
let lastIdAt = 0;

/** The root of the record walkRecord walked last, as a string. */
function rootString(body: Buffer): string {
  return lastRootAt >= 0 ? body.toString('latin1', lastRootAt, lastRootAt + ROOT_ID_CHARS) : body.toString('hex', lastIdAt, lastIdAt + 16);
}

/** The tail of the root id in `body` at `from` (32 characters), or -1 if they are not a root id (lowercase hex). */
function rootIdTail(body: Buffer, from: number): number {
  let tail = 0;
  for (let k = 0; k < ROOT_ID_CHARS; k++) {
    const c = body[from + k]!;
    const digit = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : -1;
    if (digit < 0) return -1;
    if (k >= ROOT_ID_CHARS - 8) tail = tail * 16 + digit;
  }
  return tail;
}

/** Walks one envelope from `start`; notes its root (lastTail, lastRootAt, lastIdAt); returns where the next begins. */
function walkRecord(body: Buffer, start: number): number {
  let len = varint(body, start); // key
  const idStart = at + len;
  varint(body, idStart + 16); // timestamp
  let pos = at;
  let first = true;
  lastRootAt = -1;
  lastIdAt = idStart;
  for (let items = varint(body, pos); items !== 0 && !Number.isNaN(items); items = varint(body, pos)) {
    pos = at;
    if (items < 0) {
      items = -items;
      varint(body, pos); // the block's byte size
      pos = at;
    }
    for (let i = 0; i < items; i++) {
      len = varint(body, pos);
      if (first && len === ROOT_ID_CHARS) {
        const tail = rootIdTail(body, at);
        if (tail >= 0) {
          lastTail = tail;
          lastRootAt = at;
        }
      }
      first = false;
      pos = at + len;
    }
  }
  pos = at;
  if (lastRootAt < 0) lastTail = body.readUInt32BE(idStart + 12);
  len = varint(body, pos); // payload
  return at + len;
}
