/**
 * A map's content digest: what two servers compare before they move a bucket, so that two files
 * that state one epoch but say different things are caught instead of both being obeyed.
 *
 *   digest = sha256 of the map's content as canonical JSON (keys sorted, comments and layout
 *            gone), `run_dir` left out (each server may keep its sockets where it likes)
 *
 * Two files with the same content have the same digest whatever their comments, key order or
 * layout; any other change (a weight, a port, a schema field) changes it.
 */
import { createHash } from 'node:crypto';

/** The digest of a parsed map document (the YAML's plain value). */
export function mapDigest(doc: unknown): string {
  const content = typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? { ...(doc as Record<string, unknown>) } : doc;
  if (typeof content === 'object' && content !== null) delete (content as Record<string, unknown>).run_dir;
  return createHash('sha256').update(canonicalJson(content)).digest('hex');
}

/** The first 12 hex digits: how a digest is shown to people. */
export function shortDigest(digest: string): string {
  return digest.slice(0, 12);
}

/** JSON with object keys sorted at every level. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}
