/**
 * Bucket -> server, by ketama consistent hashing with weights (the `hashring` package). Computed
 * once per map epoch into a table; nothing on a record's path calls the ring.
 *
 * The ring key of bucket b of stream s is the string `${s}/${b}`. docs/map.md spells out the
 * ring itself so that another implementation can rebuild the same table.
 */
import HashRing from 'hashring';

export interface WeightedServer {
  name: string;
  weight: number;
}

/** Returns, for each bucket of the stream, the index in `servers` of the server that owns it. */
export function placeBuckets(stream: string, buckets: number, servers: readonly WeightedServer[]): Uint16Array {
  const weights: Record<string, { weight: number }> = {};
  for (const s of servers) weights[s.name] = { weight: s.weight };
  // The LRU cache is useless here (each key is asked once) and costs memory; keep it tiny.
  const ring = new HashRing(weights, 'md5', { 'max cache size': 1 });
  const index = new Map(servers.map((s, i) => [s.name, i]));
  const table = new Uint16Array(buckets);
  for (let b = 0; b < buckets; b++) {
    table[b] = index.get(ring.get(`${stream}/${b}`)!)!;
  }
  return table;
}
