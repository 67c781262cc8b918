/**
 * Which channel a record goes to: the sender's routing map, its channels (one per stream and
 * owning server, kept across map changes because they are found by server name), and routing
 * whole batch bodies again, after a redirect or when parked records are released.
 *
 *   key --ownerOfKey (map/route.ts)--> server index --per-stream cache--> Channel
 *
 * The routing map is the sender's own: the keeper's map may move ahead of it (someone else
 * reloaded the keeper); the sender takes it at its next redirect (see `newerMap`).
 */
import type { MapKeeper } from '../map/keeper';
import { streamOf } from '../map/lookup';
import { bucketsOf, ownerOfKey, ownsAll } from '../map/route';
import type { FlotillaMap, MapServer, MapStream } from '../map/types';
import { RecordIndex } from '../protocol/envelope';
import type { Channel, OutBatch } from './channel';

/** Makes the channel for `stream`'s portal on `server` (socket, reply loop and all). */
export type OpenChannel = (stream: MapStream, server: MapServer) => Channel;

/** Routes records to channels by the map the sender routes by. */
export class Router {
  private current: FlotillaMap;
  /** Channels by `stream/server` name. */
  private readonly channels = new Map<string, Channel>();
  /** Channels by stream, then by server index under the routing map: the per-record lookup. */
  private readonly byStream = new Map<string, Channel[]>();
  private lastStream: MapStream | null = null;
  private lastChannels: Channel[] = [];
  /** The stream `stream()` found last, in the routing map. */
  private lastNamed: MapStream | null = null;
  private readonly index = new RecordIndex();
  private buckets: Uint32Array = new Uint32Array(1024);

  constructor(
    readonly keeper: MapKeeper,
    private readonly open: OpenChannel,
  ) {
    this.current = keeper.map;
  }

  /** The map records are routed by. */
  get map(): FlotillaMap {
    return this.current;
  }

  /** The stream named `name` in the routing map (UNKNOWN_STREAM if there is none). */
  stream(name: string): MapStream {
    // Records come in runs of one stream: skip the search for a run's later records.
    const last = this.lastNamed;
    if (last !== null && last.name === name) return last;
    return (this.lastNamed = streamOf(this.current, name));
  }

  /** Every channel opened so far. */
  all(): IterableIterator<Channel> {
    return this.channels.values();
  }

  /** The channel of `stream` on the server named `server`, if one was opened. */
  find(stream: string, server: string): Channel | undefined {
    return this.channels.get(`${stream}/${server}`);
  }

  /** The channel to the owner of `key` in stream `s` (of the routing map). */
  channelFor(s: MapStream, key: string): Channel {
    const server = ownerOfKey(s, key);
    if (s !== this.lastStream) {
      this.lastStream = s;
      this.lastChannels = this.byStream.get(s.name) ?? [];
      this.byStream.set(s.name, this.lastChannels);
    }
    return this.lastChannels[server] ?? this.channel(s, server);
  }

  /** The channel to server `serverIndex` (of the routing map) for stream `s`, opened if need be. */
  channel(s: MapStream, serverIndex: number): Channel {
    const server = this.current.servers[serverIndex]!;
    const name = `${s.name}/${server.name}`;
    let ch = this.channels.get(name);
    if (!ch) {
      ch = this.open(s, server);
      this.channels.set(name, ch);
    }
    let cache = this.byStream.get(s.name);
    if (!cache) this.byStream.set(s.name, (cache = []));
    cache[serverIndex] = ch;
    return ch;
  }

  /**
   * Appends each of the `count` envelopes of `body` to the open batch of its owner's channel under
   * the routing map (closing a batch that would overflow first). Returns the channels appended to;
   * the caller closes their batches.
   */
  reroute(stream: string, body: Buffer, count: number): Set<Channel> {
    const s = this.stream(stream);
    const index = this.index;
    index.scan(body, count);
    const buckets = (this.buckets = bucketsOf(body, index, s.buckets, this.buckets));
    const touched = new Set<Channel>();
    for (let i = 0; i < index.count; i++) {
      const target = this.channel(s, s.owner[buckets[i]!]!);
      const start = index.starts[i]!;
      const end = index.starts[i + 1]!;
      if (target.writer.count > 0 && target.writer.size + (end - start) > s.maxBatchBytes) target.closeBatch();
      target.writer.appendRaw(body, start, end, 1);
      touched.add(target);
    }
    return touched;
  }

  /** True if, by the routing map, every record of `batch` belongs to the channel's server. */
  ownsAll(ch: Channel, batch: OutBatch): boolean {
    const self = this.current.servers.findIndex((x) => x.name === ch.server);
    if (self < 0 || !this.index.scan(batch.body, batch.count)) return false;
    return ownsAll(this.stream(ch.stream.name), self, batch.body, this.index);
  }

  /**
   * After a redirect from a portal at `portalEpoch`: reads the keeper's map file again if that
   * epoch is newer than the routing map, and returns the keeper's map if it is newer than the
   * routing map (the caller then takes it with `use`), else null. Why the file could not be taken
   * goes to `onRejected`.
   */
  newerMap(portalEpoch: number, onRejected: (why: string) => void): FlotillaMap | null {
    if (portalEpoch <= this.current.epoch) return null;
    try {
      const outcome = this.keeper.reload();
      if (outcome.type === 'rejected') onRejected(outcome.rejection.problems.map((p) => `${p.path}: ${p.message}`).join('; '));
    } catch (err) {
      onRejected((err as Error).message);
    }
    const map = this.keeper.map;
    return map.epoch > this.current.epoch ? map : null;
  }

  /** Routes by `next` from now on. Channels (found by server name) keep their sockets. */
  use(next: FlotillaMap): void {
    this.current = next;
    this.byStream.clear();
    this.lastStream = null;
    this.lastNamed = null;
  }

  /** Forgets every channel (the sender closed them). */
  clear(): void {
    this.channels.clear();
    this.byStream.clear();
    this.lastStream = null;
  }
}
