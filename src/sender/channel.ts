/**
 * The sender's link to one portal: one stream on one server. A channel owns the DEALER socket,
 * the open batch records are appended to, and every batch it closed until that batch settles:
 *
 *   writer (open batch) --closeBatch--> queue (window full) --pump--> inflight --ACK/ERROR--> settled
 *
 * It also carries the pause state (the portal said PAUSED, or a lagging portal must accept one
 * batch before anything newer) and knows how to send held or lost batches again; *when* to do
 * which is decided by the reply state machine (replies.ts).
 *
 * A lost connection is never picked up again: the channel closes that socket (dropping what it
 * still queued for it) and connects a new one, and until that one connects nothing is sent. Its
 * first messages are then every unacknowledged batch, oldest first, so nothing queued during the
 * disconnect can overtake a batch the old connection lost, with ZMQ_IMMEDIATE or without.
 *
 * Named hooks, published only while someone subscribes (bench/tail/), each message a
 * `SenderBatchEvent` ({ stream, server, seq, count, at }):
 *   `flotilla:sender:batch`     a batch is closed (`at`: before its body is taken from the writer)
 *   `flotilla:sender:transmit`  a batch is handed to the outbox, again for each resend (`at`: its sentAt)
 *   `flotilla:sender:ack`       its ACK arrived (replies.ts; `at`: just before `onAck` is called)
 * The socket.send of a batch is `flotilla:outbox:send` of the outbox named 'sender'.
 */
import { randomBytes } from 'node:crypto';
import { channel as hook } from 'node:diagnostics_channel';
import * as zmq from 'zeromq';
import { FlotillaError } from '../errors';
import type { MapStream } from '../map/types';
import { EnvelopeWriter } from '../protocol/envelope';
import { encodeHeader, MessageType } from '../protocol/wire';
import { clientOptions, ownKey } from '../transport/curve';
import { identityProof } from '../transport/proof';
import { Outbox } from '../transport/outbox';

/** The message of the sender's named hooks: one batch of one channel. */
export interface SenderBatchEvent {
  /** The channel's stream and server: `seq` is unique among one channel's unsettled batches. */
  stream: string;
  server: string;
  seq: number;
  /** Records in the batch. */
  count: number;
  /** performance.now(), ms. */
  at: number;
}

const batchHook = hook('flotilla:sender:batch');
const transmitHook = hook('flotilla:sender:transmit');

/** Closed batches that may wait behind a full window before `send` says false. */
const QUEUED_BATCHES_BEFORE_FULL = 2;

/** A batch closed and not yet settled (acknowledged, refused for good, or routed again). */
export interface OutBatch {
  /** The header's seq: 1..2^32-1, wrapping. Unique among a channel's unsettled batches. */
  seq: number;
  /** Position among the channel's batches; never wraps. */
  order: number;
  body: Buffer;
  count: number;
  /** The epoch of the map its records were routed by, written in its header. */
  epoch: number;
  /** Set when the batch is handed to the socket; performance.now() ms. */
  sentAt: number;
  /** Refused with PAUSED or RESEND: kept, in order, until it may be sent again. */
  held: boolean;
}

/** What a channel needs of the sender that owns it. */
export interface ChannelHost {
  /** The map epoch the sender routes by, written in each batch header. */
  readonly epoch: number;
  /** Counters: one more batch handed to the socket (a resend counts again). */
  readonly stats: { batches: number };
  /** Longest a record waits in the open batch while a batch is in flight, ms. */
  readonly lingerMs: number;
  /** The open batch is closed at this many body bytes (or the stream's max_batch_bytes)... */
  readonly batchBytes: number;
  /** ...or at this many records. */
  readonly batchRecords: number;
  /** Starts the socket's routing id (then, with CURVE, `/` and its proof, proof.ts; then `/` and random hex); none when undefined or empty. */
  readonly identity: string | undefined;
  /** Marks every BATCH as sent from inside the flow (INNER_FLAG): a component's sender. */
  readonly inner: boolean;
  /** Handing a message to the socket failed. */
  sendFailed(ch: Channel, err: Error): void;
}

/** The sender's link to one portal: its socket, its batches, and whether it may send. */
export class Channel {
  /** The connection's socket; replaced by `renew` after a disconnect. */
  socket: zmq.Dealer;
  events: zmq.Observer;
  outbox: Outbox;
  /** The open batch. */
  readonly writer = new EnvelopeWriter();
  readonly streamFrame: Buffer;
  /** Sent, unacknowledged, in order of seq. */
  readonly inflight = new Map<number, OutBatch>();
  /** Closed but not sent: the window is full. */
  readonly queue: OutBatch[] = [];
  /** The order the next closed batch gets. */
  nextOrder = 0;
  linger: NodeJS.Timeout | null = null;
  soon: NodeJS.Immediate | null = null;
  /** The connection broke and its successor has not connected yet: nothing is sent meanwhile. */
  disconnected = false;
  /** The portal said PAUSED: send nothing new until RESUME (or a probe is accepted). */
  paused = false;
  /**
   * The seq of a batch a lagging portal refused, which must be accepted before anything newer
   * goes there; 0 for none. While it is set, only its own ACK ends the pause.
   */
  waitFor = 0;
  probe: NodeJS.Timeout | null = null;
  /** The open batch is closed once its body reaches this many bytes. */
  private readonly closeAtBytes: number;
  private readonly closeNow = (): void => {
    this.linger = null;
    this.soon = null;
    this.closeBatch();
  };

  constructor(
    readonly stream: MapStream,
    /** The owning server's name: indexes change between maps, names do not. */
    readonly server: string,
    readonly endpoint: string,
    private readonly host: ChannelHost,
    /** The server's CURVE public key in a keyed map: the connection runs CURVE (src/transport/curve.ts). */
    private readonly serverKey?: string,
  ) {
    [this.socket, this.events, this.outbox] = this.connect();
    this.streamFrame = Buffer.from(stream.name);
    this.closeAtBytes = Math.min(host.batchBytes, stream.maxBatchBytes);
  }

  /** A new DEALER, connecting to the portal, with its events and outbox. */
  private connect(): [zmq.Dealer, zmq.Observer, Outbox] {
    const identity = this.host.identity;
    const socket = new zmq.Dealer({
      linger: 0,
      immediate: true,
      sendHighWaterMark: 10_000,
      receiveHighWaterMark: 10_000,
      ...(identity ? { routingId: `${identity}/${this.serverKey ? `${identityProof(identity, ownKey(), this.serverKey)}/` : ''}${randomBytes(8).toString('hex')}` } : {}),
      ...clientOptions(this.serverKey),
    });
    const events = socket.events; // watch before connecting, or the first connect is missed
    socket.connect(this.endpoint);
    return [socket, events, new Outbox('sender', socket, (err) => this.host.sendFailed(this, err))];
  }

  /**
   * The connection broke: drops the socket with whatever it still queued and starts a new one.
   * Nothing is sent until it connects (then `reconnected`), so no batch can overtake a lost one.
   */
  renew(): void {
    this.disconnected = true;
    // The old observer is not closed: it ends with its socket. Closing an Observer (zeromq.js 6)
    // can stop the process's later observers from seeing events, so no socket would ever be
    // seen to reconnect again.
    this.outbox.close();
    this.socket.close();
    [this.socket, this.events, this.outbox] = this.connect();
  }

  /**
   * The new connection is up: sends every unacknowledged batch again, oldest first (replies on
   * the old connection are lost), then what waited. Held batches go too, in their place: a
   * batch whose PAUSED was lost with the old connection may be newer than one held, and the
   * RESUME meant for the old connection never comes (a portal still paused says PAUSED again).
   */
  reconnected(): OutBatch[] {
    this.disconnected = false;
    const lost = [...this.inflight.values()].sort((a, b) => a.order - b.order);
    for (const b of lost) {
      b.held = false;
      this.transmit(b);
    }
    this.pump();
    return lost;
  }

  /** Order of the oldest batch not yet settled (acknowledged or refused), or Infinity. */
  lowestUnsettled(): number {
    let low = this.queue.length > 0 ? this.queue[0]!.order : Infinity;
    for (const b of this.inflight.values()) if (b.order < low) low = b.order;
    return low;
  }

  /** True when closed batches queue behind the full window: the caller should wait. */
  get backlogged(): boolean {
    return this.queue.length >= QUEUED_BATCHES_BEFORE_FULL;
  }

  /**
   * A record was appended to the open batch: closes the batch if it is full, else makes sure it
   * goes soon. Returns false when batches queue behind the full window.
   */
  added(): boolean {
    const w = this.writer;
    if (w.count >= this.host.batchRecords || w.size >= this.closeAtBytes) {
      this.closeBatch();
    } else if (this.linger === null && this.soon === null) {
      if (this.inflight.size === 0) {
        // Nothing in flight: send at the end of this turn of the event loop (records sent in
        // the same turn still join the batch) instead of waiting out the linger.
        this.soon = setImmediate(this.closeNow);
      } else {
        // Something in flight: records gather until its ACK comes back or the linger passes,
        // whichever is first (see settle()).
        this.linger = setTimeout(this.closeNow, this.host.lingerMs);
      }
    }
    return !this.backlogged;
  }

  /**
   * The record appended last (from byte `mark`) took the open batch past max_batch_bytes: takes
   * it out and closes the batch, so the record can start the next one; or refuses the record if
   * it could never fit.
   */
  overflowed(mark: number): void {
    const w = this.writer;
    const limit = this.stream.maxBatchBytes;
    const recordBytes = w.size - mark;
    w.truncate(mark);
    if (recordBytes > limit) {
      throw new FlotillaError('RECORD_INVALID', `record for stream ${this.stream.name} is ${recordBytes} bytes; the stream's max_batch_bytes is ${limit}`);
    }
    this.closeBatch();
  }

  /** Closes the open batch (if it has records) and sends it if the window allows. */
  closeBatch(): void {
    if (this.linger !== null) {
      clearTimeout(this.linger);
      this.linger = null;
    }
    if (this.soon !== null) {
      clearImmediate(this.soon);
      this.soon = null;
    }
    const count = this.writer.count;
    if (count === 0) return;
    const order = this.nextOrder++;
    const seq = (order % 0xffffffff) + 1;
    if (batchHook.hasSubscribers) batchHook.publish({ stream: this.stream.name, server: this.server, seq, count, at: performance.now() } satisfies SenderBatchEvent);
    this.queue.push({ seq, order, epoch: this.host.epoch, body: this.writer.take(), count, sentAt: 0, held: false });
    this.pump();
  }

  /** Sends queued batches while the window has room, the portal is not paused and the link is up. */
  pump(): void {
    while (!this.paused && !this.disconnected && this.queue.length > 0 && this.inflight.size < this.stream.window) {
      const batch = this.queue.shift()!;
      this.inflight.set(batch.seq, batch);
      this.transmit(batch);
    }
  }

  /** Hands a batch to the socket (again, for a resend); while disconnected, `reconnected` will. */
  transmit(batch: OutBatch): void {
    if (this.disconnected) return;
    batch.sentAt = performance.now();
    this.host.stats.batches++;
    if (transmitHook.hasSubscribers) {
      transmitHook.publish({ stream: this.stream.name, server: this.server, seq: batch.seq, count: batch.count, at: batch.sentAt } satisfies SenderBatchEvent);
    }
    this.outbox.push([encodeHeader(MessageType.BATCH, batch.seq, batch.epoch, batch.count, this.host.inner), this.streamFrame, batch.body]);
  }

  /**
   * Tells a portal that lags behind our map that batch `seq`, which it refused and is owed, will
   * not come back (its records went elsewhere): an empty batch with that seq settles the debt,
   * so the connection's later batches are not answered RESEND meanwhile.
   */
  forgo(seq: number, epoch: number): void {
    if (this.disconnected) return; // a new connection owes nothing
    this.outbox.push([encodeHeader(MessageType.BATCH, seq, epoch, 0, this.host.inner), this.streamFrame, Buffer.alloc(0)]);
  }

  /** A batch settled: if the link is now idle, what gathered meanwhile goes; then fills the window. */
  settle(): void {
    if (this.inflight.size === 0 && this.queue.length === 0 && this.writer.count > 0) this.closeBatch();
    this.pump();
  }

  /** Pauses for PAUSED: nothing new is sent, and the oldest held batch probes every `probeMs`. */
  pauseAndProbe(probeMs: number): void {
    this.paused = true;
    this.probe = setInterval(() => this.sendOldestHeld(), probeMs);
    this.probe.unref();
  }

  /** Ends a pause of either kind and sends every held batch again, oldest first. */
  unpause(): void {
    if (this.probe !== null) clearInterval(this.probe);
    this.probe = null;
    this.paused = false;
    this.waitFor = 0;
    this.resendHeld();
  }

  /** Sends every held batch again, oldest first. */
  resendHeld(): void {
    const held = [...this.inflight.values()].filter((b) => b.held).sort((a, b) => a.order - b.order);
    for (const b of held) {
      b.held = false;
      this.transmit(b);
    }
  }

  /** While paused: sends the oldest held batch; an ACK (or RESEND) means the pause is over. */
  sendOldestHeld(): void {
    let oldest: OutBatch | undefined;
    for (const b of this.inflight.values()) if (b.held && (!oldest || b.order < oldest.order)) oldest = b;
    if (!oldest) return;
    oldest.held = false;
    this.transmit(oldest);
  }

  /** Stops its timers and closes the socket; unsent messages are dropped. */
  close(): void {
    if (this.linger !== null) clearTimeout(this.linger);
    if (this.soon !== null) clearImmediate(this.soon);
    if (this.probe !== null) clearInterval(this.probe);
    this.outbox.close();
    this.socket.close(); // its observer ends with it (see renew)
  }
}
