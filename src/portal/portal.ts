/**
 * The portal: the one way in for a stream's records on a server. This file wires the parts;
 * each step of a record's path is a file of its own.
 *
 *   senders --tcp--> ingress.ts --route (router.ts)--> [staging.ts: spool] --> egress.ts --ipc--> slots
 *                       ^ ACK when every part is DONE (or on disk)        <--DONE--/
 *
 * Each BATCH is checked (ingress.ts), its records' keys hashed to buckets and lanes (router.ts),
 * and the records split into one DELIVER per slot, in arrival order (so in order per key). A
 * batch is acknowledged to its sender only when every slot has said DONE for its part. Memory is
 * bounded three ways: each sender may have at most `window` batches unacknowledged, each slot at
 * most `slotWindow` deliveries in flight, and when more than `maxQueuedRecords` wait in the
 * portal it stops reading from senders until the slots catch up.
 *
 * With a spool (src/spool/, docs/delivery.md) a slot's records may go to disk instead, and be
 * read back in order (replay.ts); buckets taken over in an epoch switch are held (holds.ts)
 * until their old owner has drained them; spooled records of buckets given up are forwarded to
 * their new owner (forwarder.ts). health.ts reports, control.ts answers the control socket.
 */
import { FlotillaError } from '../errors';
import { CauseCounter, type Logger } from '../log';
import { guardServer } from '../transport/curve';
import type { ConnectionGuard } from '../transport/connections';
import { MapKeeper } from '../map/keeper';
import { DEFAULT_STOP_DRAIN_MS, type FlotillaMap } from '../map/types';
import { serverOf, slotCount, streamOf, portalPort } from '../map/lookup';
import type { DrainedReply, LoadReport, PausedReply, PortalStats, ReleaseRequest, SwitchReply } from '../protocol/control';
import { type PortalBeacon } from '../protocol/beacons';
import { agentBeaconEndpoint, controlEndpoint, ensureRunDir, slotsEndpoint } from '../protocol/endpoints';
import type { RecordIndex } from '../protocol/envelope';
import type { Spool } from '../spool/spool';
import { ControlServer } from '../transport/control-server';
import { handlePortalRequest, type PortalControl } from './control';
import { Cancels, portalCancelsHost } from './cancels';
import { type Cancellation, type PortalCancelReply, readCancels } from '../protocol/cancel';
import { newCounters } from './counters';
import type { Delivery, InBatch, Slot } from './slot';
import { drain, STOP_LINGER_MS } from './drain';
import { Egress } from './egress';
import { Epochs } from './epochs';
import { Forwarder } from './forwarder';
import { chooseStartMap, HandoverFile } from './handover-file';
import { Health } from './health';
import { Ingress } from './ingress';
import { limitsView, MemoryGuard } from './limits';
import { parsePortalOptions, type PortalOptions } from './options';
import { PauseState } from './pause';
import { Replay } from './replay';
import { type BatchPlan, cutLanes, Routing } from './router';
import { Staging } from './staging';
import { openPortalSpool } from './spool-open';
import { PortalConfigs, type StreamConfigs } from './configs';

export { DEFAULT_MAX_QUEUED_RECORDS, DEFAULT_SLOT_WINDOW, type PortalOptions } from './options';
export type { PortalStats } from '../protocol/control';

/** Largest control request the portal reads. */
const MAX_CONTROL_BYTES = 64 * 1024;

export class Portal implements PortalControl {
  /** The TCP port bound (useful when the OS chose it). */
  port = 0;
  private readonly o: ReturnType<typeof parsePortalOptions>;
  private readonly keeper: MapKeeper | null;
  private readonly log: Logger;
  private readonly causes: CauseCounter;
  /** The ingress's connection cap and CURVE handshakes (src/transport/connections.ts). */
  private guard: ConnectionGuard | null = null;
  private readonly routing: Routing;
  private readonly runDir: string;
  private readonly counters = newCounters();
  private readonly pause: PauseState;
  private readonly egress: Egress;
  private readonly spool: Spool | null;
  private readonly staging: Staging | null;
  private readonly replay: Replay | null;
  private readonly forwarder: Forwarder | null;
  private readonly ingress: Ingress;
  private readonly health: Health;
  private readonly control: ControlServer;
  private readonly epochs: Epochs;
  private readonly handover: HandoverFile | null;
  private readonly cancels: Cancels;
  /** The management bus: the stream's configurations and each slot's (configs.ts). */
  private readonly configs: PortalConfigs;
  /** Cuts what no count reaches: past max_rss_bytes every sender connection is dropped (limits.ts). */
  private readonly memory: MemoryGuard;
  private closed = false;
  /** stop() has begun: nothing new is taken, the spool is not read (as while paused). */
  private stopping = false;
  /** Paused, or stopping: no spooled record is delivered, and new ones go to the spool. */
  private readonly holding = () => this.pause.paused || this.stopping;

  constructor(opts: PortalOptions) {
    const o = (this.o = parsePortalOptions(opts));
    this.keeper = o.map instanceof MapKeeper ? o.map : o.mapFile ? new MapKeeper(o.mapFile) : null;
    const given = this.keeper ? this.keeper.map : (o.map as FlotillaMap);
    this.runDir = o.runDir ?? given.runDir;
    this.log = o.log;
    // A portal that reads a map file comes back on the map it ran and holds what it held.
    this.handover = this.keeper?.file ? new HandoverFile(this.runDir, o.stream) : null;
    const start = chooseStartMap(given, this.handover?.load(this.log) ?? null, o.server, o.stream);
    if (start.map !== given) this.keeper!.adopt(start.map);
    if (start.note) this.log.warn({ stream: o.stream, epoch: start.map.epoch }, `portal ${o.stream}: ${start.note}`);
    const map = start.map;
    const stream = streamOf(map, o.stream);
    const server = serverOf(map, o.server);
    const slots = slotCount(server, stream);
    this.routing = new Routing(map, stream, map.servers.indexOf(server), slots);
    this.routing.holds.restore(start.holds, start.early);
    this.causes = new CauseCounter(this.log, `portal ${stream.name}`);
    this.pause = new PauseState(this.runDir, stream.name, this.log);
    const deadMs = () => this.health.deadMs();
    const cancels = (this.cancels = new Cancels(portalCancelsHost(() => ({ egress, routing: this.routing, staging: this.staging, ingress: this.ingress, replay: this.replay })), this.log));
    this.egress = new Egress(
      slots,
      o.slotWindow,
      { stream: stream.name, epoch: () => this.routing.epoch, deadMs, maxSlotBytes: () => stream.memory.maxSlotBytes },
      {
        onDone: (d) => this.onDone(d),
        onReady: (slot) => this.replay?.feed(slot),
        onHeartbeat: (slot) => slot.spooling && slot.pending.length === 0 && this.replay?.feed(slot),
        ...cancels.egressEvents(),
        // Cancellations in force, then the configuration, before the slot's deliveries.
        onRegistered: (slot) => void (cancels.onRegistered(slot), this.configs.onReady(slot)),
        onConfigured: (slot, body) => this.configs.onConfigured(slot, body),
      },
      this.causes,
      this.log,
    );
    const tell = (slot: Slot, frames: Buffer[]) => this.egress.tell(slot, frames);
    this.configs = new PortalConfigs({ stream: stream.name, slots: this.egress.slots, epoch: () => this.routing.epoch, tell, count: (c, e) => this.causes.count(c, e) }, this.log);
    this.spool = openPortalSpool(stream, o.server, o.spoolDir, this.log, this.causes);
    const egress = this.egress;
    if (this.spool) {
      this.staging = new Staging(
        this.spool,
        stream.buckets,
        stream.spool.mode === 'always',
        stream.spool.whenFull,
        Math.max(1, stream.window >> 1),
        Math.max(1, Math.floor(o.maxQueuedRecords / (2 * slots))),
        {
          slots: egress.slots,
          laneOf: (b) => this.routing.laneOf(b),
          paused: this.holding,
          live: (slot) => egress.live(slot),
          full: (slot) => egress.full(slot),
          make: (slot, body, count, batch, marks) => egress.make(slot, body, count, batch, marks),
          drop: (d) => egress.drop(d),
          place: (d, lane) => this.place(d, lane),
          feed: () => this.feedSpooling(false),
          ack: (batch) => this.ingress.ack(batch),
          reject: (sender, seq, code, message) => this.ingress.reject(sender, seq, code, message),
          unaccept: (batch) => this.ingress.unaccept(batch),
          retry: (msg) => this.ingress.handle(msg),
          unblocked: () => egress.queued <= o.maxQueuedRecords && this.ingress.wake(),
        },
        this.causes,
        this.log,
      );
      const staging = this.staging;
      this.replay = new Replay(this.spool, o.slotWindow, {
        routing: this.routing,
        cancels,
        paused: this.holding,
        live: (slot) => egress.live(slot),
        stagedFor: (slot) => staging.stagedFor(slot),
        make: (slot, body, count, marks) => egress.make(slot, body, count, null, marks),
        pump: (slot) => egress.pump(slot),
      });
      const replay = this.replay;
      this.forwarder = new Forwarder(this.spool, this.routing, this.keeper, o.server, (marks) => replay.commit(marks), this.causes, this.log);
    } else {
      this.staging = null;
      this.replay = null;
      this.forwarder = null;
    }
    this.ingress = new Ingress(
      stream.maxBatchBytes,
      o.maxQueuedRecords,
      {
        routing: this.routing,
        pause: this.pause,
        staging: this.staging,
        counters: this.counters,
        cancels,
        queued: () => egress.queued,
        queuedBytes: () => egress.queuedBytes,
        slotsFull: () => egress.slotsFull,
        memory: stream.memory,
        deliver: (batch, body, index, plan) => this.deliver(batch, body, index, plan),
      },
      this.causes,
      this.log,
    );
    this.health = new Health(
      {
        server: o.server,
        routing: this.routing,
        counters: this.counters,
        egress,
        spool: this.spool,
        port: () => this.port,
        paused: () => this.pause.paused,
        readingPaused: () => this.ingress.readingPaused,
        blocked: () => this.staging?.blocked ?? false,
        whenFull: () => this.routing.stream.spool.whenFull,
        forwarded: () => this.forwarder?.forwarded ?? 0,
        holds: () => this.epochs.holdViews(),
        flowRefusals: () => this.ingress.flowCounts,
        cancels: () => cancels.counts(),
        configVersion: () => this.configs.version,
        limits: () => limitsView(stream.memory, this.ingress, egress, this.memory),
        tick: () => {
          this.feedSpooling(true);
          this.forwarder?.start();
        },
      },
      this.causes,
      this.log,
    );
    this.epochs = new Epochs(
      {
        server: o.server,
        routing: this.routing,
        keeper: this.keeper,
        egress,
        spool: this.spool,
        forwarder: this.forwarder,
        file: this.handover,
        deadMs,
        flush: () => this.staging?.flush(),
        feed: (slot) => this.replay?.feed(slot),
        ack: (batch) => this.ingress.ack(batch),
      },
      this.causes,
      this.log,
    );
    this.memory = new MemoryGuard(stream.memory.maxRssBytes, (why) => (this.causes.count('MEMORY_LIMIT', why), this.ingress.reset()));
    this.control = new ControlServer({
      what: `portal ${stream.name}`,
      log: this.log,
      count: (cause, example) => this.causes.count(cause, example),
      maxRequestBytes: MAX_CONTROL_BYTES,
      handle: (request) => handlePortalRequest(this, request),
    });
  }

  /** Binds the sockets and starts serving. Fails if another portal serves this stream here. */
  async start(): Promise<void> {
    const { routing, o } = this;
    const name = routing.stream.name;
    ensureRunDir(this.runDir);
    const ctl = controlEndpoint(this.runDir, name);
    await this.control.bindIpc(ctl, () => new FlotillaError('PORTAL_ALREADY_RUNNING', `a portal for stream ${name} already serves ${ctl}`));
    this.cancels.load(readCancels(this.runDir));
    const self = routing.map.servers[routing.self]!;
    const host = o.bindHost ?? self.host;
    const port = o.port ?? portalPort(self, routing.stream);
    this.port = await this.ingress.bind(`tcp://${host}:${port === 0 ? '*' : port}`, port, async (socket) => {
      this.guard?.close(); // a reset's new socket (limits.ts) gets its own guard
      this.guard = await guardServer(socket, () => this.routing.map, 'portal', this.causes, this.log, `portal ${name}`);
    });
    await this.egress.bind(slotsEndpoint(this.runDir, name));
    this.pause.load();
    this.epochs.save();
    this.spool?.open();
    if (this.spool && this.spool.unreadTotal > 0) for (const slot of this.egress.slots) slot.spooling = true;
    this.forwarder?.start();
    this.health.start(agentBeaconEndpoint(this.runDir));
    this.ingress.start();
    this.memory.start();
    this.egress.start();
    this.control.start();
    this.log.info(
      { stream: name, port: this.port, slots: routing.slots, epoch: routing.epoch },
      `portal ${name} listening on ${host}:${this.port}, ${routing.slots} slots${this.pause.paused ? ' (paused)' : ''}`,
    );
  }

  /**
   * Stops draining (docs/operations.md, "Stopping a portal"): new batches are refused with PAUSED
   * (senders hold them and send them to the next portal; a batch from inside the flow goes to the
   * spool where the stream has one), what was accepted is processed and acknowledged, staged
   * records are written, and once no sender has sent anything for a moment (drain.ts) the sockets
   * close, the last ACKs given time to leave. Past `stopDrainMs` it closes anyway: batches not
   * yet acknowledged are their senders' to send again (processed twice where a component had
   * already processed them).
   */
  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopping = true;
    const name = this.routing.stream.name;
    const boundMs = this.o.stopDrainMs ?? this.routing.map.stopDrainMs ?? DEFAULT_STOP_DRAIN_MS;
    this.ingress.stopTaking();
    this.staging?.flush();
    const started = performance.now();
    const left = await drain(this.ingress, this.egress, () => this.spool?.hasStaged ?? false, started + boundMs);
    const ms = Math.round(performance.now() - started);
    if (left === null) this.log.info({ ms }, `portal ${name}: drained in ${ms} ms; closing`);
    else {
      const counts = { batches: this.ingress.unacked, records: this.egress.queued };
      this.log.warn(
        { ms, ...counts },
        `portal ${name}: not drained after ${ms} ms (${left}): ${counts.batches} batches unacknowledged, ${counts.records} records queued or in flight; their senders send them again to the next portal`,
      );
    }
    this.staging?.flush();
    this.health.stop();
    this.memory.stop();
    this.causes.stop();
    this.guard?.close();
    await this.ingress.closeGracefully(STOP_LINGER_MS);
    this.egress.close();
    this.staging?.close();
    this.control.close();
    this.forwarder?.close();
    this.spool?.close();
  }

  /** The map epoch this portal routes by. */
  epoch(): number {
    return this.routing.epoch;
  }

  /** Counters, rates and per-slot state, as `portalctl status` shows them. */
  stats(): PortalStats {
    const stats = this.health.stats();
    return this.guard ? { ...stats, security: this.guard.status() } : stats;
  }

  /** This portal's beacon; `advance` starts a new "received since the last beacon" period. */
  beacon(advance: boolean): PortalBeacon {
    return this.health.beacon(advance);
  }

  /**
   * Pauses or resumes the stream. The pause is written to a file in the run directory first, so
   * a portal that restarts while paused comes back paused.
   */
  setPaused(paused: boolean): PausedReply {
    this.staging?.flush();
    this.pause.set(paused);
    if (!paused) {
      this.ingress.resumeSenders();
      this.feedSpooling(false);
    }
    return { ok: true, paused };
  }

  /** Switches to the map's next epoch (epochs.ts). */
  switchEpoch(epoch: number, digest?: string): SwitchReply {
    return this.epochs.switchTo(epoch, digest);
  }

  /** Records per bucket and the slots' busy time since the portal started (portalctl weights). */
  load(): LoadReport {
    return this.health.load(this.o.server, this.routing, this.egress.slots);
  }

  /** Puts cancellations in force: drops their records held here, tells the components (cancels.ts). */
  cancel(cancellations: Cancellation[]): Promise<PortalCancelReply> {
    return this.cancels.apply(cancellations);
  }

  /** Whether everything accepted before the last switch is processed (and forwarded). */
  drained(): DrainedReply {
    return this.epochs.drainedReply();
  }

  /** An old owner has drained the buckets it gave this server: process them now. */
  release(request: ReleaseRequest): { ok: true; released: number } {
    return this.epochs.release(request);
  }

  /** The stream's configurations from the agent (the management bus): each live slot is sent its own. */
  configure(configs: StreamConfigs): { ok: true; version: number } {
    return this.configs.set(configs);
  }

  // ---- the steps' call-backs --------------------------------------------------------------

  /** An accepted batch, from memory: cut into one delivery per lane, each placed. */
  private deliver(batch: InBatch, body: Buffer, index: RecordIndex, plan: BatchPlan): void {
    const bodies = cutLanes(body, index, plan, null);
    const slots = this.egress.slots;
    for (let l = 0; l < bodies.length; l++) {
      const part = bodies[l];
      if (part === undefined) continue;
      batch.remaining++;
      this.place(this.egress.make(slots[l % slots.length]!, part, plan.laneCount[l]!, batch, null), l);
    }
  }

  /** Hands a new delivery to its slot, or to its hold group while its buckets are held. */
  private place(d: Delivery, lane: number): void {
    if (lane >= this.routing.slots) this.routing.holds.keep(d, lane, this.routing.slots);
    else this.egress.enqueue(d);
  }

  /** DONE -> ack, DONE -> feed: a delivery is processed. */
  private onDone(d: Delivery): void {
    this.counters.recordsOut += d.count;
    if (d.batch && --d.batch.remaining === 0) this.ingress.ack(d.batch);
    const e = this.egress;
    if (this.ingress.readingPaused && e.queued <= this.o.maxQueuedRecords / 2 && e.queuedBytes <= this.routing.stream.memory.maxQueuedBytes / 2 && !this.staging?.blocked) this.ingress.wake();
    if (d.marks) this.replay!.commit(d.marks);
    if (d.slot.spooling) this.replay!.feed(d.slot);
  }

  /** Spooling slots read back (`idleOnly`: only those with nothing pending, as each heartbeat does). */
  private feedSpooling(idleOnly: boolean): void {
    if (!this.replay) return;
    for (const slot of this.egress.slots) if (slot.spooling && (!idleOnly || slot.pending.length === 0)) this.replay.feed(slot);
  }
}
