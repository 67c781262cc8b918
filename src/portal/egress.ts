/**
 * The portal's side of its component slots: the ipc ROUTER the components connect to, every
 * delivery made and not yet done, and the records they hold.
 *
 *   component --READY {slot, pid}--> Egress: the slot is served (unfinished deliveries first)
 *   Egress --DELIVER (seq = delivery id)--> component, at most `slotWindow` in flight per slot
 *   component --DONE (seq)--> Egress --events.onDone(delivery)--> the portal acknowledges, reads on
 *   component --HEARTBEAT {ComponentBeacon}--> Egress: the slot is alive (and how busy)
 *
 * Named hook: `flotilla:portal:deliver` ({ id, seq, slot, ordinal, count, at }) for each DELIVER
 * handed to the socket, and `flotilla:portal:done` ({ id, start, end }) around each DONE's
 * handling, published only while someone subscribes (bench/tail/).
 */
import { channel } from 'node:diagnostics_channel';
import * as zmq from 'zeromq';
import type { CauseCounter, Logger } from '../log';
import type { ComponentBeacon } from '../protocol/beacons';
import { decodeHeader, encodeHeader, MessageType, readCountFrame } from '../protocol/wire';
import { Outbox } from '../transport/outbox';
import { receiveEach } from '../transport/receive';
import { type Delivery, type InBatch, Slot } from './slot';

const deliverChannel = channel('flotilla:portal:deliver');
const doneChannel = channel('flotilla:portal:done');

/** What the slots tell the rest of the portal. */
export interface EgressEvents {
  /** A delivery is done: acknowledge its batch, move the spool cursor, read on. */
  onDone(d: Delivery): void;
  /** A component registered for `slot`, or said it is alive with nothing pending. */
  onReady(slot: Slot): void;
  onHeartbeat(slot: Slot): void;
  /** A component registered for `slot`, before its deliveries go to it (configs.ts: its configuration first; cancels.ts: the cancellations in force). */
  onRegistered(slot: Slot): void;
  /** A CONFIGURED from `slot`'s registered component (configs.ts). */
  onConfigured(slot: Slot, body: Buffer | undefined): void;
  /** A component confirmed a CANCEL (its seq). */
  onCancelled?(slot: Slot, seq: number): void;
  /** A DONE said `n` records of the delivery were skipped as cancelled, not processed. */
  onSkipped?(d: Delivery, n: number): void;
}

/** What the slots need to know of the portal. */
export interface EgressHost {
  readonly stream: string;
  /** The map epoch in force, for DELIVER headers. */
  epoch(): number;
  /** How long a component may stay silent before its slot is dead. */
  deadMs(): number;
  /** `max_slot_bytes`: a slot whose backlog passes it is full. */
  maxSlotBytes(): number;
}

export class Egress {
  readonly slots: Slot[];
  /** Records held in the portal: waiting for a slot or in flight to it. */
  queued = 0;
  /** Their bytes (max_queued_bytes), counted per delivery, never per record. */
  queuedBytes = 0;
  /** Slots whose backlog is past max_slot_bytes now. */
  slotsFull = 0;
  /** Times a slot's backlog passed max_slot_bytes. */
  slotBytesStops = 0;
  private readonly socket = new zmq.Router({ linger: 0, mandatory: true, sendHighWaterMark: 100_000 });
  private readonly out: Outbox;
  private readonly deliveries = new Map<number, Delivery>();
  private nextId = 1;
  private readonly ordinals: number[] = [];
  private closed = false;

  constructor(
    slots: number,
    private readonly slotWindow: number,
    private readonly host: EgressHost,
    private readonly events: EgressEvents,
    private readonly causes: CauseCounter,
    private readonly log: Logger,
  ) {
    this.slots = Array.from({ length: slots }, (_, i) => new Slot(i));
    this.out = new Outbox('portal:egress', this.socket, (err) => causes.count('SLOT_UNREACHABLE', err.message));
  }

  /** The id the next delivery will get: deliveries below it were made before now. */
  get mark(): number {
    return this.nextId;
  }

  /** True if a delivery made before `mark` is not done yet. */
  hasBefore(mark: number): boolean {
    // Ids wrap after 2^32 - 1; a Map iterates in insertion order, so the oldest comes first.
    for (const id of this.deliveries.keys()) return id < mark;
    return false;
  }

  async bind(endpoint: string): Promise<void> {
    await this.socket.bind(endpoint);
  }

  /** Starts taking the components' messages. */
  start(): void {
    void this.loop();
  }

  close(): void {
    this.closed = true;
    this.out.close();
    this.socket.close();
  }

  /** Makes a delivery of `count` records in `body` for `slot`, counted as held from now on. */
  make(slot: Slot, body: Buffer, count: number, batch: InBatch | null, marks: number[] | null): Delivery {
    const d: Delivery = { id: this.nextId++, batch, slot, body, count, sentAt: performance.now(), marks, handed: false };
    if (this.nextId > 0xffffffff) this.nextId = 1;
    this.deliveries.set(d.id, d);
    slot.queuedRecords += count;
    this.queued += count;
    this.addBytes(slot, body.length);
    return d;
  }

  /** Forgets a delivery that will never be sent (taken back, or written to the spool instead). */
  drop(d: Delivery): void {
    this.deliveries.delete(d.id);
    d.slot.queuedRecords -= d.count;
    this.queued -= d.count;
    this.addBytes(d.slot, -d.body.length);
  }

  /** A queued delivery cut to `count` records in `body` (a cancellation dropped the rest): its counts and bytes follow. */
  shrink(d: Delivery, body: Buffer, count: number): void {
    const dropped = d.count - count;
    this.addBytes(d.slot, body.length - d.body.length);
    d.body = body;
    d.count = count;
    d.slot.queuedRecords -= dropped;
    this.queued -= dropped;
  }

  /** True if `slot`'s backlog is past max_slot_bytes. */
  full(slot: Slot): boolean {
    return slot.bytes > this.host.maxSlotBytes();
  }

  /** Counts `n` bytes more (or fewer) held for `slot`, and whether that made it full or not. */
  private addBytes(slot: Slot, n: number): void {
    const was = this.full(slot);
    slot.bytes += n;
    this.queuedBytes += n;
    const is = this.full(slot);
    if (is === was) return;
    this.slotsFull += is ? 1 : -1;
    if (is) this.slotBytesStops++;
  }

  /** Queues a delivery for its slot and sends what the slot's window allows. */
  enqueue(d: Delivery): void {
    d.slot.pending.push(d);
    this.pump(d.slot);
  }

  /** Sends a slot's pending deliveries while its window has room. */
  pump(slot: Slot): void {
    if (!slot.routingId) return;
    const epoch = this.host.epoch();
    while (slot.inflight.size < this.slotWindow && slot.pending.length > 0) {
      const d = slot.pending.shift()!;
      slot.inflight.set(d.id, d);
      slot.queuedRecords -= d.count;
      slot.inflightRecords += d.count;
      // Counted once, when first sent: a delivery dropped before (spooled instead, cancelled) is
      // not, and the records read back for it from the spool are, so the count only goes up.
      if (!d.handed) {
        d.handed = true;
        slot.routed += d.count;
      }
      d.sentAt = performance.now();
      if (deliverChannel.hasSubscribers) {
        const ordinal = (this.ordinals[slot.index] = (this.ordinals[slot.index] ?? -1) + 1);
        deliverChannel.publish({ id: d.id, seq: d.batch?.seq ?? -1, slot: slot.index, ordinal, count: d.count, at: d.sentAt });
      }
      this.out.push([slot.routingId, encodeHeader(MessageType.DELIVER, d.id, epoch, d.count), d.body]);
    }
  }

  /** Sends a message that is not a delivery (a CONFIGURE, a CANCEL) to `slot`'s component, out of band. */
  tell(slot: Slot, frames: Buffer[]): void {
    if (slot.routingId) this.out.push([slot.routingId, ...frames]);
  }

  /** True if `slot` has a component that was heard from lately. */
  live(slot: Slot, now = Date.now()): boolean {
    return slot.live(now, this.host.deadMs());
  }

  private loop(): Promise<void> {
    return receiveEach(this.socket, {
      closed: () => this.closed,
      handle: (msg) => this.onMessage(msg),
      failed: (err) => this.causes.count('RECEIVE_FAILED', err.message),
      crashed: (err) => this.log.error({ err }, 'portal: unexpected error handling a component message'),
    });
  }

  private onMessage(msg: Buffer[]): void {
    const header = decodeHeader(msg[1]);
    if (!header) return this.causes.count('COMPONENT_MALFORMED', 'component sent a frame that is not a header');
    if (header.type === MessageType.DONE) return this.onDone(header.seq, msg[2]);
    if (header.type === MessageType.HEARTBEAT) return this.onHeartbeat(msg[0]!, msg[2]);
    if (header.type === MessageType.READY) return this.onReady(msg[0]!, msg[2]);
    if (header.type === MessageType.CONFIGURED) return this.onConfigured(msg[0]!, msg[2]);
    if (header.type === MessageType.CANCELLED) {
      const slot = this.slots.find((s) => s.routingId?.equals(msg[0]!));
      return slot ? this.events.onCancelled?.(slot, header.seq) : undefined;
    }
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
    if (!slot.register(routingId, typeof hello.pid === 'number' ? hello.pid : 0)) return;
    this.log.info({ slot: slot.index, slot_pid: slot.pid }, `portal ${this.host.stream}: slot ${slot.index} ready (pid ${slot.pid})`);
    this.events.onRegistered(slot);
    this.pump(slot);
    this.events.onReady(slot);
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
    if (typeof beacon.configVersion === 'number') slot.config.running = beacon.configVersion; // the version it runs
    this.events.onHeartbeat(slot);
  }

  private onConfigured(routingId: Buffer, frame: Buffer | undefined): void {
    const slot = this.slots.find((s) => s.routingId?.equals(routingId));
    if (!slot) return; // not (or no longer) a registered connection
    slot.heardAt = Date.now();
    this.events.onConfigured(slot, frame);
  }

  private onDone(id: number, skipped: Buffer | undefined): void {
    const start = doneChannel.hasSubscribers ? performance.now() : 0;
    const d = this.deliveries.get(id);
    if (!d) return this.causes.count('COMPONENT_UNKNOWN_DELIVERY', `DONE for delivery ${id}, which is not in flight`);
    if (!d.slot.finish(d, performance.now())) return; // answered twice; counted once
    // A second frame: records the component skipped as cancelled (docs/protocol.md, DONE).
    const n = readCountFrame(skipped);
    if (n > 0) this.events.onSkipped?.(d, n);
    this.deliveries.delete(id);
    this.queued -= d.count;
    this.addBytes(d.slot, -d.body.length);
    this.pump(d.slot);
    this.events.onDone(d);
    if (start > 0) doneChannel.publish({ id, start, end: performance.now() });
  }
}
