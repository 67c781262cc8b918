/**
 * The portal: the one way in for a stream's records on a server.
 *
 *   senders --tcp ROUTER--> portal --ipc ROUTER--> component slots 0..n-1
 *
 * Each BATCH is checked, its records' keys hashed to buckets, and the records split into one
 * DELIVER per slot (order within a slot, and so within a key, is the order of arrival). A batch
 * is acknowledged to its sender only when every slot has said DONE for its part. Memory is
 * bounded three ways: each sender may have at most `window` batches unacknowledged, each slot at
 * most `slotWindow` deliveries in flight, and when more than `maxQueuedRecords` wait in the
 * portal it stops reading from senders until the slots catch up.
 *
 * With a spool (src/spool.ts, docs/delivery.md) a slot's records may go to disk instead, and be
 * read back in order: while the stream is paused or the slot is dead, missing or full (`spill`),
 * and always written before the ACK (`always`). planLanes decides per batch, flushStaged writes
 * (group commit), feed reads back, forwardLoop sends what moved to another server.
 */
import { existsSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import { RecordIndex } from '../protocol/envelope';
import { FlotillaError, type WireErrorCode } from '../errors';
import { fnv1a32, slotOf } from '../map/bucket';
import { CauseCounter, type Logger } from '../log';
import { type FlotillaMap, type MapStream } from '../map/types';
import { loadMap } from '../map/load';
import { portalPort, serverOf, slotCount, streamOf } from '../map/lookup';
import { Outbox } from '../transport/outbox';
import { type ComponentBeacon, DEAD_AFTER_BEATS, type PortalBeacon, type SlotBeacon, type SlotState, type SpoolBeacon } from '../protocol/beacons';
import { agentBeaconEndpoint, controlEndpoint, ensureRunDir, pauseFile, slotsEndpoint } from '../protocol/endpoints';
import { decodeHeader, encodeHeader, MessageType, VERSION } from '../protocol/wire';
import { type ReadPos, Spool, SpoolFullError, type SpoolStats, type WriteResult } from '../spool/spool';
import { Sender } from '../sender/sender';

export const DEFAULT_SLOT_WINDOW = 4;
export const DEFAULT_MAX_QUEUED_RECORDS = 200_000;
/** How long a sender's refused batch is waited for before its later batches are taken anyway. */
export const OWED_TTL_MS = 10_000;
/** Bytes and records read back from the spool per delivery, at most. */
const REPLAY_BYTES = 256 << 10;
export const REPLAY_RECORDS = 2048;
/** The routing id a portal's spool forwarder starts with (see Sender's `identity`). */
export const FORWARD_IDENTITY = 'fwd';
/** Bytes of spooled records forwarded to new owners before waiting for their ACKs. */
const FORWARD_ROUND_BYTES = 8 << 20;
/** After a forwarded batch was refused, how long before forwarding is tried again. */
const FORWARD_RETRY_MS = 1000;
/** Under load, how often staged batches are written to the spool (see scheduleFlush). */
const GROUP_COMMIT_MS = 120;
/** ...or sooner, once this much is staged. */
const GROUP_COMMIT_BYTES = 16 << 20;
/** Longest the ingress loop runs before it lets the rest of the event loop in. */
const INGRESS_SLICE_MS = 10;
/** While blocked on a full spool, how often the parked batch is tried again. */
const BLOCKED_RETRY_MS = 50;

export interface PortalOptions {
  map: FlotillaMap;
  /** The map's file, read again when the agent switches the portal to a new epoch. */
  mapFile?: string;
  /** This server's name in the map. */
  server: string;
  stream: string;
  /** Overrides the map's run_dir (tests, the demo). */
  runDir?: string;
  /** Overrides the stream's spool dir from the map (tests, the bench). */
  spoolDir?: string;
  /** Address to bind the TCP port on; default the server's host from the map. */
  bindHost?: string;
  /** Overrides the port from the map; 0 lets the OS choose (read `port` after start). */
  port?: number;
  slotWindow?: number;
  maxQueuedRecords?: number;
  log: Logger;
}

/** A sender's batch, waiting for its slots (in spool mode `always`, acknowledged once written). */
interface InBatch {
  sender: Buffer;
  senderKey: string;
  seq: number;
  count: number;
  remaining: number;
}

/** One slot's part of a batch, or records read back from the spool. */
interface Delivery {
  id: number;
  /** The batch to acknowledge when every part is done; null when it was acknowledged on write. */
  batch: InBatch | null;
  slot: Slot;
  body: Buffer;
  count: number;
  sentAt: number;
  /**
   * Spooled records in this delivery, as (bucket, generation, end offset, records) quads: once
   * it is done, each bucket's spool cursor moves past them.
   */
  marks: number[] | null;
}

/**
 * Records of buckets this server took over in an epoch switch, held until their old owner says
 * it has drained them, so that no bucket is ever processed by two servers at once.
 */
interface HoldGroup {
  /** The old owner (server name). */
  from: string;
  buckets: number;
  /** Deliveries made while held, in arrival order; released to their slots in that order. */
  deliveries: Delivery[];
}

/** A batch staged in the spool, waiting for the next group commit (see scheduleFlush). */
interface Staged {
  msg: Buffer[];
  batch: InBatch;
  /** Its deliveries and their lanes, handed on once written. */
  placed: Delivery[];
  lanes: number[];
  /** (bucket, generation, offset, records) quads to mark read in the spool once written. */
  reads: number[];
}

/** A local component slot as the portal sees it. */
class Slot {
  routingId: Buffer | null = null;
  pid = 0;
  /** Waiting to be sent, in order. */
  pending: Delivery[] = [];
  /** Sent, waiting for DONE, in order of sending. */
  inflight = new Map<number, Delivery>();
  queuedRecords = 0;
  inflightRecords = 0;
  processed = 0;
  /** Mean time from DELIVER to DONE, ms, smoothed. */
  serviceMs = 0;
  registrations = 0;
  /** Date.now() when the component was last heard from (READY, DONE or HEARTBEAT); 0 never. */
  heardAt = 0;
  beacon: ComponentBeacon | null = null;
  /**
   * The slot's records go to the spool (it was dead, missing or full, or the stream paused) and
   * are read back from there in order, until the spool has none of them left to read.
   */
  spooling = false;
  /** Round robin over the slot's buckets when reading back. */
  nextBucket = 0;
  /** The state at the last beacon, to log the moment a component goes silent or comes back. */
  lastState: SlotState = 'missing';
  constructor(readonly index: number) {}
}

/** A request on the portal's control socket (JSON). */
export type ControlRequest =
  | { cmd: 'ping' | 'stats' | 'beacon' | 'pause' | 'resume' }
  | { cmd: 'switch'; epoch: number }
  | { cmd: 'drained' }
  | { cmd: 'release'; from: string; epoch: number };

/** What `stats()` returns; the demo and `portalctl status` read it over the control socket. */
export interface PortalStats {
  server: string;
  stream: string;
  epoch: number;
  port: number;
  uptimeMs: number;
  recordsIn: number;
  recordsOut: number;
  batchesIn: number;
  batchesAcked: number;
  /** Spooled records sent on to a bucket's new owner after a map change. */
  recordsForwarded: number;
  queuedRecords: number;
  readingPaused: boolean;
  /** The stream is paused: batches are refused with PAUSED until resume (with a spool, spooled). */
  paused: boolean;
  /** The spool, when the stream has one; `blocked` when a batch waits for room in it. */
  spool: (SpoolStats & { blocked: boolean }) | null;
  rates: { inPerSec: number; outPerSec: number };
  errors: Record<string, number>;
  slots: {
    slot: number;
    connected: boolean;
    pid: number;
    queuedRecords: number;
    inflightRecords: number;
    processed: number;
    serviceMs: number;
    registrations: number;
    /** As in beacons: idle, busy, dead (silent for 3 heartbeats) or missing. */
    state: SlotState;
    spooling: boolean;
  }[];
}

export class Portal {
  private map: FlotillaMap;
  private stream: MapStream;
  private selfIndex: number;
  private readonly log: Logger;
  private readonly runDir: string;
  private readonly slotWindow: number;
  private readonly maxQueued: number;
  private readonly slots: Slot[];
  private readonly ingress: zmq.Router;
  private readonly egress = new zmq.Router({ linger: 0, mandatory: true, sendHighWaterMark: 100_000 });
  private readonly control = new zmq.Reply({ linger: 0 });
  /** Beacons to the agent; dropped, not queued, while no agent listens. */
  private readonly beacons = new zmq.Push({ linger: 0, immediate: true, sendHighWaterMark: 4, sendTimeout: 0 });
  private beaconTimer: NodeJS.Timeout | null = null;
  private inAtLastBeat = 0;
  private paused = false;
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
  private readonly ingressOut: Outbox;
  private readonly egressOut: Outbox;
  private readonly index = new RecordIndex();
  private readonly deliveries = new Map<number, Delivery>();
  private readonly senderInflight = new Map<string, number>();
  private readonly causes: CauseCounter;
  private nextDelivery = 1;
  private queued = 0;
  private resumeReading: (() => void) | null = null;
  private closed = false;
  private startedAt = Date.now();
  private rateTimer: NodeJS.Timeout | null = null;
  private lastIn = 0;
  private lastOut = 0;
  private rateIn = 0;
  private rateOut = 0;
  /** The TCP port bound (useful when the OS chose it). */
  port = 0;
  private counters = { recordsIn: 0, recordsOut: 0, batchesIn: 0, batchesAcked: 0, recordsForwarded: 0 };
  private flowCounts = { PAUSED: 0, RESEND: 0 };
  private slotOfRecord = new Uint16Array(1024);
  /** holdOf[bucket]: 0, or 1 + the index in `holds` of the group holding the bucket. */
  private holdOf: Uint8Array;
  private holds: HoldGroup[] = [];
  /** Deliveries with ids below this were made before the last epoch switch. */
  private drainMark = 0;
  /** Releases that arrived before this portal switched to their epoch. */
  private earlyReleases = new Map<number, Set<string>>();
  private slotBytes: Uint32Array;
  private slotCounts: Uint32Array;
  private bucketOfRecord = new Uint32Array(1024);
  /** Per record: 1 when it goes to the spool. */
  private takeRecord = new Uint8Array(1024);
  /** Per lane, for the batch at hand: see planLanes. */
  private laneMode = new Uint8Array(0);
  private readonly spool: Spool | null;
  private readonly always: boolean;
  /** A batch waiting for room in a full spool (when_full: block); nothing is read meanwhile. */
  private blocked: Buffer[][] = [];
  /** Batches staged in the spool since the last group commit, written by flushStaged. */
  private staged: Staged[] = [];
  private flushSoon: NodeJS.Timeout | null = null;
  private flushedAt = 0;
  private blockedTimer: NodeJS.Timeout | null = null;
  /** Records a slot may hold in memory before its records go to the spool (spill). */
  private readonly slotFull: number;
  /** Sends spooled records of buckets this server no longer owns to their new owners. */
  private forwarder: Sender | null = null;
  private forwarding: Promise<void> | null = null;
  private forwardRefused = 0;
  private readonly heldIndex = new RecordIndex();

  constructor(private readonly opts: PortalOptions) {
    this.map = opts.map;
    this.stream = streamOf(opts.map, opts.stream);
    const server = serverOf(opts.map, opts.server);
    this.selfIndex = opts.map.servers.indexOf(server);
    this.log = opts.log;
    this.runDir = opts.runDir ?? opts.map.runDir;
    this.slotWindow = opts.slotWindow ?? DEFAULT_SLOT_WINDOW;
    this.maxQueued = opts.maxQueuedRecords ?? DEFAULT_MAX_QUEUED_RECORDS;
    const n = slotCount(server, this.stream);
    // A frame up to 4x the batch limit is read and answered TOO_LARGE; beyond that libzmq drops
    // the connection without reading it, so a hostile sender cannot make the portal buffer
    // unbounded frames.
    this.ingress = new zmq.Router({
      linger: 0,
      receiveHighWaterMark: 1000,
      sendHighWaterMark: 100_000,
      maxMessageSize: 4 * this.stream.maxBatchBytes + 65536,
    });
    this.slots = Array.from({ length: n }, (_, i) => new Slot(i));
    this.slotBytes = new Uint32Array(n);
    this.slotCounts = new Uint32Array(n);
    this.holdOf = new Uint8Array(this.stream.buckets);
    this.ingressOut = new Outbox(this.ingress, (err) => this.causes.count('REPLY_FAILED', err.message));
    this.egressOut = new Outbox(this.egress, (err) => this.causes.count('SLOT_UNREACHABLE', err.message));
    this.causes = new CauseCounter(this.log, `portal ${opts.stream}`);
    const sp = { ...this.stream.spool, dir: opts.spoolDir ?? this.stream.spool.dir };
    // A stream whose spool was turned off may still have records on disk: they are acknowledged,
    // so this run replays them, as with spill, rather than strand them.
    const leftOver = sp.mode === 'off' && hasSegments(join(sp.dir, opts.server, this.stream.name));
    if (leftOver) {
      this.log.warn(
        { dir: join(sp.dir, opts.server, this.stream.name) },
        `portal ${opts.stream}: the stream's spool is off, but its spool directory holds records; this run replays them (as spill)`,
      );
    }
    this.spool =
      sp.mode === 'off' && !leftOver
        ? null
        : new Spool({ ...sp, mode: leftOver ? 'spill' : sp.mode }, opts.server, this.stream.name, this.stream.buckets, this.log, (cause, example) =>
            this.causes.count(cause, example),
          );
    this.always = sp.mode === 'always';
    this.slotFull = Math.max(1, Math.floor(this.maxQueued / (2 * n)));
  }

  /** Binds the sockets and starts serving. Fails if another portal serves this stream here. */
  async start(): Promise<void> {
    ensureRunDir(this.runDir);
    const ctl = controlEndpoint(this.runDir, this.stream.name);
    await this.refuseIfRunning(ctl);
    const host = this.opts.bindHost ?? this.map.servers[this.selfIndex]!.host;
    const port = this.opts.port ?? portalPort(this.map.servers[this.selfIndex]!, this.stream);
    await this.ingress.bind(`tcp://${host}:${port === 0 ? '*' : port}`);
    this.port = Number(/:(\d+)$/.exec(this.ingress.lastEndpoint ?? '')?.[1] ?? port);
    await this.egress.bind(slotsEndpoint(this.runDir, this.stream.name));
    await this.control.bind(ctl);
    this.paused = existsSync(pauseFile(this.runDir, this.stream.name));
    this.spool?.open();
    if (this.spool && this.spool.unreadTotal > 0) for (const slot of this.slots) slot.spooling = true;
    this.forwardForeign();
    this.beacons.connect(agentBeaconEndpoint(this.runDir));
    this.beaconTimer = setInterval(() => this.sendBeacon(), this.map.heartbeatMs);
    this.beaconTimer.unref();
    this.startedAt = Date.now();
    this.rateTimer = setInterval(() => this.sampleRates(), 1000);
    this.rateTimer.unref();
    void this.ingressLoop();
    void this.egressLoop();
    void this.controlLoop();
    this.log.info(
      { stream: this.stream.name, port: this.port, slots: this.slots.length, epoch: this.map.epoch },
      `portal ${this.stream.name} listening on ${host}:${this.port}, ${this.slots.length} slots${this.paused ? ' (paused)' : ''}`,
    );
  }

  /** Closes every socket. Records not yet acknowledged are the senders' to resend. */
  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.rateTimer) clearInterval(this.rateTimer);
    if (this.beaconTimer) clearInterval(this.beaconTimer);
    this.causes.stop();
    this.ingressOut.close();
    this.egressOut.close();
    this.resumeReading?.();
    if (this.blockedTimer) clearTimeout(this.blockedTimer);
    if (this.flushSoon) clearTimeout(this.flushSoon);
    this.ingress.close();
    this.egress.close();
    this.control.close();
    this.beacons.close();
    this.forwarder?.close();
    this.spool?.close();
  }

  /** Counters, rates and per-slot state, as `portalctl status` shows them. */
  stats(): PortalStats {
    return {
      server: this.opts.server,
      stream: this.stream.name,
      epoch: this.map.epoch,
      port: this.port,
      uptimeMs: Date.now() - this.startedAt,
      ...this.counters,
      queuedRecords: this.queued,
      readingPaused: this.resumeReading !== null,
      paused: this.paused,
      spool: this.spool ? { ...this.spool.stats(), blocked: this.blocked.length > 0 } : null,
      rates: { inPerSec: this.rateIn, outPerSec: this.rateOut },
      errors: { ...this.causes.totals },
      slots: this.slots.map((s) => ({
        slot: s.index,
        connected: s.routingId !== null,
        pid: s.pid,
        queuedRecords: s.queuedRecords,
        inflightRecords: s.inflightRecords,
        processed: s.processed,
        serviceMs: Math.round(s.serviceMs * 1000) / 1000,
        registrations: s.registrations,
        state: this.slotState(s, Date.now()),
        spooling: s.spooling,
      })),
    };
  }

  private sampleRates(): void {
    this.rateIn = this.counters.recordsIn - this.lastIn;
    this.rateOut = this.counters.recordsOut - this.lastOut;
    this.lastIn = this.counters.recordsIn;
    this.lastOut = this.counters.recordsOut;
  }

  private async refuseIfRunning(ctl: string): Promise<void> {
    // A second bind to an ipc path silently takes it from the first process, so ask first.
    const probe = new zmq.Request({ linger: 0, receiveTimeout: 300, sendTimeout: 300 });
    probe.connect(ctl);
    try {
      await probe.send('{"cmd":"ping"}');
      await probe.receive();
      throw new FlotillaError('PORTAL_ALREADY_RUNNING', `a portal for stream ${this.stream.name} already serves ${ctl}`);
    } catch (err) {
      if (err instanceof FlotillaError) throw err;
      // No answer: no portal there (a stale socket file is simply bound over).
    } finally {
      probe.close();
    }
  }

  // ---- senders -------------------------------------------------------------------------

  private async ingressLoop(): Promise<void> {
    let yieldedAt = performance.now();
    while (!this.closed) {
      // A message already waiting resolves receive() at once, so under a load that never lets up
      // (a spool acknowledges as soon as it has written) give timers and control a turn.
      if (performance.now() - yieldedAt > INGRESS_SLICE_MS) {
        await new Promise((resolve) => setImmediate(resolve));
        yieldedAt = performance.now();
      }
      if (this.queued > this.maxQueued || this.blocked.length > 0) {
        await new Promise<void>((resolve) => (this.resumeReading = resolve));
        this.resumeReading = null;
        continue;
      }
      let msg: Buffer[];
      try {
        msg = await this.ingress.receive();
      } catch (err) {
        if (this.closed) return;
        this.causes.count('RECEIVE_FAILED', (err as Error).message);
        continue;
      }
      try {
        this.onSenderMessage(msg);
      } catch (err) {
        // A bug must not take the portal down with every sender's records in it.
        this.log.error({ err }, 'portal: unexpected error handling a batch');
      }
    }
  }

  private reject(sender: Buffer, seq: number, code: WireErrorCode, message: string): void {
    // Refusals during a pause are flow control, not errors: counted, never logged.
    if (code === 'PAUSED' || code === 'RESEND') this.flowCounts[code]++;
    else this.causes.count(code, message);
    this.ingressOut.push([sender, encodeHeader(MessageType.ERROR, seq, this.map.epoch, 0), Buffer.from(code), Buffer.from(message)]);
  }

  private onSenderMessage(msg: Buffer[]): void {
    const sender = msg[0]!;
    const header = decodeHeader(msg[1]);
    if (!header) return this.reject(sender, 0, 'MALFORMED', 'first frame is not a 16-byte Flotilla header');
    const { seq } = header;
    if (header.version !== VERSION) {
      return this.reject(sender, seq, 'UNSUPPORTED_VERSION', `protocol version ${header.version}; this portal speaks ${VERSION}`);
    }
    if (header.type !== MessageType.BATCH) return this.reject(sender, seq, 'MALFORMED', `message type ${header.type} is not BATCH`);
    if (msg.length !== 4) return this.reject(sender, seq, 'MALFORMED', `a BATCH has 3 frames, this one has ${msg.length - 1}`);
    const streamName = msg[2]!.toString('utf8');
    if (streamName !== this.stream.name) {
      return this.reject(sender, seq, 'UNKNOWN_STREAM', `this portal serves stream "${this.stream.name}", not "${streamName.slice(0, 64)}"`);
    }
    const body = msg[3]!;
    if (body.length > this.stream.maxBatchBytes) {
      return this.reject(sender, seq, 'TOO_LARGE', `batch body is ${body.length} bytes; the limit is ${this.stream.maxBatchBytes}`);
    }
    const senderKey = sender.toString('latin1');
    // With a spool, a paused stream still takes batches: they wait on disk until resume.
    if (this.paused && !this.spool) {
      if (!this.owed.has(senderKey)) this.owed.set(senderKey, { seq, at: Date.now() });
      this.pausedSenders.set(senderKey, sender);
      return this.reject(sender, seq, 'PAUSED', `stream ${this.stream.name} is paused; hold the batch until RESUME`);
    }
    const owed = this.owed.get(senderKey);
    if (owed !== undefined) {
      if (owed.seq !== seq && (this.paused || Date.now() - owed.at < OWED_TTL_MS)) {
        return this.reject(sender, seq, 'RESEND', `batch ${owed.seq}, refused earlier, must come first; resend held batches in order`);
      }
      this.owed.delete(senderKey);
    }
    const inflight = this.senderInflight.get(senderKey) ?? 0;
    if (inflight >= this.stream.window) {
      return this.reject(sender, seq, 'WINDOW_EXCEEDED', `${inflight} batches unacknowledged; the window is ${this.stream.window}`);
    }
    const index = this.index;
    if (!index.scan(body, header.count)) return this.reject(sender, seq, 'MALFORMED', index.error);
    if (!this.route(body, index)) {
      // Routed by a newer map than ours: the sender waits for us and brings the batch back.
      if (header.epoch > this.map.epoch && !this.owed.has(senderKey)) this.owed.set(senderKey, { seq, at: Date.now() });
      return this.reject(
        sender,
        seq,
        'WRONG_OWNER',
        `batch holds keys of buckets this server (${this.opts.server}) does not own at epoch ${this.map.epoch}; reload the map and route again`,
      );
    }
    const count = index.count;
    let staged: WriteResult | null = null;
    if (this.spool && count > 0 && this.planLanes(count, senderKey.startsWith(FORWARD_IDENTITY))) {
      try {
        staged = this.spool.stage(body, index.starts, this.bucketOfRecord, count, this.takeRecord);
      } catch (err) {
        if (!(err instanceof SpoolFullError)) throw err;
        return this.spoolRefused(msg, seq, err, false);
      }
    }
    this.counters.batchesIn++;
    this.counters.recordsIn += count;
    this.senderInflight.set(senderKey, inflight + 1);
    const batch: InBatch = { sender, senderKey, seq, count, remaining: 0 };
    if (staged) {
      // Written, with every batch staged in this turn of the event loop, by flushStaged.
      const entry: Staged = { msg, batch, placed: [], lanes: [], reads: [] };
      this.split(body, index, batch, entry, staged);
      this.staged.push(entry);
      this.scheduleFlush();
      return;
    }
    if (count > 0) this.split(body, index, batch, null, null);
    if (batch.remaining === 0) this.ack(batch);
  }

  /**
   * Writes the batches staged in this turn of the event loop, one write per bucket for all of
   * them; then sends their deliveries on and acknowledges each batch whose records are all on
   * disk. If the write fails, the batches are taken back whole (nothing of them was delivered)
   * and refused or parked, as the stream's when_full says.
   */
  private flushStaged(): void {
    if (this.flushSoon) clearTimeout(this.flushSoon);
    this.flushSoon = null;
    const entries = this.staged;
    if (entries.length === 0) return;
    this.staged = [];
    const spool = this.spool!;
    this.flushedAt = performance.now();
    try {
      spool.flush();
    } catch (err) {
      if (!(err instanceof SpoolFullError)) throw err;
      for (const e of entries) this.unstage(e);
      for (let i = entries.length - 1; i >= 0; i--) this.spoolRefused(entries[i]!.msg, entries[i]!.batch.seq, err, true);
      return;
    }
    for (const e of entries) {
      const r = e.reads;
      for (let i = 0; i < r.length; i += 4) spool.markRead(r[i]!, r[i + 1]!, r[i + 2]!, r[i + 3]!);
      for (let i = 0; i < e.placed.length; i++) this.place(e.placed[i]!, e.lanes[i]!);
      if (e.batch.remaining === 0) this.ack(e.batch);
    }
    for (const slot of this.slots) if (slot.spooling) this.feed(slot);
  }

  /**
   * Group commit: the first batch after a quiet spell is written at the end of this turn of the
   * event loop; under load, writes come every GROUP_COMMIT_MS, or once half a sender window of
   * batches is staged, each taking all the batches staged since (a write per bucket costs about
   * the same for one record as for a hundred).
   */
  private scheduleFlush(): void {
    // Half a sender window staged: write now, so no sender waits on a full window for the timer.
    if (this.spool!.stagedTotalBytes >= GROUP_COMMIT_BYTES || this.staged.length >= Math.max(1, this.stream.window >> 1)) return this.flushStaged();
    if (this.flushSoon) return;
    const wait = GROUP_COMMIT_MS - (performance.now() - this.flushedAt);
    this.flushSoon = setTimeout(() => this.flushStaged(), Math.max(0, wait));
  }

  /** Takes a staged batch back: its deliveries are dropped and it counts as never accepted. */
  private unstage(e: Staged): void {
    for (const d of e.placed) {
      this.deliveries.delete(d.id);
      d.slot.queuedRecords -= d.count;
      this.queued -= d.count;
    }
    this.counters.batchesIn--;
    this.counters.recordsIn -= e.batch.count;
    const left = (this.senderInflight.get(e.batch.senderKey) ?? 1) - 1;
    if (left === 0) this.senderInflight.delete(e.batch.senderKey);
    else this.senderInflight.set(e.batch.senderKey, left);
  }

  /** Hands a new delivery to its slot, or to its hold group while its buckets are held. */
  private place(d: Delivery, lane: number): void {
    const nSlots = this.slots.length;
    if (lane >= nSlots) {
      this.holds[Math.floor(lane / nSlots) - 1]!.deliveries.push(d);
      return;
    }
    d.slot.pending.push(d);
    this.pump(d.slot);
  }

  /**
   * Decides, per lane, where this batch's records go (laneMode): 0 memory only, acknowledged when
   * processed; 1 the spool only, read back later (a slot that is spooling, because the stream is
   * paused or the slot is dead, missing or full; and records forwarded from a bucket's old owner
   * while the bucket is held); 2 (mode always) the spool and memory. Marks the records to write
   * in takeRecord, takes lanes of mode 1 out of the memory split, and says whether to write.
   */
  private planLanes(count: number, forwarded: boolean): boolean {
    const nSlots = this.slots.length;
    const counts = this.slotCounts;
    const lanes = counts.length;
    if (this.laneMode.length < lanes) this.laneMode = new Uint8Array(lanes);
    const mode = this.laneMode;
    const now = Date.now();
    let write = false;
    for (let s = 0; s < lanes; s++) {
      mode[s] = 0;
      if (counts[s] === 0) continue;
      if (s >= nSlots) {
        mode[s] = forwarded ? 1 : 0;
      } else {
        const slot = this.slots[s]!;
        if (!slot.spooling && (this.paused || !this.canDeliver(slot, now) || slot.queuedRecords >= this.slotFull)) slot.spooling = true;
        mode[s] = slot.spooling ? 1 : this.always ? 2 : 0;
      }
      if (mode[s] !== 0) write = true;
    }
    if (!write) return false;
    if (this.takeRecord.length < count) this.takeRecord = new Uint8Array(this.slotOfRecord.length);
    const take = this.takeRecord;
    const slotOfRecord = this.slotOfRecord;
    for (let i = 0; i < count; i++) take[i] = mode[slotOfRecord[i]!] === 0 ? 0 : 1;
    for (let s = 0; s < lanes; s++) if (mode[s] === 1) counts[s] = 0;
    return true;
  }

  /**
   * The spool has no room for a batch: refuse it (when_full: reject), or park it and read nothing
   * more until there is room (block); `first` puts it ahead of those parked already.
   */
  private spoolRefused(msg: Buffer[], seq: number, err: SpoolFullError, first: boolean): void {
    const sender = msg[0]!;
    if (this.stream.spool.whenFull === 'reject') return this.reject(sender, seq, 'SPOOL_FULL', err.message);
    this.causes.count('SPOOL_FULL', `${err.message}; senders wait until there is room (when_full: block)`);
    if (first) this.blocked.unshift(msg);
    else this.blocked.push(msg);
    this.blockedTimer ??= setTimeout(() => this.retryBlocked(), BLOCKED_RETRY_MS);
  }

  /** Tries the parked batches again, in order, until one is parked again. */
  private retryBlocked(): void {
    this.blockedTimer = null;
    if (this.closed) return;
    const queue = this.blocked;
    this.blocked = [];
    for (let i = 0; i < queue.length; i++) {
      try {
        this.onSenderMessage(queue[i]!);
      } catch (err) {
        this.log.error({ err }, 'portal: unexpected error handling a batch');
      }
      if (this.blocked.length > 0) {
        this.blocked.push(...queue.slice(i + 1));
        return;
      }
    }
    if (this.queued <= this.maxQueued) this.resumeReading?.();
  }

  /** A slot that is registered and has been heard from lately. */
  private canDeliver(slot: Slot, now: number): boolean {
    return slot.routingId !== null && now - slot.heardAt <= DEAD_AFTER_BEATS * this.map.heartbeatMs;
  }

  /**
   * Reads a spooling slot's records back from the spool, a few deliveries ahead, in order per
   * bucket; once none is left to read, the slot's records go through memory again.
   */
  private feed(slot: Slot): void {
    const spool = this.spool;
    if (!spool || !slot.spooling || this.paused || !this.canDeliver(slot, Date.now())) return;
    const nSlots = this.slots.length;
    const { buckets, owner } = this.stream;
    const per = Math.ceil((buckets - slot.index) / nSlots);
    while (slot.pending.length + slot.inflight.size <= this.slotWindow) {
      let bucket = -1;
      for (let t = 0; t < per; t++) {
        const k = (slot.nextBucket + t) % per;
        const b = slot.index + k * nSlots;
        if (spool.unreadOf(b) > 0 && owner[b] === this.selfIndex && this.holdOf[b] === 0) {
          bucket = b;
          slot.nextBucket = k;
          break;
        }
      }
      if (bucket < 0) {
        // Records staged for the slot's buckets are read back after the write that is coming.
        if (!this.stagedFor(slot)) slot.spooling = false;
        break;
      }
      const r = spool.read(bucket, REPLAY_BYTES, REPLAY_RECORDS);
      if (!r) break;
      const d: Delivery = {
        id: this.nextDelivery++,
        batch: null,
        slot,
        body: r.body,
        count: r.count,
        sentAt: performance.now(),
        marks: [bucket, r.gen, r.off, r.count],
      };
      if (this.nextDelivery > 0xffffffff) this.nextDelivery = 1;
      this.deliveries.set(d.id, d);
      slot.queuedRecords += d.count;
      this.queued += d.count;
      slot.pending.push(d);
    }
    this.pump(slot);
  }

  /** True if records of the slot's buckets are staged in the spool and not yet written. */
  private stagedFor(slot: Slot): boolean {
    const spool = this.spool!;
    if (!spool.hasStaged) return false;
    for (let b = slot.index; b < this.stream.buckets; b += this.slots.length) if (spool.stagedOf(b) > 0) return true;
    return false;
  }

  /** A delivery with spooled records is done: move the buckets' cursors past them. */
  private commitMarks(marks: number[]): void {
    const spool = this.spool!;
    for (let i = 0; i < marks.length; i += 4) spool.commit(marks[i]!, marks[i + 1]!, marks[i + 2]!, marks[i + 3]!);
  }

  /** Computes each record's slot into slotOfRecord; false if a record's bucket is not ours. */
  private route(body: Buffer, index: RecordIndex): boolean {
    const { buckets, owner } = this.stream;
    const nSlots = this.slots.length;
    const self = this.selfIndex;
    const holdOf = this.holdOf;
    if (this.slotOfRecord.length < index.count) {
      this.slotOfRecord = new Uint16Array(index.keyStarts.length);
      this.bucketOfRecord = new Uint32Array(index.keyStarts.length);
    }
    const slotOfRecord = this.slotOfRecord;
    const bucketOfRecord = this.bucketOfRecord;
    const bytes = this.slotBytes.fill(0);
    const counts = this.slotCounts.fill(0);
    for (let i = 0; i < index.count; i++) {
      const bucket = fnv1a32(body, index.keyStarts[i], index.keyEnds[i]) % buckets;
      if (owner[bucket] !== self) return false;
      // A lane is a slot, or a slot's part of a hold group (records held until released).
      const slot = holdOf[bucket]! * nSlots + slotOf(bucket, nSlots);
      slotOfRecord[i] = slot;
      bucketOfRecord[i] = bucket;
      bytes[slot] += index.starts[i + 1]! - index.starts[i]!;
      counts[slot]++;
    }
    return true;
  }

  /**
   * Copies each lane's records, in order, into one DELIVER body per lane (lanes the spool took
   * have a count of 0 here). `stage`: the batch was just staged in the spool, and `res` says
   * where its records go; with `always`, each delivery then carries their spool positions.
   */
  private split(body: Buffer, index: RecordIndex, batch: InBatch, stage: Staged | null, res: WriteResult | null): void {
    const nSlots = this.slots.length;
    const lanes = this.slotCounts.length;
    const bytes = this.slotBytes;
    const counts = this.slotCounts;
    const bodies: (Buffer | undefined)[] = new Array(lanes);
    const fill = new Uint32Array(lanes);
    let copies = 0;
    for (let s = 0; s < lanes; s++) {
      if (counts[s] === 0) continue;
      // Every record in one slot: hand the sender's buffer on as it is, no copy. (Not when the
      // spool took the batch's other records: then this lane has only some of them.)
      if (counts[s] === index.count) {
        bodies[s] = body;
      } else {
        bodies[s] = Buffer.allocUnsafe(bytes[s]!);
        copies++;
      }
    }
    if (copies > 0) {
      const starts = index.starts;
      const slotOfRecord = this.slotOfRecord;
      let i = 0;
      while (i < index.count) {
        // Copy runs of consecutive records bound for the same slot in one go.
        const s = slotOfRecord[i]!;
        let j = i + 1;
        while (j < index.count && slotOfRecord[j] === s) j++;
        if (counts[s] === 0) {
          i = j; // the spool took this lane's records
          continue;
        }
        body.copy(bodies[s]!, fill[s], starts[i], starts[j]);
        fill[s] += starts[j]! - starts[i]!;
        i = j;
      }
    }
    let marks: (number[] | undefined)[] | null = null;
    const mode = this.laneMode;
    if (stage && res && this.always) {
      // Lanes written and delivered from memory (mode 2): their records are marked read in the
      // spool once written, and the delivery carries their positions for the cursor.
      marks = new Array(lanes);
      for (let k = 0; k < res.n; k++) {
        const b = res.bucket[k]!;
        const lane = this.holdOf[b]! * nSlots + slotOf(b, nSlots);
        if (mode[lane] !== 2) continue;
        (marks[lane] ??= []).push(b, res.gen[k]!, res.off[k]!, res.records[k]!);
        stage.reads.push(b, res.gen[k]!, res.off[k]!, res.records[k]!);
      }
    }
    const now = performance.now();
    batch.remaining = 0;
    for (let s = 0; s < lanes; s++) {
      if (counts[s] === 0) continue;
      const slot = this.slots[s % nSlots]!;
      // A lane on disk too was acknowledged with the write; the others when processed.
      const owner = stage && mode[s] === 2 ? null : batch;
      if (owner) batch.remaining++;
      const d: Delivery = { id: this.nextDelivery++, batch: owner, slot, body: bodies[s]!, count: counts[s]!, sentAt: now, marks: marks?.[s] ?? null };
      if (this.nextDelivery > 0xffffffff) this.nextDelivery = 1;
      this.deliveries.set(d.id, d);
      slot.queuedRecords += d.count;
      this.queued += d.count;
      if (stage) {
        stage.placed.push(d);
        stage.lanes.push(s);
      } else {
        this.place(d, s);
      }
    }
  }

  private ack(batch: InBatch): void {
    const left = (this.senderInflight.get(batch.senderKey) ?? 1) - 1;
    if (left === 0) this.senderInflight.delete(batch.senderKey);
    else this.senderInflight.set(batch.senderKey, left);
    this.counters.batchesAcked++;
    this.ingressOut.push([batch.sender, encodeHeader(MessageType.ACK, batch.seq, this.map.epoch, batch.count)]);
  }

  // ---- component slots -------------------------------------------------------------------

  /** Sends a slot's pending deliveries while its window has room. */
  private pump(slot: Slot): void {
    if (!slot.routingId) return;
    while (slot.inflight.size < this.slotWindow && slot.pending.length > 0) {
      const d = slot.pending.shift()!;
      slot.inflight.set(d.id, d);
      slot.queuedRecords -= d.count;
      slot.inflightRecords += d.count;
      d.sentAt = performance.now();
      this.egressOut.push([slot.routingId, encodeHeader(MessageType.DELIVER, d.id, this.map.epoch, d.count), d.body]);
    }
  }

  private async egressLoop(): Promise<void> {
    while (!this.closed) {
      let msg: Buffer[];
      try {
        msg = await this.egress.receive();
      } catch (err) {
        if (this.closed) return;
        this.causes.count('RECEIVE_FAILED', (err as Error).message);
        continue;
      }
      try {
        this.onComponentMessage(msg);
      } catch (err) {
        this.log.error({ err }, 'portal: unexpected error handling a component message');
      }
    }
  }

  private onComponentMessage(msg: Buffer[]): void {
    const header = decodeHeader(msg[1]);
    if (!header) return this.causes.count('COMPONENT_MALFORMED', 'component sent a frame that is not a header');
    if (header.type === MessageType.DONE) return this.onDone(header.seq);
    if (header.type === MessageType.HEARTBEAT) return this.onHeartbeat(msg[0]!, msg[2]);
    if (header.type === MessageType.READY) return this.onReady(msg[0]!, msg[2]);
    this.causes.count('COMPONENT_MALFORMED', `component sent message type ${header.type}`);
  }

  private onReady(routingId: Buffer, frame: Buffer | undefined): void {
    let hello: { slot?: unknown; pid?: unknown };
    try {
      hello = JSON.parse(frame?.toString('utf8') ?? '') as typeof hello;
    } catch {
      return this.causes.count('COMPONENT_MALFORMED', 'READY without a JSON body');
    }
    const slot = typeof hello.slot === 'number' ? this.slots[hello.slot] : undefined;
    if (!slot) {
      return this.causes.count('COMPONENT_BAD_SLOT', `a component asked for slot ${String(hello.slot)}; this portal has slots 0-${this.slots.length - 1}`);
    }
    if (slot.routingId?.equals(routingId)) return; // the same connection saying READY twice
    // A component that registers again (a restart, or a reconnect) gets everything it had not
    // finished, first and in order: held for it, never handed to another slot.
    if (slot.inflight.size > 0) {
      const unfinished = [...slot.inflight.values()];
      for (const d of unfinished) {
        slot.inflightRecords -= d.count;
        slot.queuedRecords += d.count;
      }
      slot.pending.unshift(...unfinished);
      slot.inflight.clear();
    }
    slot.routingId = routingId;
    slot.heardAt = Date.now();
    slot.beacon = null;
    slot.pid = typeof hello.pid === 'number' ? hello.pid : 0;
    slot.registrations++;
    this.log.info({ slot: slot.index, pid: slot.pid }, `portal ${this.stream.name}: slot ${slot.index} ready (pid ${slot.pid})`);
    this.pump(slot);
    this.feed(slot);
  }

  private onHeartbeat(routingId: Buffer, frame: Buffer | undefined): void {
    let beacon: ComponentBeacon;
    try {
      beacon = JSON.parse(frame?.toString('utf8') ?? '') as ComponentBeacon;
    } catch {
      return this.causes.count('COMPONENT_MALFORMED', 'HEARTBEAT without a JSON body');
    }
    const slot = this.slots[beacon.slot];
    // Only the registered connection speaks for a slot; a stale one (an old process) is ignored.
    if (!slot || !slot.routingId?.equals(routingId)) return;
    slot.heardAt = Date.now();
    slot.beacon = beacon;
    if (slot.spooling && slot.pending.length === 0) this.feed(slot);
  }

  private onDone(id: number): void {
    const d = this.deliveries.get(id);
    if (!d) return this.causes.count('COMPONENT_UNKNOWN_DELIVERY', `DONE for delivery ${id}, which is not in flight`);
    const slot = d.slot;
    slot.heardAt = Date.now();
    if (!slot.inflight.delete(id)) return; // answered twice; counted once
    this.deliveries.delete(id);
    slot.inflightRecords -= d.count;
    slot.processed += d.count;
    const ms = performance.now() - d.sentAt;
    slot.serviceMs = slot.serviceMs === 0 ? ms : slot.serviceMs * 0.9 + ms * 0.1;
    this.queued -= d.count;
    this.counters.recordsOut += d.count;
    if (d.batch && --d.batch.remaining === 0) this.ack(d.batch);
    this.pump(slot);
    if (this.resumeReading && this.queued <= this.maxQueued / 2 && this.blocked.length === 0) this.resumeReading();
    if (d.marks) this.commitMarks(d.marks);
    if (slot.spooling) this.feed(slot);
  }

  // ---- epochs ------------------------------------------------------------------------------

  /**
   * Switches to the map's next epoch (read again from the map file). Buckets this server gives
   * up are refused from now on (WRONG_OWNER, a redirect) and drain; buckets it takes over are
   * accepted but held, per old owner, until that owner says it has drained them (`release`).
   */
  switchEpoch(epoch: number): { ok: true; epoch: number; outgoing: number; incoming: Record<string, number> } {
    this.flushStaged();
    if (epoch <= this.map.epoch) return { ok: true, epoch: this.map.epoch, outgoing: 0, incoming: {} };
    if (!this.opts.mapFile) throw new FlotillaError('CONFIG_INVALID', 'this portal was started without a map file to read again');
    if (this.holds.length > 0) {
      throw new FlotillaError('EPOCH_BUSY', `epoch ${this.map.epoch} still holds buckets from ${this.holds.map((h) => h.from).join(', ')}; switch again once they are released`);
    }
    const next = loadMap(this.opts.mapFile);
    if (next.epoch !== epoch) throw new FlotillaError('EPOCH_MISMATCH', `asked to switch to epoch ${epoch}, but ${this.opts.mapFile} is at epoch ${next.epoch}`);
    const stream = streamOf(next, this.stream.name);
    const selfIndex = next.servers.findIndex((x) => x.name === this.opts.server);
    if (selfIndex < 0) throw new FlotillaError('UNKNOWN_SERVER', `server ${this.opts.server} is not in epoch ${epoch} of the map`);
    if (stream.buckets !== this.stream.buckets) throw new FlotillaError('MAP_INVALID', `stream ${stream.name} changes its bucket count; that needs a new stream`);
    if (slotCount(next.servers[selfIndex]!, stream) !== this.slots.length) {
      throw new FlotillaError('MAP_INVALID', `stream ${stream.name} changes its slot count on ${this.opts.server}; restart its portal and components for that`);
    }
    const before = this.map;
    const oldOwner = this.stream.owner;
    let outgoing = 0;
    const incoming = new Map<string, number[]>();
    for (let b = 0; b < stream.buckets; b++) {
      const was = before.servers[oldOwner[b]!]!.name;
      const now = next.servers[stream.owner[b]!]!.name;
      if (was === this.opts.server && now !== this.opts.server) outgoing++;
      if (now === this.opts.server && was !== this.opts.server) {
        if (!incoming.has(was)) incoming.set(was, []);
        incoming.get(was)!.push(b);
      }
    }
    const released = this.earlyReleases.get(epoch) ?? new Set<string>();
    this.earlyReleases.delete(epoch);
    this.holdOf = new Uint8Array(stream.buckets);
    this.holds = [];
    for (const [from, buckets] of incoming) {
      if (released.has(from)) continue;
      this.holds.push({ from, buckets: buckets.length, deliveries: [] });
      for (const b of buckets) this.holdOf[b] = this.holds.length;
    }
    const lanes = this.slots.length * (1 + this.holds.length);
    this.slotBytes = new Uint32Array(lanes);
    this.slotCounts = new Uint32Array(lanes);
    this.map = next;
    this.stream = stream;
    this.selfIndex = selfIndex;
    this.drainMark = this.nextDelivery;
    const inc = Object.fromEntries([...incoming].map(([from, b]) => [from, b.length]));
    this.log.info({ epoch, outgoing, incoming: inc }, `portal ${stream.name}: now at epoch ${epoch}; ${outgoing} buckets leave, ${[...incoming.values()].reduce((n, b) => n + b.length, 0)} arrive`);
    this.forwardForeign();
    return { ok: true, epoch, outgoing, incoming: inc };
  }

  /**
   * True once every record accepted before the last epoch switch is processed, and every spooled
   * record of a bucket this server gave up has been taken by the bucket's new owner.
   */
  drained(): boolean {
    if (this.forwarding || this.foreignBuckets().length > 0) {
      this.forwardForeign();
      return false;
    }
    for (const id of this.deliveries.keys()) return id >= this.drainMark;
    return true;
  }

  /** Buckets with records in the spool still to read that this server does not own. */
  private foreignBuckets(): number[] {
    const out: number[] = [];
    if (!this.spool || this.spool.unreadTotal === 0) return out;
    const { owner, buckets } = this.stream;
    for (let b = 0; b < buckets; b++) if (owner[b] !== this.selfIndex && this.spool.unreadOf(b) > 0) out.push(b);
    return out;
  }

  /** Starts forwarding spooled records of buckets owned elsewhere now, unless it is under way. */
  private forwardForeign(): void {
    if (this.forwarding || this.closed || this.foreignBuckets().length === 0) return;
    this.forwarding = this.forwardLoop()
      .catch((err: unknown) => this.log.error({ err }, `portal ${this.stream.name}: forwarding spooled records failed`))
      .finally(() => (this.forwarding = null));
  }

  /**
   * Re-guiding: reads the spooled records of buckets that moved to another server and sends them
   * there (ids kept), a round at a time; a round's cursor moves only once the new owners have
   * acknowledged all of it. A refused round is read again later, so nothing is dropped.
   */
  private async forwardLoop(): Promise<void> {
    const spool = this.spool!;
    if (!this.opts.mapFile) {
      this.causes.count('FORWARD_IMPOSSIBLE', 'spooled records belong to other servers, but this portal has no map file to find them');
      return;
    }
    this.forwarder ??= new Sender({
      map: this.opts.mapFile,
      identity: `${FORWARD_IDENTITY}/${this.opts.server}`,
      log: this.log,
      onError: (err, records) => {
        this.forwardRefused += records;
        this.causes.count('FORWARD_REFUSED', `the new owner refused ${records} forwarded records: ${err.code}: ${err.message}; they stay in the spool`);
      },
    });
    for (;;) {
      const buckets = this.foreignBuckets();
      if (buckets.length === 0 || this.closed) return;
      const marks: number[] = [];
      const from = new Map<number, ReadPos>();
      let bytes = 0;
      let records = 0;
      for (const b of buckets) {
        from.set(b, spool.readPos(b));
        for (let r = spool.read(b, REPLAY_BYTES); r; r = bytes < FORWARD_ROUND_BYTES ? spool.read(b, REPLAY_BYTES) : null) {
          this.forwarder.sendEnvelopes(this.stream.name, r.body, r.count);
          marks.push(b, r.gen, r.off, r.count);
          bytes += r.body.length;
          records += r.count;
        }
        if (bytes >= FORWARD_ROUND_BYTES) break;
      }
      const refused = this.forwardRefused;
      await this.forwarder.flush();
      if (this.closed) return;
      if (this.forwardRefused !== refused) {
        for (const [b, pos] of from) spool.restore(b, pos);
        await new Promise((r) => setTimeout(r, FORWARD_RETRY_MS));
        continue;
      }
      this.commitMarks(marks);
      this.counters.recordsForwarded += records;
      this.log.info({ records, buckets: from.size }, `portal ${this.stream.name}: forwarded ${records} spooled records of ${from.size} buckets to their new owners`);
    }
  }

  /** `from` has drained the buckets it gave this server at `epoch`: process them now. */
  release(from: string, epoch: number): { ok: true; released: number } {
    this.flushStaged();
    if (epoch > this.map.epoch) {
      if (!this.earlyReleases.has(epoch)) this.earlyReleases.set(epoch, new Set());
      this.earlyReleases.get(epoch)!.add(from);
      return { ok: true, released: 0 };
    }
    const i = this.holds.findIndex((h) => h.from === from);
    if (epoch < this.map.epoch || i < 0) return { ok: true, released: 0 };
    const group = this.holds[i]!;
    // Keep lane numbers stable for the groups still held: mark this one empty, drop all at the end.
    let forwardedIn = false;
    for (let b = 0; b < this.holdOf.length; b++) {
      if (this.holdOf[b] !== i + 1) continue;
      this.holdOf[b] = 0;
      if (this.spool && this.spool.unreadOf(b) > 0) forwardedIn = true;
    }
    // Records the old owner forwarded from its spool are older than those held here: the held
    // ones go to the spool behind them. (Without a spool, or if it is full, straight to the slots.)
    for (const d of group.deliveries) {
      if (!(forwardedIn && this.spoolHeld(d))) d.slot.pending.push(d);
    }
    if (forwardedIn) for (const slot of this.slots) slot.spooling = true;
    const released = group.deliveries.reduce((n, d) => n + d.count, 0);
    group.deliveries = [];
    group.buckets = 0;
    if (this.holds.every((h) => h.buckets === 0)) {
      this.holds = [];
      this.slotBytes = new Uint32Array(this.slots.length);
      this.slotCounts = new Uint32Array(this.slots.length);
    }
    for (const slot of this.slots) {
      this.pump(slot);
      this.feed(slot);
    }
    this.log.info({ from, epoch, records: released }, `portal ${this.stream.name}: ${from} drained its buckets; ${released} held records go to their slots`);
    return { ok: true, released };
  }

  /** Writes a held delivery to the spool (acknowledging its part of the batch); false if full. */
  private spoolHeld(d: Delivery): boolean {
    const index = this.heldIndex;
    if (!index.scan(d.body, d.count)) return false;
    const buckets = new Uint32Array(d.count);
    for (let i = 0; i < d.count; i++) buckets[i] = fnv1a32(d.body, index.keyStarts[i], index.keyEnds[i]) % this.stream.buckets;
    try {
      this.spool!.write(d.body, index.starts, buckets, d.count, null);
    } catch (err) {
      if (!(err instanceof SpoolFullError)) throw err;
      this.causes.count('SPOOL_FULL', `${err.message}; held records go to their slot from memory, possibly before older forwarded ones`);
      return false;
    }
    this.deliveries.delete(d.id);
    d.slot.queuedRecords -= d.count;
    this.queued -= d.count;
    if (d.batch && --d.batch.remaining === 0) this.ack(d.batch);
    return true;
  }

  // ---- pause and heartbeats ---------------------------------------------------------------

  /**
   * Pauses or resumes the stream. The pause is written to a file in the run directory first, so
   * a portal that restarts while paused comes back paused.
   */
  setPaused(paused: boolean): { ok: true; paused: boolean } {
    this.flushStaged();
    const file = pauseFile(this.runDir, this.stream.name);
    if (paused) writeFileSync(file, `${new Date().toISOString()}\n`);
    else if (existsSync(file)) unlinkSync(file);
    if (this.paused !== paused) this.log.info(`portal ${this.stream.name}: ${paused ? 'paused' : 'resumed'}`);
    this.paused = paused;
    if (!paused) {
      for (const sender of this.pausedSenders.values()) {
        this.ingressOut.push([sender, encodeHeader(MessageType.RESUME, 0, this.map.epoch, 0)]);
      }
      this.pausedSenders.clear();
      for (const slot of this.slots) this.feed(slot);
    }
    return { ok: true, paused };
  }

  /** Logs each slot whose component has just gone silent (dead), or is heard from again. */
  private noteSlotStates(): void {
    const now = Date.now();
    for (const slot of this.slots) {
      const state = this.slotState(slot, now);
      if (state === 'dead' && slot.lastState !== 'dead') {
        this.log.warn(
          { slot: slot.index, pid: slot.pid, silentMs: now - slot.heardAt, queued: slot.queuedRecords, inflight: slot.inflightRecords },
          `portal ${this.stream.name}: slot ${slot.index} (pid ${slot.pid}) is dead: silent for ${now - slot.heardAt} ms; its ${slot.queuedRecords + slot.inflightRecords} records wait for it${this.spool ? ', and new ones go to the spool' : ''}`,
        );
      } else if (slot.lastState === 'dead' && state !== 'dead' && state !== 'missing') {
        this.log.info({ slot: slot.index, pid: slot.pid }, `portal ${this.stream.name}: slot ${slot.index} (pid ${slot.pid}) is heard from again`);
      }
      slot.lastState = state;
    }
  }

  private slotState(slot: Slot, now: number): SlotState {
    if (!slot.routingId) return 'missing';
    if (now - slot.heardAt > DEAD_AFTER_BEATS * this.map.heartbeatMs) return 'dead';
    if (slot.queuedRecords > 0 || slot.inflightRecords > 0) return 'busy';
    if (slot.beacon && (slot.beacon.inflight > 0 || slot.beacon.received > 0)) return 'busy';
    return 'idle';
  }

  /**
   * This portal's beacon. `advance` starts a new "received since the last beacon" period (the
   * periodic beacon does; a `beacon` request from the agent does not).
   */
  beacon(advance: boolean): PortalBeacon {
    const now = Date.now();
    const received = this.counters.recordsIn - this.inAtLastBeat;
    if (advance) this.inAtLastBeat = this.counters.recordsIn;
    let inflight = 0;
    const slots: SlotBeacon[] = this.slots.map((s) => {
      inflight += s.inflightRecords;
      return {
        slot: s.index,
        pid: s.pid,
        state: this.slotState(s, now),
        queued: s.queuedRecords,
        inflight: s.inflightRecords,
        received: s.beacon?.received ?? 0,
        silentMs: s.heardAt === 0 ? -1 : now - s.heardAt,
        processed: s.processed,
        serviceMs: Math.round(s.serviceMs * 1000) / 1000,
      };
    });
    // A missing or dead slot holds its records; with none held it keeps nobody waiting.
    const slotsIdle = slots.every((s) => s.state === 'idle' || (s.state !== 'busy' && s.queued === 0 && s.inflight === 0));
    return {
      type: 'portal',
      server: this.opts.server,
      stream: this.stream.name,
      pid: process.pid,
      port: this.port,
      epoch: this.map.epoch,
      paused: this.paused,
      received,
      inflight,
      queued: this.queued - inflight,
      // A paused portal takes nothing in: records received before the pause count only while
      // they are still queued or in flight.
      idle: (received === 0 || this.paused) && this.queued === 0 && slotsIdle,
      rates: { inPerSec: this.rateIn, outPerSec: this.rateOut },
      errors: { ...this.causes.totals },
      slots,
      ...(this.spool ? { spool: this.spoolBeacon() } : {}),
      at: now,
    };
  }

  private spoolBeacon(): SpoolBeacon {
    const st = this.spool!.stats();
    return {
      mode: st.mode,
      state: st.state,
      whenFull: this.stream.spool.whenFull,
      blocked: this.blocked.length > 0,
      records: st.records,
      bytes: st.bytes,
      maxBytes: st.maxBytes,
      freeBytes: st.freeBytes,
      minFreeBytes: st.minFreeBytes,
      tornTails: st.tornTails,
    };
  }

  private sendBeacon(): void {
    this.noteSlotStates();
    for (const slot of this.slots) if (slot.spooling && slot.pending.length === 0) this.feed(slot);
    this.forwardForeign();
    const beacon = JSON.stringify(this.beacon(true));
    // No agent listening is normal (a portal run by hand): the beacon is simply dropped.
    this.beacons.send(beacon).catch(() => undefined);
  }

  // ---- control -----------------------------------------------------------------------------

  /** Answers one control request (see ControlRequest). */
  private command(req: ControlRequest): unknown {
    switch (req.cmd) {
      case 'ping':
        return { ok: true };
      case 'stats':
        return this.stats();
      case 'beacon':
        return this.beacon(false);
      case 'pause':
        return this.setPaused(true);
      case 'resume':
        return this.setPaused(false);
      case 'switch':
        return this.switchEpoch(Number(req.epoch));
      case 'drained':
        return { drained: this.drained(), epoch: this.map.epoch };
      case 'release':
        return this.release(String(req.from), Number(req.epoch));
      default:
        return { error: `unknown command ${String((req as { cmd?: unknown }).cmd)}`, code: 'UNKNOWN_COMMAND' };
    }
  }

  private async controlLoop(): Promise<void> {
    while (!this.closed) {
      let req: Buffer;
      try {
        [req] = (await this.control.receive()) as [Buffer];
      } catch {
        if (this.closed) return;
        continue;
      }
      let reply: unknown;
      try {
        reply = this.command(JSON.parse(req.toString('utf8')) as ControlRequest);
      } catch (err) {
        reply =
          err instanceof FlotillaError
            ? { error: err.message, code: err.code }
            : err instanceof SyntaxError
              ? { error: 'request is not JSON', code: 'MALFORMED' }
              : { error: (err as Error).message, code: 'INTERNAL' };
      }
      try {
        await this.control.send(JSON.stringify(reply));
      } catch {
        if (this.closed) return;
      }
    }
  }
}

/** True if `dir` exists and holds spool segment files. */
function hasSegments(dir: string): boolean {
  try {
    return readdirSync(dir).some((n) => n.endsWith('.seg'));
  } catch {
    return false;
  }
}
