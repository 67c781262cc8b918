/**
 * Writing a map into etcd (`portalctl map apply`, `map edit`): the text is validated as `map
 * check` does (every problem at once), Avro schema files it names are put inline (a map in etcd
 * cannot name files on one machine), and it may only be the next epoch of the map in force and a
 * legal edit of it (no stream's bucket count changed). The write is a compare-and-swap on the
 * revision read at the start, so of two applies from the same map in force exactly one wins.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { parseDocument } from 'yaml';
import { FlotillaError, MapInvalidError, type MapProblem } from '../errors';
import { diffMaps, type MapDiff } from './diff';
import type { EtcdKeys, MapRecord } from './etcd-keys';
import { parseMap } from './load';
import { readMapRecord, writeMap } from './store-etcd';
import type { FlotillaMap } from './types';

/** What an apply would write, and what stands in its way. */
export interface ApplyPlan {
  /** The map as it will be stored (schema files inline), and parsed as processes will parse it. */
  record: MapRecord;
  map: FlotillaMap;
  /** The map in force, and the revision the write is conditional on ('0': none yet). */
  current: FlotillaMap | null;
  revision: string;
  diff: MapDiff | null;
  /** Why it may not be written (empty: it may). */
  problems: string[];
}

/**
 * Validates `text` (named `file`, which anchors relative schema paths) against the map in force
 * in etcd. Throws MapInvalidError with every problem of an invalid map. `revision`: the one
 * read before an edit began (map edit), so a write in between is caught too.
 */
export async function planApply(client: Etcd3, keys: EtcdKeys, source: string, text: string, file: string, revision?: string): Promise<ApplyPlan> {
  parseMap(text, file); // every problem of the file as written, with its lines
  const stored = inlineSchemas(text, file);
  const map = parseMap(stored, source);
  let read: Awaited<ReturnType<typeof readMapRecord>>;
  try {
    read = await readMapRecord(client, keys);
  } catch (err) {
    throw new FlotillaError('STORE_UNREACHABLE', `cannot read the map in force from ${source}: ${(err as Error).message}`);
  }
  const current = read.record ? parseMap(read.record.text, source) : null;
  const problems: string[] = [];
  if (revision !== undefined && revision !== read.revision) problems.push(`the map in force changed while it was edited (now epoch ${current?.epoch}); nothing written; edit again`);
  if (current && map.epoch !== current.epoch + 1) problems.push(`epoch: is ${map.epoch}; the map in force is at epoch ${current.epoch}, so this edit must be epoch ${current.epoch + 1}`);
  const diff = current ? diffMaps(current, map) : null;
  for (const s of diff?.streams ?? []) for (const p of s.problems) problems.push(`streams.${s.stream}: ${p}`);
  return { record: { epoch: map.epoch, digest: map.digest, text: stored, appliedAt: Date.now() }, map, current, revision: revision ?? read.revision, diff, problems };
}

/** Writes the plan's map if nobody wrote since it was read; throws MAP_STALE if someone did. */
export async function commitApply(client: Etcd3, keys: EtcdKeys, plan: ApplyPlan): Promise<void> {
  const ok = await writeMap(client, keys, { ...plan.record, appliedAt: Date.now() }, plan.revision);
  if (!ok) {
    const now = await readMapRecord(client, keys).catch(() => null);
    throw new FlotillaError('MAP_STALE', `someone wrote the map in force since it was read${now?.record ? ` (it is now epoch ${now.record.epoch})` : ''}; nothing written; apply again to see the new diff`);
  }
}

/** The text with each stream's schema file put inline, and relative spool dirs refused (they would mean nothing on another host). */
function inlineSchemas(text: string, file: string): string {
  const doc = parseDocument(text);
  const streams = doc.toJS() as { streams?: { schema?: unknown; spool?: { dir?: unknown } }[] };
  const problems: MapProblem[] = [];
  (streams.streams ?? []).forEach((s, i) => {
    if (typeof s.schema === 'string') doc.setIn(['streams', i, 'schema'], JSON.parse(readFileSync(resolve(dirname(resolve(file)), s.schema), 'utf8')) as object);
    if (typeof s.spool?.dir === 'string' && !isAbsolute(s.spool.dir)) problems.push({ path: `streams[${i}].spool.dir`, message: 'must be an absolute path in a map kept in etcd (it is read on every server)' });
  });
  if (problems.length > 0) throw new MapInvalidError(file, problems);
  return doc.toString();
}
