/**
 * Ingress and admission: the portal's TCP ROUTER, where senders' batches arrive and their ACKs
 * and refusals leave.
 *
 *   sender --BATCH [header, stream, body]--> checks --route--> spool (staging.ts) or slots
 *   sender <--ACK | ERROR code message--      (a refusal names why, docs/protocol.md)
 *
 * A batch is refused, in this order: not a Flotilla header (MALFORMED), another protocol version
 * (UNSUPPORTED_VERSION), not a BATCH, not 3 frames or seq 0 (MALFORMED), another stream
 * (UNKNOWN_STREAM), over max_batch_bytes (TOO_LARGE), the stream paused without a spool or the
 * portal stopping (PAUSED; a batch from inside the flow, INNER_FLAG, is still taken, see below),
 * an earlier refused batch of this sender not back yet (RESEND), the sender's window full
 * (WINDOW_EXCEEDED), envelopes that do not scan or a key not UTF-8 (MALFORMED), a key this
 * server does not own (WRONG_OWNER, or MISROUTED when the sender routed by this very epoch), no
 * room in the spool (SPOOL_FULL, or parked until there is).
 *
 * Pause and stop (docs/operations.md): while paused, a batch from inside the flow (a component's
 * sender sets INNER_FLAG) is taken as if not paused, so the components that emitted it can finish
 * and every process can reach idle; where the stream spools it goes to the spool, like every batch
 * of a paused spooling stream. While stopping (`stopTaking`), every batch is refused with PAUSED,
 * except one from inside the flow on a stream with a spool, which is written there for the next
 * portal; reading goes on, so every batch a sender sent gets an answer before the socket closes.
 *
 * Memory is bounded: while more than `maxQueued` records, or more than max_queued_bytes of them,
 * wait in the portal, or (without a spool) a slot's backlog is past max_slot_bytes, or a batch
 * waits for room in the spool, nothing more is read and senders wait in their TCP buffers
 * (ZeroMQ reads ahead a few messages per connection). Replies a sender does not read wait in
 * ZeroMQ up to max_unread_replies for its connection, then are dropped (ingress-socket.ts).
 * What no count reaches (a multipart message that never ends) the memory guard cuts with
 * `reset` (limits.ts).
 *
 * Named hooks: `flotilla:portal:batch` ({ seq, count, start, end }) around each message's
 * handling and `flotilla:portal:ack` ({ seq, at }) for each ACK, published only while someone
 * subscribes (bench/tail/).
 */
import { channel } from 'node:diagnostics_channel';
import type { WireErrorCode } from '../errors';
import * as zmq from 'zeromq';
import { ownKey } from '../transport/curve';
import { provesIdentity } from '../transport/proof';
import type { CauseCounter, Logger } from '../log';
import type { MemoryLimits } from '../map/types';
import { RecordIndex } from '../protocol/envelope';
import { countFrame, decodeHeader, encodeHeader, FORWARD_IDENTITY, type Header, MessageType, VERSION } from '../protocol/wire';
import { SpoolFullError, type WriteResult } from '../spool/spool';
import { receiveEach } from '../transport/receive';
import type { Cancels } from './cancels';
import type { PortalCounters } from './counters';
import { IngressSocket } from './ingress-socket';
import type { InBatch } from './slot';
import type { PauseState } from './pause';
import type { BatchPlan, Routing } from './router';
import type { Staging } from './staging';

/** How long a sender's refused batch is waited for before its later batches are taken anyway. */
export const OWED_TTL_MS = 10_000;
/** Longest the ingress loop runs before it lets the rest of the event loop in. */
const INGRESS_SLICE_MS = 10;


const batchChannel = channel('flotilla:portal:batch');
const ackChannel = channel('flotilla:portal:ack');

/** What ingress needs of the rest of the portal. */
export interface IngressHost {
  readonly routing: Routing;
  readonly pause: PauseState;
  /** The spool side, when the stream has a spool. */
  readonly staging: Staging | null;
  readonly counters: PortalCounters;
  /** The cancellations in force: asked once a batch whether any is. */
  readonly cancels: Cancels;
  /** Records held in the portal now, and their bytes. */
  queued(): number;
  queuedBytes(): number;
  /** Slots whose backlog is past max_slot_bytes now. */
  slotsFull(): number;
  readonly memory: MemoryLimits;
  /** An accepted batch whose records go to the slots from memory: cut it and place its parts. */
  deliver(batch: InBatch, body: Buffer, index: RecordIndex, plan: BatchPlan): void;
}

export class Ingress {
  /** Refusals that are flow control (during a pause), counted, never logged. */
  readonly flowCounts = { PAUSED: 0, RESEND: 0 };
  /** Times reading stopped because the records held passed max_queued_bytes. */
  queuedBytesStops = 0;
  private readonly sock: IngressSocket;
  /** Routing ids that claim to be a forwarder's: whether each proved it (fromForwarder). */
  private readonly forwarders = new Map<string, boolean>();
  /** Senders refused while paused, by routing id: told RESUME when the pause ends. */
  private readonly pausedSenders = new Map<string, Buffer>();
  /**
   * Per sender, the seq of its first batch refused with PAUSED, or with WRONG_OWNER while this
   * portal lags behind the sender's map (the sender will bring it back here). Until that batch
   * comes back its later batches are refused (RESEND), so none overtakes it: per-key order holds
   * across a pause and an epoch switch. Forgotten after OWED_TTL_MS, so a batch that never comes
   * back cannot block a sender for good.
   */
  private readonly owed = new Map<string, { seq: number; at: number }>();
  /** Batches accepted and not yet acknowledged, per sender. */
  private readonly inflight = new Map<string, number>();
  private readonly index = new RecordIndex();
  private resumeReading: (() => void) | null = null;
  private closed = false;
  /** Set by stopTaking: the portal is stopping and takes nothing new (see the top of this file). */
  private stopping = false;
  /** While stopping: when the last sender message was read, or the stop began (performance.now()). */
  lastReadAt = 0;

  constructor(
    maxBatchBytes: number,
    private readonly maxQueued: number,
    private readonly host: IngressHost,
    private readonly causes: CauseCounter,
    private readonly log: Logger,
  ) {
    this.sock = new IngressSocket(maxBatchBytes, host.memory.maxUnreadReplies, causes, log);
  }

  /**
   * Binds the TCP endpoint, after `prepare` (CURVE and the connection cap, src/transport/curve.ts)
   * set the socket up (again for the socket of each reset); returns the port bound.
   */
  bind(endpoint: string, fallbackPort: number, prepare?: (socket: zmq.Router) => Promise<unknown>): Promise<number> {
    return this.sock.bind(endpoint, fallbackPort, prepare);
  }

  /** Replies dropped: their connection had max_unread_replies unread (REPLIES_DROPPED). */
  get repliesDropped(): number {
    return this.sock.repliesDropped;
  }

  /**
   * Drops every sender connection (the memory guard's last resort, limits.ts; ingress-socket.ts):
   * the old loop ends with its socket, a new one reads the new socket.
   */
  reset(): void {
    if (this.closed) return;
    void this.sock.reset();
    this.resumeReading?.();
    void this.loop();
  }

  /**
   * True if the routing id is a forwarder's (`fwd/<server>`), whose records go ahead in the
   * spool. With keys, only one that carries its server's proof (src/transport/proof.ts): a
   * sender cannot claim the place by naming itself so. Answers are kept per routing id.
   */
  private fromForwarder(senderKey: string): boolean {
    if (!senderKey.startsWith(`${FORWARD_IDENTITY}/`)) return false;
    const map = this.host.routing.map;
    if (!map.security.curve) return true;
    let known = this.forwarders.get(senderKey);
    if (known === undefined) {
      const server = map.servers.find((s) => senderKey.startsWith(`${FORWARD_IDENTITY}/${s.name}/`));
      known = server !== undefined && provesIdentity(senderKey, `${FORWARD_IDENTITY}/${server.name}`, server.publicKey!, ownKey());
      if (this.forwarders.size >= 10_000) this.forwarders.clear();
      this.forwarders.set(senderKey, known);
    }
    return known;
  }

  /** Starts reading batches. */
  start(): void {
    void this.loop();
  }

  /** True while reading waits for records to drain (or for room in the spool). */
  get readingPaused(): boolean {
    return this.resumeReading !== null;
  }

  /** Lets a read loop that waits for room go on. */
  wake(): void {
    this.resumeReading?.();
  }

  /** The portal is stopping: from now on batches are refused as for a pause (see the top). */
  stopTaking(): void {
    this.stopping = true;
    this.lastReadAt = performance.now();
    this.resumeReading?.();
  }

  /** Batches accepted and not yet acknowledged, of every sender. */
  get unacked(): number {
    let n = 0;
    for (const v of this.inflight.values()) n += v;
    return n;
  }

  /** Replies queued and not yet handed to the socket. */
  get unsent(): number {
    return this.sock.unsent;
  }

  /**
   * Closes after the replies queued are handed to the socket (within `lingerMs`), and lets
   * ZeroMQ send them within `lingerMs` more, so no ACK of a processed batch is lost with the socket.
   */
  async closeGracefully(lingerMs: number): Promise<void> {
    await this.sock.handedOver(lingerMs);
    this.close(lingerMs);
  }

  close(lingerMs = 0): void {
    this.closed = true;
    this.resumeReading?.();
    this.sock.close(lingerMs);
  }

  /** Handles one sender message: refuse it, or accept it (staged, or on its way to the slots). */
  handle(msg: Buffer[]): void {
    if (!batchChannel.hasSubscribers) return this.onMessage(msg);
    const start = performance.now();
    this.onMessage(msg);
    batchChannel.publish({ seq: msg[1]?.length === 16 ? msg[1].readUInt32BE(4) : 0, count: msg[1]?.length === 16 ? msg[1].readUInt32BE(12) : 0, start, end: performance.now() });
  }

  /** Refuses batch `seq` of `sender` with `code`. */
  reject(sender: Buffer, seq: number, code: WireErrorCode, message: string): void {
    // Refusals during a pause are flow control, not errors: counted, never logged.
    if (code === 'PAUSED' || code === 'RESEND') this.flowCounts[code]++;
    else this.causes.count(code, message);
    this.sock.reply([sender, encodeHeader(MessageType.ERROR, seq, this.host.routing.epoch, 0), Buffer.from(code), Buffer.from(message)]);
  }

  /** Every record of `batch` is processed (or, with spool mode always, on disk): ACK it. */
  ack(batch: InBatch): void {
    this.settle(batch);
    this.host.counters.batchesAcked++;
    if (ackChannel.hasSubscribers) ackChannel.publish({ seq: batch.seq, at: performance.now() });
    const header = encodeHeader(MessageType.ACK, batch.seq, this.host.routing.epoch, batch.count);
    // Records dropped by a cancellation: a second frame, their count (docs/protocol.md, ACK).
    if (batch.cancelled > 0) this.sock.reply([batch.sender, header, countFrame(batch.cancelled)]);
    else this.sock.reply([batch.sender, header]);
  }

  /** A batch taken back after it was accepted (its spool write failed): as if never accepted. */
  unaccept(batch: InBatch): void {
    this.host.counters.batchesIn--;
    this.host.counters.recordsIn -= batch.count;
    this.settle(batch);
  }

  /** The pause ended: tells every sender refused meanwhile to resend what it holds. */
  resumeSenders(): void {
    for (const sender of this.pausedSenders.values()) this.sock.reply([sender, encodeHeader(MessageType.RESUME, 0, this.host.routing.epoch, 0)]);
    this.pausedSenders.clear();
  }

  /**
   * A batch holds a key of a bucket this server does not own. The header's epoch says whose map
   * is behind: the sender's (older: WRONG_OWNER, route again by a newer map), this portal's
   * (newer: WRONG_OWNER, and the batch is owed: the sender waits for us and brings it back), or
   * neither (equal: MISROUTED, the sender's hash or map content differs from ours at the same
   * epoch, and resending cannot succeed).
   */
  private redirect(sender: Buffer, header: Header, body: Buffer, index: RecordIndex): void {
    const { routing } = this.host;
    const { seq, epoch } = header;
    const foreign = routing.firstForeign(body, index);
    const where = foreign ? `key ${JSON.stringify(foreign.key.slice(0, 64))} is in bucket ${foreign.bucket}, owned by ${foreign.owner}` : 'a key is in a bucket owned elsewhere';
    const self = routing.map.servers[routing.self]!.name;
    if (epoch === routing.epoch) {
      return this.reject(sender, seq, 'MISROUTED', `${where} at epoch ${epoch}, not ${self}, and the batch was routed by that very epoch: the sender's hash or map differs from this portal's (check it against config/vectors.json); do not resend`);
    }
    const senderKey = sender.toString('latin1');
    if (epoch > routing.epoch && !this.owed.has(senderKey)) this.owed.set(senderKey, { seq, at: Date.now() });
    const what = epoch > routing.epoch ? `this portal is behind your map (epoch ${epoch}); batch ${seq} is owed: send it again (or an empty batch with seq ${seq}) before anything newer` : 'reload the map and route again';
    this.reject(sender, seq, 'WRONG_OWNER', `${where} at epoch ${routing.epoch}, not ${self}; ${what}`);
  }

  private settle(batch: InBatch): void {
    const left = (this.inflight.get(batch.senderKey) ?? 1) - 1;
    if (left === 0) this.inflight.delete(batch.senderKey);
    else this.inflight.set(batch.senderKey, left);
  }

  private loop(): Promise<void> {
    let yieldedAt = performance.now();
    const socket = this.sock.socket;
    return receiveEach(socket, {
      closed: () => this.closed || socket !== this.sock.socket,
      gate: () => {
        // Stopping: keep reading, so every batch is answered (refusals cost nothing).
        if (this.stopping) return null;
        // A message already waiting resolves receive() at once, so under a load that never lets
        // up (a spool acknowledges as soon as it has written) give timers and control a turn.
        if (performance.now() - yieldedAt > INGRESS_SLICE_MS) {
          yieldedAt = performance.now();
          return new Promise((resolve) => setImmediate(resolve));
        }
        const h = this.host;
        const bytesFull = h.queuedBytes() > h.memory.maxQueuedBytes;
        // With a spool a full slot's records go there; without one, reading waits for it.
        if (h.queued() <= this.maxQueued && !bytesFull && !(h.staging ? h.staging.blocked : h.slotsFull() > 0)) return null;
        if (bytesFull) this.queuedBytesStops++;
        let wake = () => {};
        const waiting = new Promise<void>((resolve) => (wake = resolve));
        this.resumeReading = wake;
        // Cleared only if still ours: after a reset the new loop may wait already.
        return waiting.then(() => void (this.resumeReading === wake && (this.resumeReading = null)));
      },
      handle: (msg) => this.handle(msg),
      failed: (err) => this.causes.count('RECEIVE_FAILED', err.message),
      // A bug must not take the portal down with every sender's records in it.
      crashed: (err) => this.log.error({ err }, 'portal: unexpected error handling a batch'),
    });
  }

  private onMessage(msg: Buffer[]): void {
    if (this.stopping) this.lastReadAt = performance.now();
    const sender = msg[0]!;
    const header = decodeHeader(msg[1]);
    if (!header) return this.reject(sender, 0, 'MALFORMED', 'first frame is not a 16-byte Flotilla header');
    const { seq } = header;
    if (header.version !== VERSION) {
      return this.reject(sender, seq, 'UNSUPPORTED_VERSION', `protocol version ${header.version}; this portal speaks ${VERSION}`);
    }
    if (header.type !== MessageType.BATCH) return this.reject(sender, seq, 'MALFORMED', `message type ${header.type} is not BATCH`);
    if (msg.length !== 4) return this.reject(sender, seq, 'MALFORMED', `a BATCH has 3 frames, this one has ${msg.length - 1}`);
    if (seq === 0) return this.reject(sender, seq, 'MALFORMED', 'seq 0 is reserved; number batches from 1');
    const { routing, staging } = this.host;
    const stream = routing.stream;
    const streamName = msg[2]!.toString('utf8');
    if (streamName !== stream.name) {
      return this.reject(sender, seq, 'UNKNOWN_STREAM', `this portal serves stream "${stream.name}", not "${streamName.slice(0, 64)}"`);
    }
    let body = msg[3]!;
    if (body.length > stream.maxBatchBytes) {
      return this.reject(sender, seq, 'TOO_LARGE', `batch body is ${body.length} bytes; the limit is ${stream.maxBatchBytes}`);
    }
    const senderKey = sender.toString('latin1');
    // With a spool, a paused stream still takes batches: they wait on disk until resume. A batch
    // from inside the flow is taken while paused; while stopping, only into a spool.
    if (this.stopping ? !(header.inner && staging) : this.host.pause.paused && !staging && !header.inner) {
      if (!this.owed.has(senderKey)) this.owed.set(senderKey, { seq, at: Date.now() });
      this.pausedSenders.set(senderKey, sender);
      const why = this.stopping ? `the ${stream.name} portal is stopping; hold the batch and send it again to the next one` : `stream ${stream.name} is paused; hold the batch until RESUME`;
      return this.reject(sender, seq, 'PAUSED', why);
    }
    const owed = this.owed.get(senderKey);
    if (owed !== undefined) {
      if (owed.seq !== seq && (this.host.pause.paused || Date.now() - owed.at < OWED_TTL_MS)) {
        return this.reject(sender, seq, 'RESEND', `batch ${owed.seq}, refused earlier, must come first (or an empty batch with its seq, if its records went elsewhere); resend held batches in order`);
      }
      this.owed.delete(senderKey);
    }
    const inflight = this.inflight.get(senderKey) ?? 0;
    if (inflight >= stream.window) {
      return this.reject(sender, seq, 'WINDOW_EXCEEDED', `${inflight} batches unacknowledged; the window is ${stream.window}`);
    }
    const index = this.index;
    if (!index.scan(body, header.count)) return this.reject(sender, seq, 'MALFORMED', index.error);
    let cancelled = 0;
    if (this.host.cancels.active) {
      const f = this.host.cancels.filter(body, index.count);
      if (f) {
        cancelled = f.dropped;
        body = f.body;
        index.scan(body, f.count);
      }
    }
    const plan = routing.route(body, index);
    if (!plan) return this.redirect(sender, header, body, index);
    const count = plan.count;
    let modes: Uint8Array | null = null;
    let staged: WriteResult | null = null;
    if (staging && count > 0) {
      modes = staging.laneModes(plan, this.fromForwarder(senderKey));
      if (modes) {
        try {
          staged = staging.stage(body, index, plan, modes);
        } catch (err) {
          if (!(err instanceof SpoolFullError)) throw err;
          return staging.refused(msg, seq, err, false);
        }
      }
    }
    this.host.counters.batchesIn++;
    this.host.counters.recordsIn += count + cancelled;
    this.inflight.set(senderKey, inflight + 1);
    const batch: InBatch = { sender, senderKey, seq, count: count + cancelled, remaining: 0, cancelled };
    // Written, with every batch staged in this turn of the event loop, at the group commit.
    if (staged) return staging!.keep(msg, batch, body, index, plan, modes!, staged);
    if (count > 0) this.host.deliver(batch, body, index, plan);
    if (batch.remaining === 0) this.ack(batch);
  }
}
