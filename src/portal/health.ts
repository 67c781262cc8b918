/**
 * What a portal says about itself: its rates, its stats (`portalctl`, the demo) and its beacon to
 * the agent every heartbeat, with one view of each slot (slot.ts) in both.
 *
 *   every second:          rates sampled from the counters
 *   every heartbeat_ms:    tick (slots that went silent are logged) --PortalBeacon (ipc PUSH)--> agent
 */
import type { CancelCounts } from '../protocol/beacons';
import * as zmq from 'zeromq';
import type { CauseCounter, Logger } from '../log';
import { DEAD_AFTER_BEATS, type HoldView, type LimitsView, type PortalBeacon, type SpoolBeacon } from '../protocol/beacons';
import type { LoadReport, PortalStats } from '../protocol/control';
import type { Spool } from '../spool/spool';
import type { PortalCounters } from './counters';
import type { Egress } from './egress';
import type { Routing } from './router';
import type { Slot } from './slot';

/** What health reads of the rest of the portal. */
export interface HealthHost {
  readonly server: string;
  readonly routing: Routing;
  readonly counters: PortalCounters;
  readonly egress: Egress;
  readonly spool: Spool | null;
  port(): number;
  paused(): boolean;
  readingPaused(): boolean;
  /** A batch waits for room in the spool. */
  blocked(): boolean;
  whenFull(): string;
  forwarded(): number;
  /** Buckets held for their old owners. */
  holds(): HoldView[];
  /** Batches refused as flow control (PAUSED, RESEND), counted apart from errors. */
  flowRefusals(): Readonly<Record<string, number>>;
  /** The newest configuration version the agent gave the portal (configs.ts). */
  configVersion?(): number;
  /** The memory limits and what they bound (limits.ts). */
  limits(): LimitsView;
  /** Periodic work to do before each beacon (read back, forward). */
  tick(): void;
  /** Records dropped by cancellations, and the roots in force (cancels.ts). */
  cancels(): CancelCounts;
}

export class Health {
  /** Beacons to the agent; dropped, not queued, while no agent listens. */
  private readonly beacons = new zmq.Push({ linger: 0, immediate: true, sendHighWaterMark: 4, sendTimeout: 0 });
  private beaconTimer: NodeJS.Timeout | null = null;
  private rateTimer: NodeJS.Timeout | null = null;
  private startedAt = Date.now();
  private inAtLastBeat = 0;
  private lastIn = 0;
  private lastOut = 0;
  private rateIn = 0;
  private rateOut = 0;

  constructor(
    private readonly host: HealthHost,
    private readonly causes: CauseCounter,
    private readonly log: Logger,
  ) {}

  /** Starts the beacons (to the agent at `agentEndpoint`) and the rates. */
  start(agentEndpoint: string): void {
    this.startedAt = Date.now();
    this.beacons.connect(agentEndpoint);
    this.beaconTimer = setInterval(() => this.sendBeacon(), this.host.routing.map.heartbeatMs);
    this.beaconTimer.unref();
    this.rateTimer = setInterval(() => this.sampleRates(), 1000);
    this.rateTimer.unref();
  }

  stop(): void {
    if (this.rateTimer) clearInterval(this.rateTimer);
    if (this.beaconTimer) clearInterval(this.beaconTimer);
    this.beacons.close();
  }

  /** Milliseconds since the portal started serving. */
  uptimeMs(now = Date.now()): number {
    return now - this.startedAt;
  }

  /** How long a component may be silent before its slot is dead. */
  deadMs(): number {
    return DEAD_AFTER_BEATS * this.host.routing.map.heartbeatMs;
  }

  /** Records per bucket and the slots' busy time since the portal started (portalctl weights). */
  load(server: string, routing: Routing, slots: readonly Slot[]): LoadReport {
    const buckets = Array.from(routing.bucketRecords);
    const busy = slots.map((s) => ({ slot: s.index, processed: s.processed, busyMs: Math.round(s.busyMs) }));
    return { server, stream: routing.stream.name, epoch: routing.epoch, sinceMs: this.uptimeMs(), buckets, slots: busy };
  }

  /** Counters, rates and per-slot state, as `portalctl status` shows them. */
  stats(): PortalStats {
    const h = this.host;
    const now = Date.now();
    return {
      server: h.server,
      stream: h.routing.stream.name,
      epoch: h.routing.epoch,
      digest: h.routing.map.digest,
      port: h.port(),
      uptimeMs: this.uptimeMs(now),
      holds: h.holds(),
      ...h.counters,
      recordsForwarded: h.forwarded(),
      queuedRecords: h.egress.queued,
      readingPaused: h.readingPaused(),
      paused: h.paused(),
      spool: h.spool ? { ...h.spool.stats(), blocked: h.blocked() } : null,
      cancelled: h.cancels(),
      rates: { inPerSec: this.rateIn, outPerSec: this.rateOut },
      errors: { ...this.causes.totals },
      slots: h.egress.slots.map((s) => s.view(now, this.deadMs())),
      limits: h.limits(),
    };
  }

  /**
   * This portal's beacon. `advance` starts a new "received since the last beacon" period (the
   * periodic beacon does; a `beacon` request from the agent does not).
   */
  beacon(advance: boolean): PortalBeacon {
    const h = this.host;
    const now = Date.now();
    const received = h.counters.recordsIn - this.inAtLastBeat;
    if (advance) this.inAtLastBeat = h.counters.recordsIn;
    const slots = h.egress.slots.map((s) => s.view(now, this.deadMs()));
    let inflight = 0;
    for (const s of slots) inflight += s.inflight;
    // A missing or dead slot holds its records; with none held it keeps nobody waiting.
    const slotsIdle = slots.every((s) => s.state === 'idle' || (s.state !== 'busy' && s.queued === 0 && s.inflight === 0));
    const queued = h.egress.queued;
    const paused = h.paused();
    return {
      type: 'portal',
      server: h.server,
      stream: h.routing.stream.name,
      pid: process.pid,
      port: h.port(),
      epoch: h.routing.epoch,
      digest: h.routing.map.digest,
      holds: h.holds(),
      paused,
      received,
      recordsIn: h.counters.recordsIn,
      recordsOut: h.counters.recordsOut,
      inflight,
      queued: queued - inflight,
      // A paused portal takes nothing in: records received before the pause count only while
      // they are still queued or in flight.
      idle: (received === 0 || paused) && queued === 0 && slotsIdle,
      rates: { inPerSec: this.rateIn, outPerSec: this.rateOut },
      errors: { ...this.causes.totals },
      flowRefusals: { ...h.flowRefusals() },
      cancelled: h.cancels(),
      slots,
      ...(h.spool ? { spool: this.spoolBeacon(h.spool) } : {}),
      limits: h.limits(),
      at: now,
      configVersion: h.configVersion?.() ?? 0,
    };
  }

  private spoolBeacon(spool: Spool): SpoolBeacon {
    const st = spool.stats();
    return {
      mode: st.mode,
      state: st.state,
      whenFull: this.host.whenFull(),
      blocked: this.host.blocked(),
      records: st.records,
      bytes: st.bytes,
      maxBytes: st.maxBytes,
      freeBytes: st.freeBytes,
      minFreeBytes: st.minFreeBytes,
      tornTails: st.tornTails,
    };
  }

  private sampleRates(): void {
    const c = this.host.counters;
    this.rateIn = c.recordsIn - this.lastIn;
    this.rateOut = c.recordsOut - this.lastOut;
    this.lastIn = c.recordsIn;
    this.lastOut = c.recordsOut;
  }

  private sendBeacon(): void {
    this.noteSlotStates();
    this.host.tick();
    const beacon = JSON.stringify(this.beacon(true));
    // No agent listening is normal (a portal run by hand): the beacon is simply dropped.
    this.beacons.send(beacon).catch(() => undefined);
  }

  /** Logs each slot whose component has just gone silent (dead), or is heard from again. */
  private noteSlotStates(): void {
    const now = Date.now();
    const stream = this.host.routing.stream.name;
    const spooled = this.host.spool !== null;
    for (const slot of this.host.egress.slots) {
      const state = slot.state(now, this.deadMs());
      if (state === 'dead' && slot.lastState !== 'dead') {
        this.log.warn(
          { slot: slot.index, pid: slot.pid, silentMs: now - slot.heardAt, queued: slot.queuedRecords, inflight: slot.inflightRecords },
          `portal ${stream}: slot ${slot.index} (pid ${slot.pid}) is dead: silent for ${now - slot.heardAt} ms; its ${slot.queuedRecords + slot.inflightRecords} records wait for it${spooled ? ', and new ones go to the spool' : ''}`,
        );
      } else if (slot.lastState === 'dead' && state !== 'dead' && state !== 'missing') {
        this.log.info({ slot: slot.index, slot_pid: slot.pid }, `portal ${stream}: slot ${slot.index} (pid ${slot.pid}) is heard from again`);
      }
      slot.lastState = state;
    }
  }
}
