/**
 * A local component slot as its portal sees it: who serves it, what waits for it and what it
 * has in flight, and what it has done; and the values a batch becomes on its way to the slots
 * (the sender's batch, and a delivery: its part for one slot, or records read back from the
 * spool). A slot's records are never handed to another slot: a component that registers again
 * gets everything it had not finished, first and in order.
 */
import { type ComponentBeacon, SERVICE_MS_BOUNDS, type SlotConfigView, type SlotState, type SlotView } from '../protocol/beacons';

/** A sender's batch, waiting for its slots (in spool mode `always`, acknowledged once written). */
export interface InBatch {
  /** The sender's routing id, and the same as a string (a map key). */
  sender: Buffer;
  senderKey: string;
  seq: number;
  count: number;
  /** Deliveries of the batch not yet done; the batch is acknowledged when this reaches 0. */
  remaining: number;
  /** Its records dropped by a cancellation (cancels.ts): the ACK says so, in its cancelled frame. */
  cancelled: number;
}

/** One slot's part of a batch, or records read back from the spool. */
export interface Delivery {
  id: number;
  /** The batch to acknowledge when every part is done; null when it was acknowledged on write. */
  batch: InBatch | null;
  slot: Slot;
  body: Buffer;
  count: number;
  /** performance.now() when it was made, then when it was sent to the slot. */
  sentAt: number;
  /**
   * Spooled records in this delivery, as (bucket, generation, end offset, records) quads: once
   * it is done, each bucket's spool cursor moves past them.
   */
  marks: number[] | null;
  /** Sent to a component once (counted in the slot's `routed`; a resend after a restart is not counted again). */
  handed: boolean;
}

export class Slot {
  /** The registered component's connection; null while none is (missing). */
  routingId: Buffer | null = null;
  pid = 0;
  /** Waiting to be sent, in order. */
  pending: Delivery[] = [];
  /** Sent, waiting for DONE, in order of sending. */
  readonly inflight = new Map<number, Delivery>();
  queuedRecords = 0;
  inflightRecords = 0;
  /** Bytes of the records queued for the slot or in flight to it (its backlog, for max_slot_bytes). */
  bytes = 0;
  processed = 0;
  /** Mean time from DELIVER to DONE, ms, smoothed. */
  serviceMs = 0;
  /**
   * The component's busy time, ms: for each delivery done, from when it was sent or the previous
   * DONE, whichever is later, to its DONE (a component works on one delivery at a time).
   */
  busyMs = 0;
  /** Records sent to the slot's component, each once (egress.ts counts them as it first sends them). */
  routed = 0;
  /** Deliveries by time to DONE, per bound of SERVICE_MS_BOUNDS (one more: above the last). */
  readonly serviceCounts = new Array<number>(SERVICE_MS_BOUNDS.length + 1).fill(0);
  serviceMsSum = 0;
  /** performance.now() of the slot's last DONE; 0 before one. */
  doneAt = 0;
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
  /** The slot's configuration: wanted, running, rejected (configs.ts keeps it). */
  readonly config: SlotConfigView = { running: null, wanted: 0, rejected: null };

  constructor(readonly index: number) {}

  /**
   * A component registers (READY) from `routingId`: what the slot had in flight goes back to
   * the front of its queue, in order, to be sent to it again. False if it is the same
   * connection registering twice (nothing to do).
   */
  register(routingId: Buffer, pid: number): boolean {
    if (this.routingId?.equals(routingId)) return false;
    if (this.inflight.size > 0) {
      const unfinished = [...this.inflight.values()];
      for (const d of unfinished) {
        this.inflightRecords -= d.count;
        this.queuedRecords += d.count;
      }
      this.pending.unshift(...unfinished);
      this.inflight.clear();
    }
    this.routingId = routingId;
    this.heardAt = Date.now();
    this.beacon = null;
    this.pid = pid;
    this.registrations++;
    return true;
  }

  /** Sent and done: false if it was not in flight (a DONE answered twice counts once). */
  finish(d: Delivery, now: number): boolean {
    this.heardAt = Date.now();
    if (!this.inflight.delete(d.id)) return false;
    this.inflightRecords -= d.count;
    this.processed += d.count;
    const ms = now - d.sentAt;
    this.busyMs += now - Math.max(d.sentAt, this.doneAt);
    this.serviceMs = this.serviceMs === 0 ? ms : this.serviceMs * 0.9 + ms * 0.1;
    this.serviceMsSum += ms;
    this.doneAt = now;
    let i = 0;
    while (i < SERVICE_MS_BOUNDS.length && ms > SERVICE_MS_BOUNDS[i]!) i++;
    this.serviceCounts[i]!++;
    return true;
  }

  /** Registered and heard from within `deadMs`. */
  live(now: number, deadMs: number): boolean {
    return this.routingId !== null && now - this.heardAt <= deadMs;
  }

  /** missing (none registered), dead (silent for `deadMs`), busy (records here or in the component) or idle. */
  state(now: number, deadMs: number): SlotState {
    if (!this.routingId) return 'missing';
    if (now - this.heardAt > deadMs) return 'dead';
    if (this.queuedRecords > 0 || this.inflightRecords > 0) return 'busy';
    if (this.beacon && (this.beacon.inflight > 0 || this.beacon.received > 0)) return 'busy';
    return 'idle';
  }

  /** How long the slot has finished nothing while records are in flight to it (0 when none are). */
  stuckMs(): number {
    const first = this.inflight.values().next();
    if (first.done) return 0;
    return Math.max(0, Math.round(performance.now() - Math.max(this.doneAt, first.value.sentAt)));
  }

  /** The slot as beacons and stats show it. */
  view(now: number, deadMs: number): SlotView {
    return {
      slot: this.index,
      pid: this.pid,
      state: this.state(now, deadMs),
      queued: this.queuedRecords,
      inflight: this.inflightRecords,
      received: this.beacon?.received ?? 0,
      silentMs: this.heardAt === 0 ? -1 : now - this.heardAt,
      processed: this.processed,
      serviceMs: Math.round(this.serviceMs * 1000) / 1000,
      routed: this.routed,
      serviceCounts: this.serviceCounts.slice(),
      serviceMsSum: Math.round(this.serviceMsSum * 1000) / 1000,
      stuckMs: this.stuckMs(),
      epoch: this.beacon?.epoch ?? null,
      connected: this.routingId !== null,
      registrations: this.registrations,
      spooling: this.spooling,
      config: { ...this.config },
      bytes: this.bytes,
    };
  }
}
