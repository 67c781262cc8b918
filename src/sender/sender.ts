/**
 * The sender library: `send(stream, record)` looks the record's key up in the map and batches it
 * for the portal of the server that owns it.
 *
 *   send() -> [batch per (stream, server)] --flush on size, idle link or linger--> portal --ACK--> settled
 *
 * A batch is kept until the portal acknowledges it: after a reconnect every unacknowledged batch
 * is sent again (so delivery is at least once), a WRONG_OWNER reply makes the sender reload the
 * map and route the batch's records again, and at most `window` batches per portal are in
 * flight. When a portal's window is full and batches queue behind it, `send` returns false and
 * the caller should `await sender.writable()` before sending more.
 *
 * This file is the facade that wires the parts: `Router` (router.ts: the routing map and the
 * channels), `Channel` (channel.ts: one portal's socket and batches), `Replies` (replies.ts: the
 * reply state machine and the resend rule) and `Barrier` (barrier.ts: the map-change barrier).
 */
import { cancelEverywhere } from './cancel';
import type { CancelReply } from '../protocol/cancel';
import { randomBytes } from 'node:crypto';
import { FlotillaError, type WireError } from '../errors';
import { createLogger, type Logger } from '../log';
import { MapKeeper } from '../map/keeper';
import { portalEndpoint } from '../map/lookup';
import type { FlotillaMap, MapStream } from '../map/types';
import { int, number, parseOptions } from '../options';
import type { EnvelopeWriter } from '../protocol/envelope';
import { Barrier } from './barrier';
import { Channel, type ChannelHost, type OutBatch } from './channel';
import { Replies } from './replies';
import { Router } from './router';

/** Longest a record waits for its batch to fill while a batch is in flight, ms. */
export const DEFAULT_LINGER_MS = 2;
/** Batches fill to this size or the stream's max_batch_bytes, whichever is smaller. */
export const DEFAULT_BATCH_BYTES = 900 * 1024;
/** ...or to this many records. */
export const DEFAULT_BATCH_RECORDS = 8192;
/** Bytes of parked records (see barrier.ts) before `send` says false. */
const PARKED_BYTES_BEFORE_FULL = 4 << 20;
/** The provenance of a record from outside: no hops. Shared, never written. */
const NO_HOPS: readonly string[] = [];

/** How a sender is set up; checked once, when it is made (CONFIG_INVALID names the field). */
export interface SenderOptions {
  /**
   * The map: a map given whole, the path of the map file (a redirect reads it again), or the
   * keeper of the process's map (shared with its owner).
   */
  map: FlotillaMap | string | MapKeeper;
  /** Longest a record waits for its batch to fill before the batch is sent, ms (>= 0). */
  lingerMs?: number;
  /** A batch is sent once its body reaches this many bytes (capped by the stream's limit; >= 1). */
  batchBytes?: number;
  /** ...or this many records (>= 1). */
  batchRecords?: number;
  /** Called for each batch a portal refused for good (malformed, too large, unknown stream). */
  onError?: (err: WireError, records: number) => void;
  /**
   * Starts the routing id of each connection, which portals see (then a `/` and random hex).
   * A portal forwarding its spool uses `fwd`, so the new owner knows the records are older.
   */
  identity?: string;
  /**
   * The records are emitted by a component while it processes a delivery (the SDK sets this):
   * batches carry INNER_FLAG, and a paused portal still takes them (docs/operations.md, "Pause").
   */
  inner?: boolean;
  log?: Logger;
}

/** Counters a sender keeps; cheap to read at any time. */
export interface SenderStats {
  records: number;
  acked: number;
  refused: number;
  batches: number;
  resent: number;
  redirects: number;
  /** Connections to portals lost (each is replaced by a new one, and its batches resent). */
  disconnects: number;
  /** Records acknowledged as cancelled: dropped by a cancellation, never processed (included in `acked`). */
  cancelled: number;
}

/** A `flush()` in progress: per channel, the order of the last batch it waits for. */
interface FlushWaiter {
  targets: Map<Channel, number>;
  resolve: () => void;
}

/** Sends records to the portals that own their keys; see the top of this file. */
export class Sender {
  /** The keeper of the map this sender reads on a redirect (the one given, or its own). */
  readonly keeper: MapKeeper;
  private readonly router: Router;
  private readonly log: Logger;
  private readonly onError: (err: WireError, records: number) => void;
  private readonly id = Buffer.alloc(16);
  private counter = 0;
  private closed = false;
  private writableWaiters: (() => void)[] = [];
  private flushWaiters: FlushWaiter[] = [];
  /** Up after a map change until the batches routed under the previous map have settled. */
  private barrier: Barrier<Channel> | null = null;
  private barrierWaiters: (() => void)[] = [];
  private readonly findChannel = (stream: string, server: string): Channel | undefined => this.router.find(stream, server);
  private readonly releaseParked = (ch: Channel, body: Buffer, count: number): void => {
    for (const target of this.router.reroute(ch.stream.name, body, count)) target.closeBatch();
  };
  /** Counters since the sender was opened. */
  readonly stats: SenderStats = { records: 0, acked: 0, refused: 0, batches: 0, resent: 0, redirects: 0, disconnects: 0, cancelled: 0 };
  /**
   * Called with each acknowledged batch: records in it, the ms from send to ack, and how many of
   * them were cancelled (dropped by a cancellation, never processed) rather than processed.
   */
  onAck: ((count: number, ms: number, cancelled: number) => void) | null = null;

  /** Throws CONFIG_INVALID for an option that cannot work, or the keeper's error for a bad map. */
  constructor(opts: SenderOptions) {
    const o = parseOptions(
      'Sender',
      opts,
      { lingerMs: DEFAULT_LINGER_MS, batchBytes: DEFAULT_BATCH_BYTES, batchRecords: DEFAULT_BATCH_RECORDS },
      { lingerMs: number({ min: 0 }), batchBytes: int({ min: 1 }), batchRecords: int({ min: 1 }) },
    );
    this.keeper = MapKeeper.of(o.map);
    this.log = o.log ?? createLogger('sender');
    const log = this.log;
    this.onError =
      o.onError ?? ((err, records) => log.error({ code: err.code, records }, `sender: portal refused a batch of ${records} records: ${err.code}: ${err.message}`));
    randomBytes(8).copy(this.id, 0);

    const self = this;
    const channelHost: ChannelHost = {
      get epoch() {
        return self.router.map.epoch;
      },
      stats: this.stats,
      lingerMs: o.lingerMs,
      batchBytes: o.batchBytes,
      batchRecords: o.batchRecords,
      identity: o.identity,
      inner: o.inner === true,
      sendFailed: (ch, err) => log.warn({ err: err.message }, `sender: send to ${ch.server} failed`),
    };
    const replies = new Replies({
      get closed() {
        return self.closed;
      },
      stats: this.stats,
      log,
      acked: (count, ms, cancelled) => {
        this.stats.cancelled += cancelled;
        this.onAck?.(count, ms, cancelled);
      },
      refused: (err, count) => this.onError(err, count),
      catchUp: (portalEpoch) => this.catchUp(portalEpoch),
      ownsAll: (ch, batch) => this.router.ownsAll(ch, batch),
      reroute: (ch, batch) => this.reroute(ch, batch),
      settled: (ch) => this.settled(ch),
    });
    this.router = new Router(this.keeper, (s, server) => {
      const ch = new Channel(s, server.name, portalEndpoint(server, s), channelHost, server.publicKey);
      replies.listen(ch);
      return ch;
    });
  }

  /** The map epoch this sender routes by. */
  get epoch(): number {
    return this.router.map.epoch;
  }

  /**
   * Queues `value` (a payload of the stream's Avro schema) for the owner of its key. Returns
   * false when batches are queuing behind a full window: await `writable()` before sending more.
   * `provenance` lists the hops the record took so far.
   */
  send(stream: string, value: Record<string, unknown>, provenance: readonly string[] = NO_HOPS): boolean {
    const s = this.streamOf(stream);
    const keyValue = value[s.keyField];
    if (keyValue === undefined || keyValue === null) {
      throw new FlotillaError('RECORD_INVALID', `record for stream ${stream} has no key field "${s.keyField}"`);
    }
    return this.put(s, typeof keyValue === 'string' ? keyValue : String(keyValue), provenance, value, null);
  }

  /** Like `send`, for a payload already Avro-encoded (a relay, or a benchmark). */
  sendEncoded(stream: string, key: string, payload: Buffer, provenance: readonly string[] = NO_HOPS): boolean {
    return this.put(this.streamOf(stream), key, provenance, null, payload);
  }

  /**
   * Sends envelopes as they are (ids, timestamps and provenance kept): `count` of them end to end
   * in `body`, each to the owner of its key. A portal forwarding its spool after a map change
   * uses it. Returns false when the caller should wait for `writable()`.
   */
  sendEnvelopes(stream: string, body: Buffer, count: number): boolean {
    this.streamOf(stream);
    this.stats.records += count;
    for (const target of this.router.reroute(stream, body, count)) target.closeBatch();
    return !this.full();
  }

  /** Resolves once no portal has batches queued behind a full window. */
  writable(): Promise<void> {
    if (!this.full()) return Promise.resolve();
    return new Promise((resolve) => this.writableWaiters.push(resolve));
  }

  /** Sends what is batched now and resolves when every record sent so far is settled. */
  async flush(): Promise<void> {
    while (this.barrier) await new Promise<void>((resolve) => this.barrierWaiters.push(resolve));
    const targets = new Map<Channel, number>();
    for (const ch of this.router.all()) {
      ch.closeBatch();
      if (ch.nextOrder > 0) targets.set(ch, ch.nextOrder - 1);
    }
    return new Promise((resolve) => {
      const waiter = { targets, resolve };
      if (!this.flushDone(waiter)) this.flushWaiters.push(waiter);
    });
  }

  /** Records sent and not yet settled. */
  get pending(): number {
    return this.stats.records - this.stats.acked - this.stats.refused;
  }

  /** Closes every socket. Unsettled records are dropped: call `flush()` first to keep them. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const ch of this.router.all()) ch.close();
    this.router.clear();
    for (const w of this.writableWaiters) w();
    this.writableWaiters = [];
    this.barrier = null;
    for (const w of this.barrierWaiters) w();
    this.barrierWaiters = [];
  }

  // ---- the record's path ------------------------------------------------------------------

  private streamOf(name: string): MapStream {
    if (this.closed) throw new FlotillaError('SENDER_CLOSED', 'send on a closed sender');
    return this.router.stream(name);
  }

  /** The id of the record sent last, as a root id (32 hex digits): what `cancel` takes. */
  get lastId(): string {
    return this.id.toString('hex');
  }

  /**
   * Cancels every record derived from root `rootId` on every server of the map, through their
   * agents (docs/protocol.md, "Cancellation"); resolves once every agent has it on disk and has
   * told its portals. `stream`: the stream the root was sent on (default the map's first).
   */
  cancel(rootId: string, opts: { stream?: string; ttlMs?: number; timeoutMs?: number } = {}): Promise<CancelReply[]> {
    return cancelEverywhere(this.keeper.map, { stream: opts.stream ?? this.keeper.map.streams[0]!.name, root: rootId, ttlMs: opts.ttlMs }, opts.timeoutMs);
  }

  private nextId(): Buffer {
    const n = ++this.counter;
    this.id.writeUInt32BE(Math.floor(n / 0x100000000), 8);
    this.id.writeUInt32BE(n >>> 0, 12);
    return this.id;
  }

  /**
   * The one path of `send` and `sendEncoded`: a record of `key` with its payload as `value` (to
   * encode) or `payload` (encoded), exactly one of them non-null. During a barrier it may be
   * parked; else it joins its owner's open batch, starting the next batch if it would take this
   * one past max_batch_bytes. No closure or object per record: this runs a million times a second.
   */
  private put(s: MapStream, key: string, provenance: readonly string[], value: Record<string, unknown> | null, payload: Buffer | null): boolean {
    const barrier = this.barrier;
    if (barrier !== null) {
      const waitOn = barrier.waitOn(s, key);
      if (waitOn !== null) {
        append(barrier.park(waitOn), s, key, this.nextId(), Date.now(), provenance, value, payload);
        this.stats.records++;
        return !this.full();
      }
    }
    const ch = this.router.channelFor(s, key);
    const id = this.nextId();
    const now = Date.now();
    const w = ch.writer;
    const mark = w.size;
    append(w, s, key, id, now, provenance, value, payload);
    if (w.size > ch.stream.maxBatchBytes) {
      ch.overflowed(mark);
      append(w, s, key, id, now, provenance, value, payload);
    }
    this.stats.records++;
    return ch.added();
  }

  private full(): boolean {
    for (const ch of this.router.all()) if (ch.backlogged) return true;
    return this.barrier !== null && this.barrier.parkedOver(PARKED_BYTES_BEFORE_FULL);
  }

  // ---- map changes and redirects ----------------------------------------------------------

  /** After a redirect: takes the keeper's map if it is newer; returns the routing epoch. */
  private catchUp(portalEpoch: number): number {
    const next = this.router.newerMap(portalEpoch, (why) => this.log.warn({ err: why }, 'sender: redirected, but the map file does not load'));
    if (next) this.useMap(next);
    return this.router.map.epoch;
  }

  private useMap(next: FlotillaMap): void {
    this.log.info({ from: this.router.map.epoch, to: next.epoch }, `sender: now routing by map epoch ${next.epoch}`);
    // Everything routed so far goes out under the old map; records that must wait for it are
    // parked (barrier.ts) until it has all settled.
    for (const ch of this.router.all()) ch.closeBatch();
    this.barrier = Barrier.raise(this.barrier, this.router.map, this.router.all(), this.findChannel);
    this.router.use(next);
  }

  /** Routes a redirected batch's records by the routing map and sends them at once. */
  private reroute(ch: Channel, batch: OutBatch): void {
    for (const target of this.router.reroute(ch.stream.name, batch.body, batch.count)) {
      target.closeBatch();
      // A flush() that was waiting for this batch waits for its records in their new batches.
      for (const w of this.flushWaiters) {
        if ((w.targets.get(ch) ?? -1) >= batch.order) w.targets.set(target, Math.max(w.targets.get(target) ?? -1, target.nextOrder - 1));
      }
    }
  }

  /** Releases parked records whose channel has settled; ends the barrier when none is left. */
  private checkBarrier(): void {
    if (!this.barrier || !this.barrier.release(this.releaseParked)) return;
    this.barrier = null;
    const waiters = this.barrierWaiters;
    this.barrierWaiters = [];
    for (const w of waiters) w();
  }

  // ---- settling -----------------------------------------------------------------------------

  private settled(ch: Channel): void {
    ch.settle();
    this.checkBarrier();
    if (this.writableWaiters.length > 0 && !this.full()) {
      const waiters = this.writableWaiters;
      this.writableWaiters = [];
      for (const w of waiters) w();
    }
    if (this.flushWaiters.length > 0) this.flushWaiters = this.flushWaiters.filter((w) => !this.flushDone(w));
  }

  private flushDone(w: FlushWaiter): boolean {
    for (const [ch, order] of w.targets) if (ch.lowestUnsettled() <= order) return false;
    w.resolve();
    return true;
  }
}

/**
 * Appends one record to `w`: `payload` as it is, or `value` encoded with the stream's type
 * (RECORD_INVALID if it does not match the schema).
 */
function append(
  w: EnvelopeWriter,
  s: MapStream,
  key: string,
  id: Buffer,
  now: number,
  provenance: readonly string[],
  value: Record<string, unknown> | null,
  payload: Buffer | null,
): void {
  if (payload !== null) {
    w.appendEncoded(key, id, now, provenance, payload);
    return;
  }
  try {
    w.append(key, id, now, provenance, s.type, value);
  } catch (err) {
    throw new FlotillaError('RECORD_INVALID', `record for stream ${s.name} does not match its schema: ${(err as Error).message}`, { cause: err });
  }
}
