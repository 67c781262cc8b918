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
 */
import { randomBytes } from 'node:crypto';
import * as zmq from 'zeromq';
import { bucketOf, fnv1a32 } from '../map/bucket';
import { EnvelopeWriter, RecordIndex } from '../protocol/envelope';
import { FlotillaError, WireError } from '../errors';
import { createLogger, type Logger } from '../log';
import { type FlotillaMap, type MapStream } from '../map/types';
import { loadMap } from '../map/load';
import { portalEndpoint, streamOf } from '../map/lookup';
import { Outbox } from '../transport/outbox';
import { decodeHeader, encodeHeader, MessageType } from '../protocol/wire';

export const DEFAULT_LINGER_MS = 2;
/** Batches fill to this size or the stream's max_batch_bytes, whichever is smaller. */
export const DEFAULT_BATCH_BYTES = 900 * 1024;
export const DEFAULT_BATCH_RECORDS = 8192;
/** Closed batches that may wait behind a full window before `send` says false. */
const QUEUED_BATCHES_BEFORE_FULL = 2;
const REDIRECT_RETRY_MS = 200;
const PAUSE_PROBE_MS = 1000;
/** Bytes of parked records (see `barrier`) before `send` says false. */
const PARKED_BYTES_BEFORE_FULL = 4 << 20;

export interface SenderOptions {
  /** The map, or the path of the map file (then a redirect reloads it). */
  map: FlotillaMap | string;
  /** Longest a record waits for its batch to fill before the batch is sent. */
  lingerMs?: number;
  /** A batch is sent once its body reaches this many bytes (capped by the stream's limit). */
  batchBytes?: number;
  /** ...or this many records. */
  batchRecords?: number;
  /** Called for each batch a portal refused for good (malformed, too large, unknown stream). */
  onError?: (err: WireError, records: number) => void;
  /**
   * Starts the routing id of each connection, which portals see (then a `/` and random hex).
   * A portal forwarding its spool uses `fwd`, so the new owner knows the records are older.
   */
  identity?: string;
  log?: Logger;
}

/** A batch sent and not yet acknowledged. */
interface OutBatch {
  /** The header's seq: 1..2^32-1, wrapping. Unique among a channel's unsettled batches. */
  seq: number;
  /** Position among the channel's batches; never wraps. */
  order: number;
  body: Buffer;
  count: number;
  /** Set when the batch is handed to the socket; performance.now() ms. */
  sentAt: number;
  /** Refused with PAUSED or RESEND: kept, in order, until it may be sent again. */
  held: boolean;
}

/** The sender's link to one portal: one stream on one server. */
class Channel {
  readonly socket: zmq.Dealer;
  readonly events: zmq.Observer;
  readonly outbox: Outbox;
  readonly writer = new EnvelopeWriter();
  readonly streamFrame: Buffer;
  /** Sent, unacknowledged, in order of seq. */
  readonly inflight = new Map<number, OutBatch>();
  /** Closed but not sent: the window is full. */
  readonly queue: OutBatch[] = [];
  nextOrder = 0;
  linger: NodeJS.Timeout | null = null;
  soon: NodeJS.Immediate | null = null;
  connectedOnce = false;
  disconnected = false;
  /** performance.now() at the last disconnect. */
  lostAt = 0;
  /** The portal said PAUSED: send nothing new until RESUME (or a probe is accepted). */
  paused = false;
  /**
   * The seq of a batch a lagging portal refused, which must be accepted before anything newer
   * goes there; 0 for none. While it is set, only its own ACK ends the pause.
   */
  waitFor = 0;
  probe: NodeJS.Timeout | null = null;

  constructor(
    readonly stream: MapStream,
    /** The owning server's name: indexes change between maps, names do not. */
    readonly server: string,
    readonly endpoint: string,
    onError: (err: Error) => void,
    identity: string | undefined,
  ) {
    this.socket = new zmq.Dealer({
      linger: 0,
      immediate: true,
      sendHighWaterMark: 10_000,
      receiveHighWaterMark: 10_000,
      ...(identity ? { routingId: `${identity}/${randomBytes(8).toString('hex')}` } : {}),
    });
    this.events = this.socket.events; // watch before connecting, or the first connect is missed
    this.socket.connect(endpoint);
    this.outbox = new Outbox(this.socket, onError);
    this.streamFrame = Buffer.from(stream.name);
  }

  /** Order of the oldest batch not yet settled (acknowledged or refused), or Infinity. */
  lowestUnsettled(): number {
    let low = this.queue.length > 0 ? this.queue[0]!.order : Infinity;
    for (const b of this.inflight.values()) if (b.order < low) low = b.order;
    return low;
  }
}

/** Counters a sender keeps; cheap to read at any time. */
export interface SenderStats {
  records: number;
  acked: number;
  refused: number;
  batches: number;
  resent: number;
  redirects: number;
}

export class Sender {
  private map: FlotillaMap;
  private readonly mapFile: string | null;
  private readonly lingerMs: number;
  private readonly batchBytes: number;
  private readonly batchRecords: number;
  private readonly log: Logger;
  private readonly onError: (err: WireError, records: number) => void;
  private readonly identity: string | undefined;
  private channels = new Map<string, Channel>();
  /** channels by stream, then by server index: the per-record lookup, no string building. */
  private byStream = new Map<string, Channel[]>();
  private lastStream: MapStream | null = null;
  private lastChannels: Channel[] = [];
  private readonly id = Buffer.alloc(16);
  private counter = 0;
  private closed = false;
  private writableWaiters: (() => void)[] = [];
  private flushWaiters: { targets: Map<Channel, number>; resolve: () => void }[] = [];
  private readonly index = new RecordIndex();
  /**
   * After the map changed: the previous map, each channel's last batch routed under it, and the
   * records sent since whose key's old channel still has such batches unsettled, parked per
   * stream until every earlier batch is settled (acknowledged, or redirected and routed again),
   * so no record overtakes an older one of its key, wherever the key now goes.
   */
  private barrier: { before: FlotillaMap; marks: Map<Channel, number>; parked: Map<Channel, EnvelopeWriter> } | null = null;
  private barrierWaiters: (() => void)[] = [];
  /** Counters since the sender was opened. */
  readonly stats: SenderStats = { records: 0, acked: 0, refused: 0, batches: 0, resent: 0, redirects: 0 };
  /** Called with each acknowledged batch: records in it and the ms from send to ack. */
  onAck: ((count: number, ms: number) => void) | null = null;

  constructor(opts: SenderOptions) {
    this.mapFile = typeof opts.map === 'string' ? opts.map : null;
    this.map = typeof opts.map === 'string' ? loadMap(opts.map) : opts.map;
    this.lingerMs = opts.lingerMs ?? DEFAULT_LINGER_MS;
    this.batchBytes = opts.batchBytes ?? DEFAULT_BATCH_BYTES;
    this.batchRecords = opts.batchRecords ?? DEFAULT_BATCH_RECORDS;
    this.log = opts.log ?? createLogger('sender');
    this.identity = opts.identity;
    this.onError =
      opts.onError ??
      ((err, records) => this.log.error({ code: err.code, records }, `sender: portal refused a batch of ${records} records: ${err.code}: ${err.message}`));
    randomBytes(8).copy(this.id, 0);
  }

  /** The map epoch this sender routes by. */
  get epoch(): number {
    return this.map.epoch;
  }

  /**
   * Queues `value` (a payload of the stream's Avro schema) for the owner of its key. Returns
   * false when batches are queuing behind a full window: await `writable()` before sending more.
   * `provenance` lists the hops the record took so far.
   */
  send(stream: string, value: Record<string, unknown>, provenance: readonly string[] = []): boolean {
    const s = this.streamOf(stream);
    const keyValue = value[s.keyField];
    if (keyValue === undefined || keyValue === null) {
      throw new FlotillaError('RECORD_INVALID', `record for stream ${stream} has no key field "${s.keyField}"`);
    }
    const key = typeof keyValue === 'string' ? keyValue : String(keyValue);
    const waitOn = this.barrier ? this.waitOn(s, key) : null;
    if (waitOn) {
      const w = this.parkedWriter(waitOn);
      try {
        w.append(key, this.nextId(), Date.now(), provenance, s.type, value);
      } catch (err) {
        throw new FlotillaError('RECORD_INVALID', `record for stream ${stream} does not match its schema: ${(err as Error).message}`, { cause: err });
      }
      this.stats.records++;
      return !this.full();
    }
    const ch = this.channelFor(s, key);
    const id = this.nextId();
    const now = Date.now();
    this.fit(ch, () => {
      try {
        ch.writer.append(key, id, now, provenance, s.type, value);
      } catch (err) {
        throw new FlotillaError('RECORD_INVALID', `record for stream ${stream} does not match its schema: ${(err as Error).message}`, {
          cause: err,
        });
      }
    });
    return this.appended(ch);
  }

  /**
   * Appends one record with `append`, keeping every batch within the stream's max_batch_bytes:
   * a record that would overflow the open batch goes into the next one, and a record that
   * could never fit is refused here, not by the portal.
   */
  private fit(ch: Channel, append: () => void): void {
    const mark = ch.writer.size;
    append();
    if (ch.writer.size <= ch.stream.maxBatchBytes) return;
    this.overflowed(ch, mark);
    append();
  }

  /**
   * The record appended last (from byte `mark`) took the open batch past max_batch_bytes: take
   * it out and send the batch, so the record can start the next one; or refuse the record if it
   * could never fit.
   */
  private overflowed(ch: Channel, mark: number): void {
    const w = ch.writer;
    const limit = ch.stream.maxBatchBytes;
    const recordBytes = w.size - mark;
    w.truncate(mark);
    if (recordBytes > limit) {
      throw new FlotillaError('RECORD_INVALID', `record for stream ${ch.stream.name} is ${recordBytes} bytes; the stream's max_batch_bytes is ${limit}`);
    }
    this.closeBatch(ch);
  }

  /** Like `send`, for a payload already Avro-encoded (a relay, or a benchmark). */
  sendEncoded(stream: string, key: string, payload: Buffer, provenance: readonly string[] = []): boolean {
    const s = this.streamOf(stream);
    const waitOn = this.barrier ? this.waitOn(s, key) : null;
    if (waitOn) {
      this.parkedWriter(waitOn).appendEncoded(key, this.nextId(), Date.now(), provenance, payload);
      this.stats.records++;
      return !this.full();
    }
    let ch = this.channelFor(s, key);
    const id = this.nextId();
    const now = Date.now();
    const mark = ch.writer.size;
    ch.writer.appendEncoded(key, id, now, provenance, payload);
    if (ch.writer.size > s.maxBatchBytes) {
      this.overflowed(ch, mark);
      ch = this.channelFor(s, key);
      ch.writer.appendEncoded(key, id, now, provenance, payload);
    }
    return this.appended(ch);
  }

  /**
   * Sends envelopes as they are (ids, timestamps and provenance kept): `count` of them end to end
   * in `body`, each to the owner of its key. A portal forwarding its spool after a map change
   * uses it. Returns false when the caller should wait for `writable()`.
   */
  sendEnvelopes(stream: string, body: Buffer, count: number): boolean {
    this.streamOf(stream);
    this.stats.records += count;
    for (const target of this.reroute(stream, body, count)) this.closeBatch(target);
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
    for (const ch of this.channels.values()) {
      this.closeBatch(ch);
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
    for (const ch of this.channels.values()) {
      if (ch.linger) clearTimeout(ch.linger);
      if (ch.soon) clearImmediate(ch.soon);
      if (ch.probe) clearInterval(ch.probe);
      ch.outbox.close();
      ch.socket.close();
    }
    this.channels.clear();
    this.byStream.clear();
    this.lastStream = null;
    for (const w of this.writableWaiters) w();
    this.writableWaiters = [];
    this.barrier = null;
    for (const w of this.barrierWaiters) w();
    this.barrierWaiters = [];
  }

  // ---- batching ------------------------------------------------------------------------

  private streamOf(name: string): MapStream {
    if (this.closed) throw new FlotillaError('SENDER_CLOSED', 'send on a closed sender');
    return streamOf(this.map, name);
  }

  private nextId(): Buffer {
    const n = ++this.counter;
    this.id.writeUInt32BE(Math.floor(n / 0x100000000), 8);
    this.id.writeUInt32BE(n >>> 0, 12);
    return this.id;
  }

  private channelFor(s: MapStream, key: string): Channel {
    const server = s.owner[bucketOf(key, s.buckets)]!;
    if (s !== this.lastStream) {
      this.lastStream = s;
      this.lastChannels = this.byStream.get(s.name) ?? [];
      this.byStream.set(s.name, this.lastChannels);
    }
    return this.lastChannels[server] ?? this.channel(s, server);
  }

  private channel(s: MapStream, serverIndex: number): Channel {
    const server = this.map.servers[serverIndex]!;
    const name = `${s.name}/${server.name}`;
    let ch = this.channels.get(name);
    if (!ch) {
      ch = new Channel(
        s,
        server.name,
        portalEndpoint(server, s),
        (err) => this.log.warn({ err: err.message }, `sender: send to ${server.name} failed`),
        this.identity,
      );
      this.channels.set(name, ch);
      void this.receiveLoop(ch);
      void this.watchConnection(ch);
    }
    if (!this.byStream.has(s.name)) this.byStream.set(s.name, []);
    this.byStream.get(s.name)![serverIndex] = ch;
    return ch;
  }

  private appended(ch: Channel): boolean {
    this.stats.records++;
    const w = ch.writer;
    if (w.count >= this.batchRecords || w.size >= Math.min(this.batchBytes, ch.stream.maxBatchBytes)) {
      this.closeBatch(ch);
    } else if (!ch.linger && !ch.soon) {
      if (ch.inflight.size === 0) {
        // Nothing in flight: send at the end of this turn of the event loop (records sent in
        // the same turn still join the batch) instead of waiting out the linger.
        ch.soon = setImmediate(() => {
          ch.soon = null;
          this.closeBatch(ch);
        });
      } else {
        // Something in flight: records gather until its ACK comes back or the linger passes,
        // whichever is first (see settled()).
        ch.linger = setTimeout(() => {
          ch.linger = null;
          this.closeBatch(ch);
        }, this.lingerMs);
      }
    }
    return ch.queue.length < QUEUED_BATCHES_BEFORE_FULL;
  }

  private closeBatch(ch: Channel): void {
    if (ch.linger) {
      clearTimeout(ch.linger);
      ch.linger = null;
    }
    if (ch.soon) {
      clearImmediate(ch.soon);
      ch.soon = null;
    }
    if (ch.writer.count === 0) return;
    const count = ch.writer.count;
    const order = ch.nextOrder++;
    const batch: OutBatch = { seq: (order % 0xffffffff) + 1, order, body: ch.writer.take(), count, sentAt: 0, held: false };
    ch.queue.push(batch);
    this.pump(ch);
  }

  private pump(ch: Channel): void {
    while (!ch.paused && ch.queue.length > 0 && ch.inflight.size < ch.stream.window) {
      const batch = ch.queue.shift()!;
      ch.inflight.set(batch.seq, batch);
      this.transmit(ch, batch);
    }
  }

  private transmit(ch: Channel, batch: OutBatch): void {
    batch.sentAt = performance.now();
    this.stats.batches++;
    ch.outbox.push([encodeHeader(MessageType.BATCH, batch.seq, this.map.epoch, batch.count), ch.streamFrame, batch.body]);
  }

  private full(): boolean {
    for (const ch of this.channels.values()) if (ch.queue.length >= QUEUED_BATCHES_BEFORE_FULL) return true;
    if (this.barrier) for (const w of this.barrier.parked.values()) if (w.size > PARKED_BYTES_BEFORE_FULL) return true;
    return false;
  }

  /**
   * During a barrier: the channel a record of `key` must wait for, or null. It waits while the
   * channel its key went to under the previous map still has batches from before the change
   * unsettled (any may come back redirected, and its records of this key must go first), and
   * so while records parked for that channel are not yet released.
   */
  private waitOn(s: MapStream, key: string): Channel | null {
    const b = this.barrier!;
    const old = b.before.streams.find((x) => x.name === s.name);
    if (!old || old.buckets !== s.buckets) return null;
    const oldOwner = b.before.servers[old.owner[bucketOf(key, s.buckets)]!]!.name;
    const ch = this.channels.get(`${s.name}/${oldOwner}`);
    return ch && b.marks.has(ch) ? ch : null;
  }

  private parkedWriter(ch: Channel): EnvelopeWriter {
    const parked = this.barrier!.parked;
    let w = parked.get(ch);
    if (!w) parked.set(ch, (w = new EnvelopeWriter()));
    return w;
  }

  /** Appends envelopes `[start, end)` of `body` to the channel of each record's owner now. */
  private reroute(stream: string, body: Buffer, count: number): Set<Channel> {
    const s = streamOf(this.map, stream);
    const index = this.index;
    index.scan(body, count);
    const touched = new Set<Channel>();
    for (let i = 0; i < index.count; i++) {
      const bucket = fnv1a32(body, index.keyStarts[i], index.keyEnds[i]) % s.buckets;
      const target = this.channel(s, s.owner[bucket]!);
      const bytes = index.starts[i + 1]! - index.starts[i]!;
      if (target.writer.count > 0 && target.writer.size + bytes > s.maxBatchBytes) this.closeBatch(target);
      target.writer.appendRaw(body, index.starts[i]!, index.starts[i + 1]!, 1);
      touched.add(target);
    }
    return touched;
  }

  /**
   * Releases, channel by channel, the records parked for a channel whose batches from before the
   * map change are all settled; ends the barrier when no channel is left.
   */
  private checkBarrier(): void {
    const b = this.barrier;
    if (!b) return;
    for (const [ch, mark] of b.marks) {
      if (ch.lowestUnsettled() <= mark) continue;
      b.marks.delete(ch);
      const w = b.parked.get(ch);
      b.parked.delete(ch);
      if (w && w.count > 0) {
        const count = w.count;
        for (const target of this.reroute(ch.stream.name, w.take(), count)) this.closeBatch(target);
      }
    }
    if (b.marks.size > 0) return;
    this.barrier = null;
    const waiters = this.barrierWaiters;
    this.barrierWaiters = [];
    for (const w of waiters) w();
  }

  // ---- replies -------------------------------------------------------------------------

  private async receiveLoop(ch: Channel): Promise<void> {
    while (!this.closed) {
      let msg: Buffer[];
      try {
        msg = await ch.socket.receive();
      } catch {
        if (this.closed) return;
        continue;
      }
      const header = decodeHeader(msg[0]);
      if (!header) continue;
      if (header.type === MessageType.RESUME) {
        this.resume(ch);
        continue;
      }
      const batch = ch.inflight.get(header.seq);
      if (!batch) continue; // a reply to a batch already settled (we resent it)
      if (header.type === MessageType.ACK) {
        ch.inflight.delete(header.seq);
        // An ACK ends a pause, unless the pause waits for one batch in particular (a lagging
        // portal): then only that batch's ACK does, so nothing newer gets there before it.
        if (ch.paused && (ch.waitFor === 0 || ch.waitFor === header.seq)) this.resume(ch);
        this.stats.acked += batch.count;
        this.onAck?.(batch.count, performance.now() - batch.sentAt);
      } else if (header.type === MessageType.ERROR) {
        const err = WireError.parse(msg[1]?.toString() ?? '', msg[2]?.toString() ?? '', header.epoch);
        this.onRefused(ch, batch, err);
      }
      this.settled(ch);
    }
  }

  private onRefused(ch: Channel, batch: OutBatch, err: WireError): void {
    if (err.code === 'PAUSED') {
      batch.held = true;
      if (!ch.paused) {
        ch.paused = true;
        this.log.info({ endpoint: ch.endpoint }, `sender: ${ch.stream.name} on ${ch.server} is paused; holding batches`);
        // Should RESUME be lost, a held batch sent now and then finds out.
        ch.probe = setInterval(() => this.probe(ch), PAUSE_PROBE_MS);
        ch.probe.unref();
      }
    } else if (err.code === 'RESEND') {
      // An earlier batch refused during a pause must reach the portal first.
      batch.held = true;
      if (!ch.paused) this.resendHeld(ch);
    } else if (err.code === 'WRONG_OWNER') {
      ch.inflight.delete(batch.seq);
      this.stats.redirects++;
      this.redirect(ch, batch, err.epoch);
    } else if (err.code === 'WINDOW_EXCEEDED') {
      // Only after a reconnect resent more than the window; send again once acks arrive.
      setTimeout(() => ch.inflight.has(batch.seq) && this.transmit(ch, batch), REDIRECT_RETRY_MS).unref();
    } else {
      ch.inflight.delete(batch.seq);
      this.stats.refused += batch.count;
      this.onError(err, batch.count);
      if (ch.waitFor === batch.seq) this.resume(ch);
    }
  }

  /** Routes a redirected batch's records again under the newest map (loading it if needed). */
  private redirect(ch: Channel, batch: OutBatch, portalEpoch: number): void {
    if (this.mapFile && portalEpoch > this.map.epoch) {
      try {
        const next = loadMap(this.mapFile);
        if (next.epoch > this.map.epoch) this.useMap(next);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'sender: redirected, but the map file does not load');
      }
    }
    const s0 = streamOf(this.map, ch.stream.name);
    const stillOurs = this.map.epoch >= portalEpoch && this.ownsAll(ch, batch, s0);
    if (this.map.epoch < portalEpoch || stillOurs) {
      // Either the new map has not reached us yet, or the portal has not caught up with ours
      // (our map still sends these records to it): hold the batch and try again shortly. Until
      // it is accepted, nothing newer goes to that portal, so nothing overtakes it.
      ch.inflight.set(batch.seq, batch);
      if (stillOurs) {
        ch.paused = true;
        ch.waitFor = batch.seq;
      }
      setTimeout(() => {
        if (!ch.inflight.has(batch.seq) || this.closed) return;
        if (stillOurs) this.transmit(ch, batch);
        else {
          ch.inflight.delete(batch.seq);
          this.redirect(ch, batch, portalEpoch);
        }
      }, REDIRECT_RETRY_MS).unref();
      return;
    }
    // The batch leaves this channel: a pause that waited for it has nothing left to wait for.
    if (ch.waitFor === batch.seq) this.resume(ch);
    const touched = this.reroute(ch.stream.name, batch.body, batch.count);
    // Send at once, and make any flush() that was waiting for this batch wait for its records
    // in their new batches instead.
    for (const target of touched) {
      this.closeBatch(target);
      for (const w of this.flushWaiters) {
        if ((w.targets.get(ch) ?? -1) >= batch.order) w.targets.set(target, Math.max(w.targets.get(target) ?? -1, target.nextOrder - 1));
      }
    }
  }

  /** True if, by our map, every record of the batch belongs to the channel's server. */
  private ownsAll(ch: Channel, batch: OutBatch, s: MapStream): boolean {
    const index = this.index;
    const self = this.map.servers.findIndex((x) => x.name === ch.server);
    if (self < 0 || !index.scan(batch.body, batch.count)) return false;
    for (let i = 0; i < index.count; i++) {
      if (s.owner[fnv1a32(batch.body, index.keyStarts[i], index.keyEnds[i]) % s.buckets] !== self) return false;
    }
    return true;
  }

  /** The portal resumed: send every held batch again, oldest first, then carry on. */
  private resume(ch: Channel): void {
    if (ch.probe) clearInterval(ch.probe);
    ch.probe = null;
    if (ch.paused) this.log.info({ endpoint: ch.endpoint }, `sender: ${ch.stream.name} on ${ch.server} resumed`);
    ch.paused = false;
    ch.waitFor = 0;
    this.resendHeld(ch);
    this.settled(ch);
  }

  private resendHeld(ch: Channel): void {
    const held = [...ch.inflight.values()].filter((b) => b.held).sort((a, b) => a.order - b.order);
    for (const b of held) {
      b.held = false;
      this.transmit(ch, b);
    }
  }

  /** While paused: send the oldest held batch; an ACK (or RESEND) means the pause is over. */
  private probe(ch: Channel): void {
    let oldest: OutBatch | undefined;
    for (const b of ch.inflight.values()) if (b.held && (!oldest || b.order < oldest.order)) oldest = b;
    if (!oldest) return;
    oldest.held = false;
    this.transmit(ch, oldest);
  }

  private useMap(next: FlotillaMap): void {
    this.log.info({ from: this.map.epoch, to: next.epoch }, `sender: now routing by map epoch ${next.epoch}`);
    // Everything routed so far goes out under the old map; records of moved buckets wait (see
    // `barrier`) until it has all settled.
    const marks = this.barrier?.marks ?? new Map<Channel, number>();
    for (const ch of this.channels.values()) {
      this.closeBatch(ch);
      if (ch.nextOrder > 0) marks.set(ch, ch.nextOrder - 1);
    }
    this.barrier = { before: this.barrier?.before ?? this.map, marks, parked: this.barrier?.parked ?? new Map() };
    this.map = next;
    // Channels (keyed by server name) keep their sockets; the index-keyed cache is rebuilt.
    this.byStream.clear();
    this.lastStream = null;
  }

  private settled(ch: Channel): void {
    // The link is idle again: what gathered while the last batch was out goes now.
    if (ch.inflight.size === 0 && ch.queue.length === 0 && ch.writer.count > 0) this.closeBatch(ch);
    this.pump(ch);
    this.checkBarrier();
    if (this.writableWaiters.length > 0 && !this.full()) {
      const waiters = this.writableWaiters;
      this.writableWaiters = [];
      for (const w of waiters) w();
    }
    if (this.flushWaiters.length > 0) this.flushWaiters = this.flushWaiters.filter((w) => !this.flushDone(w));
  }

  private flushDone(w: { targets: Map<Channel, number>; resolve: () => void }): boolean {
    for (const [ch, order] of w.targets) if (ch.lowestUnsettled() <= order) return false;
    w.resolve();
    return true;
  }

  /** After a reconnect, sends every unacknowledged batch again, in order. */
  private async watchConnection(ch: Channel): Promise<void> {
    for await (const event of ch.events) {
      if (this.closed) return;
      if (event.type === 'disconnect') {
        ch.disconnected = true;
        ch.lostAt = performance.now();
      } else if (event.type === 'connect') {
        if (ch.connectedOnce && ch.disconnected) {
          // Sent before the connection was lost: maybe never arrived. Sent since: queued for
          // this connection (immediate), so sending those again would only make duplicates.
          // Held batches wait for RESUME (or the probe) as before.
          const lost = [...ch.inflight.values()].filter((b) => !b.held && b.sentAt <= ch.lostAt).sort((a, b) => a.order - b.order);
          this.log.info({ endpoint: ch.endpoint, batches: lost.length }, `sender: reconnected to ${ch.endpoint}, resending ${lost.length} batches`);
          for (const batch of lost) {
            this.stats.resent++;
            this.transmit(ch, batch);
          }
        }
        ch.connectedOnce = true;
        ch.disconnected = false;
      }
    }
  }

}
