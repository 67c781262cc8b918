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

/**
 * Walks `count` well-formed envelopes of `body` (the portal scanned them already) and takes out
 * those whose root `cancelled(root)` says is cancelled, keeping the others in order. Null when
 * none is dropped (the body is used as it is).
 */
export function dropRoots(body: Buffer, count: number, cancelled: (root: string) => boolean): Filtered | null {
  // Kept runs as [start, end) pairs; null until the first record is dropped.
  let runs: number[] | null = null;
  let runStart = 0;
  let pos = 0;
  let dropped = 0;
  for (let n = 0; n < count && pos < body.length; n++) {
    const start = pos;
    pos = walkRecord(body, start);
    if (!cancelled(lastRoot)) continue;
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

// The root of the record walkRecord walked last.
let lastRoot = '';

/** Walks one envelope from `start`; sets lastRoot; returns where the next begins. */
function walkRecord(body: Buffer, start: number): number {
  let len = varint(body, start); // key
  const idStart = at + len;
  varint(body, idStart + 16); // timestamp
  let pos = at;
  let first = true;
  lastRoot = '';
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
        const s = body.toString('latin1', at, at + len);
        if (ROOT_RE.test(s)) lastRoot = s;
      }
      first = false;
      pos = at + len;
    }
  }
  pos = at;
  if (lastRoot === '') lastRoot = body.toString('hex', idStart, idStart + 16);
  len = varint(body, pos); // payload
  return at + len;
}
