/**
 * Routing: key -> bucket -> owning server -> slot on that server. Every part that asks where a
 * record goes asks here: the sender (by key, and for records it routes again after a redirect),
 * the portal (for each record of a batch), the spool forwarder, and `portalctl map lookup`.
 *
 *   bucket = fnv1a32(utf8(key)) mod buckets        (bucket.ts, docs/map.md)
 *   server = stream.owner[bucket]                   (placement.ts: ketama, once per epoch)
 *   slot   = bucket mod slots on that server
 */
import type { RecordIndex } from '../protocol/envelope';
import { bucketOf, bucketOfBytes, slotOf } from './bucket';
import { slotCount } from './lookup';
import type { FlotillaMap, MapServer, MapStream } from './types';

/** Where a key goes under one map. */
export interface Route {
  bucket: number;
  /** The owning server, and its index in `map.servers`. */
  server: MapServer;
  serverIndex: number;
  /** The slot that processes the bucket on that server. */
  slot: number;
}

/** Where `key` goes in `stream` under `map`. */
export function routeKey(map: FlotillaMap, stream: MapStream, key: string): Route {
  const bucket = bucketOf(key, stream.buckets);
  const serverIndex = stream.owner[bucket]!;
  const server = map.servers[serverIndex]!;
  return { bucket, server, serverIndex, slot: slotOf(bucket, slotCount(server, stream)) };
}

/** The index in the map's servers of the server that owns `key` (the sender's per-record lookup). */
export function ownerOfKey(stream: MapStream, key: string): number {
  return stream.owner[bucketOf(key, stream.buckets)]!;
}

/**
 * The bucket of every record of a scanned batch body, into `out` (a larger array is made when
 * `out` is too short). Returns the array holding them; its first `index.count` entries count.
 */
export function bucketsOf(body: Uint8Array, index: RecordIndex, buckets: number, out?: Uint32Array): Uint32Array {
  const n = index.count;
  const into = out && out.length >= n ? out : new Uint32Array(Math.max(n, out ? 2 * out.length : 0));
  const keyStarts = index.keyStarts;
  const keyEnds = index.keyEnds;
  for (let i = 0; i < n; i++) into[i] = bucketOfBytes(body, keyStarts[i]!, keyEnds[i]!, buckets);
  return into;
}

/** True if `server` (an index in the map's servers) owns every record of a scanned body. */
export function ownsAll(stream: MapStream, server: number, body: Uint8Array, index: RecordIndex): boolean {
  for (let i = 0; i < index.count; i++) {
    if (stream.owner[bucketOfBytes(body, index.keyStarts[i]!, index.keyEnds[i]!, stream.buckets)] !== server) return false;
  }
  return true;
}
