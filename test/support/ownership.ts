/**
 * What the map-change tests check of the per-record processing logs besides exactly-once: that no
 * bucket was processed by two servers at once. Read in processing time order, a bucket may change
 * server no more often than its owner changed in the maps the servers switched to; one that
 * changes more often went back and forth, so two servers processed it in the same stretch.
 */
import { strict as assert } from 'node:assert';
import { bucketOf } from '../../src/map/bucket';
import type { FlotillaMap } from '../../src/map/types';
import { readRecorded } from './records';


/** The owner of bucket `b` of the map's first stream. */
export const ownerOf = (m: FlotillaMap, b: number) => m.servers[m.streams[0]!.owner[b]!]!.name;

/**
 * Asserts no bucket of the first stream changed server more often than its owner did across
 * `switched`; `serverOfFile[i]` is the server whose component wrote `files[i]`. Returns how many
 * buckets changed server at all.
 */
export function assertNoBucketOnTwoServers(files: string[], serverOfFile: string[], buckets: number, switched: FlotillaMap[]): number {
  const rows = readRecorded(files).sort((a, b) => a.at - b.at);
  const lastServer = new Map<number, string>();
  const changes = new Map<number, number>();
  for (const r of rows) {
    const b = bucketOf(r.key, buckets);
    const s = serverOfFile[r.file]!;
    if (lastServer.has(b) && lastServer.get(b) !== s) changes.set(b, (changes.get(b) ?? 0) + 1);
    lastServer.set(b, s);
  }
  const ownerChanges = (b: number) => switched.slice(1).filter((m, i) => ownerOf(m, b) !== ownerOf(switched[i]!, b)).length;
  for (const [b, n] of changes) assert.ok(n <= ownerChanges(b), `bucket ${b} changed server ${n} times, its owner only ${ownerChanges(b)} times: processed by two at once`);
  return changes.size;
}
