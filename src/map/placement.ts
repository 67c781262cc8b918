/**
 * Bucket -> server, by ketama consistent hashing with weights (the `hashring` package). Computed
 * once per map epoch into a table; nothing on a record's path calls the ring.
 *
 * The ring key of bucket b of stream s is the string `${s}/${b}`. docs/map.md spells out the
 * ring itself so that another implementation can rebuild the same table.
 */
import { createHash } from 'node:crypto';
import HashRing from 'hashring';

export interface WeightedServer {
  name: string;
  weight: number;
}

/** Ketama's 40 hashes per server, scaled by the server's weight. */
export const VNODES_PER_WEIGHT = 40;

/** How many md5 hashes (4 ring points each) a server of this weight puts on the ring. */
export function vnodesOf(weight: number): number {
  return weight === 0 ? 0 : Math.max(1, Math.round(VNODES_PER_WEIGHT * weight));
}

/**
 * md5 digests of ring keys (`stream/bucket`) and of server points (`name-i`), kept from one
 * epoch to the next: none of them depends on the map's weights, so a new epoch hashes only keys
 * it has not seen. Placing 1,024 buckets costs about 8 ms of md5 otherwise, in every process of
 * the instance at once (agents, portals, components, senders all load the new map together), and
 * that is time the flow of the unmoved buckets waits for. Bounded, and emptied between placements
 * when the next would not fit.
 */
const digests = new Map<string, Buffer>();
/** About 4 MB of heap: a dozen streams of 1,024 buckets with their servers' points. */
const MAX_DIGESTS = 1 << 14;

/** hashring's custom hasher (its public `algorithm` argument): md5, as ketama's, remembered while there is room. */
function md5(key: string): Buffer {
  let d = digests.get(key);
  if (d === undefined) {
    d = createHash('md5').update(key).digest();
    if (digests.size < MAX_DIGESTS) digests.set(key, d);
  }
  return d;
}

/** Returns, for each bucket of the stream, the index in `servers` of the server that owns it. */
export function placeBuckets(stream: string, buckets: number, servers: readonly WeightedServer[]): Uint16Array {
  // hashring's own weighting scales every server's points by weight/total x servers, so adding a
  // server would also move buckets between the others. Giving each server a fixed number of
  // points, from its weight alone, keeps ketama's promise: an added server takes only its share.
  // ('vnode count' 0 makes hashring use the per-server count as given.)
  // A server of weight 0 is left off the ring: it owns nothing.
  const vnodes: Record<string, { vnodes: number }> = {};
  let keys = buckets;
  for (const s of servers) {
    if (s.weight > 0) vnodes[s.name] = { vnodes: vnodesOf(s.weight) };
    keys += vnodesOf(s.weight);
  }
  // Emptied between placements, never during one: a placement the memo cannot hold whole just
  // hashes what does not fit (a map of more than MAX_DIGESTS keys costs what it did before).
  if (digests.size + keys > MAX_DIGESTS) digests.clear();
  // The LRU cache is useless here (each key is asked once) and costs memory; keep it tiny.
  const ring = new HashRing(vnodes, md5, { 'vnode count': 0, 'max cache size': 1 });
  const index = new Map(servers.map((s, i) => [s.name, i]));
  const table = new Uint16Array(buckets);
  for (let b = 0; b < buckets; b++) {
    table[b] = index.get(ring.get(`${stream}/${b}`)!)!;
  }
  return table;
}
