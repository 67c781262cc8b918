/**
 * Cancellation in a portal (docs/protocol.md, "Cancellation"): the roots whose records are
 * dropped, and the dropping.
 *
 *   agent --cancel [{root, stream, expiresAt}]--> apply: drop what waits in the slots' queues and
 *     the hold groups, then CANCEL (22) to every registered component; CANCELLED (23) back
 *   ingress (a new batch), replay (records read back from the spool): filter() while any is in force
 *
 * While no cancellation is in force (`active` false) nothing here runs on a record's path: the
 * portal asks `active` once per batch. A dropped record counts as taken care of: its batch is
 * acknowledged with the dropped records in the ACK's cancelled count, never as processed.
 */
import type { Logger } from '../log';
import { type Cancellation, type CancelMessage, CONFIRM_MS, type PortalCancelReply } from '../protocol/cancel';
import { dropRoots, type Filtered, rootTail } from '../protocol/root';
import { encodeHeader, MessageType } from '../protocol/wire';
import type { CancelCounts } from '../protocol/beacons';
import type { Egress, EgressEvents } from './egress';
import type { Routing } from './router';
import type { Delivery, InBatch, Slot } from './slot';


/** What cancelling needs of the rest of the portal. */
export interface CancelsHost {
  readonly slots: readonly Slot[];
  epoch(): number;
  /** The deliveries kept for the hold groups (arrays the holds own; edited in place). */
  held(): Delivery[][];
  /** Writes what staging holds now, so its deliveries are in the queues. */
  flush(): void;
  live(slot: Slot): boolean;
  /** Sends a message to the slot's registered component. */
  tell(slot: Slot, frames: Buffer[]): void;
  /** A queued delivery cut to `count` records in `body` (Egress.shrink), its batch's cancelled count raised. */
  shrunk(d: Delivery, body: Buffer, count: number): void;
  /** A queued delivery dropped whole: forget it, settle its batch, carry its spool marks on. */
  gone(d: Delivery, before: Delivery | null): void;
}

interface Wait {
  want: Set<number>;
  got: number[];
  done: () => void;
}

export class Cancels {
  /** Records dropped since the portal started; records its components skipped as cancelled. */
  dropped = 0;
  skipped = 0;
  private readonly roots = new Map<string, Cancellation>();
  /** rootTail of each root in force: what a record's root is compared with first (dropRoots). */
  private tails = new Set<number>();
  private readonly waits = new Map<number, Wait>();
  private seq = 0;

  constructor(
    private readonly host: CancelsHost,
    private readonly log: Logger,
  ) {}

  /** True while a cancellation is in force: only then do records get looked at. */
  get active(): boolean {
    return this.roots.size > 0;
  }

  readonly isCancelled = (root: string): boolean => {
    const c = this.roots.get(root);
    return c !== undefined && c.expiresAt > Date.now();
  };

  /** `body` without the records of cancelled roots (counted), or null if it has none. */
  filter(body: Buffer, count: number): Filtered | null {
    const f = dropRoots(body, count, this.tails, this.isCancelled);
    if (f) this.dropped += f.dropped;
    return f;
  }

  /** Puts cancellations in force without telling anyone (the agent's file, at start). */
  load(list: readonly Cancellation[]): void {
    const now = Date.now();
    for (const c of list) if (c.expiresAt > now) this.roots.set(c.root, c);
    this.retail();
  }

  /** What the portal's beacons and stats show; forgets expired cancellations (each heartbeat asks). */
  counts(): CancelCounts {
    this.prune();
    return { dropped: this.dropped, skipped: this.skipped, inForce: this.roots.size };
  }

  /** The slots' events cancelling listens to (egress.ts). */
  egressEvents(): Pick<EgressEvents, 'onCancelled' | 'onSkipped'> {
    return { onCancelled: (slot, seq) => this.onConfirmed(slot, seq), onSkipped: (d, n) => this.onSkipped(d, n) };
  }

  /** Forgets the cancellations that have expired. */
  prune(now = Date.now()): void {
    const before = this.roots.size;
    for (const [root, c] of this.roots) if (c.expiresAt <= now) this.roots.delete(root);
    if (this.roots.size < before) this.retail();
  }

  /** The tails of the roots in force again, after they changed. */
  private retail(): void {
    this.tails = new Set([...this.roots.keys()].map(rootTail));
  }

  /**
   * Puts `list` in force: drops the records of those roots waiting in the portal (queued, held),
   * tells every registered component, and answers once the live ones confirmed (or CONFIRM_MS).
   */
  async apply(list: readonly Cancellation[]): Promise<PortalCancelReply> {
    const before = this.dropped;
    this.load(list);
    this.host.flush();
    for (const slot of this.host.slots) this.dropQueued(slot.pending, slot);
    for (const deliveries of this.host.held()) this.dropQueued(deliveries, null);
    const seq = ++this.seq;
    const frames = this.message(seq, list);
    const want = new Set<number>();
    for (const slot of this.host.slots) {
      if (!slot.routingId) continue;
      this.host.tell(slot, frames);
      if (this.host.live(slot)) want.add(slot.index);
    }
    const wait: Wait = { want, got: [], done: () => undefined };
    if (want.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        wait.done = resolve;
        this.waits.set(seq, wait);
        timer = setTimeout(resolve, CONFIRM_MS);
      });
      clearTimeout(timer);
      this.waits.delete(seq);
    }
    const dropped = this.dropped - before;
    this.log.info({ roots: list.map((c) => c.root), dropped }, `cancel: ${list.length} root(s) in force; ${dropped} records dropped here`);
    return { ok: true, dropped, confirmed: wait.got.sort((a, b) => a - b), unconfirmed: [...want].filter((s) => !wait.got.includes(s)).sort((a, b) => a - b) };
  }

  /** A component registered: it gets every cancellation in force before any delivery. */
  onRegistered(slot: Slot): void {
    if (this.roots.size === 0) return;
    this.prune();
    if (this.roots.size > 0) this.host.tell(slot, this.message(0, [...this.roots.values()]));
  }

  /** A component skipped `n` records of delivery `d` as cancelled (its DONE said so). */
  onSkipped(d: Delivery, n: number): void {
    this.skipped += n;
    if (d.batch) d.batch.cancelled += n;
  }

  /** A component confirmed CANCEL `seq`. */
  onConfirmed(slot: Slot, seq: number): void {
    const w = this.waits.get(seq);
    if (!w || !w.want.has(slot.index) || w.got.includes(slot.index)) return;
    w.got.push(slot.index);
    if (w.got.length === w.want.size) w.done();
  }

  private message(seq: number, list: readonly Cancellation[]): Buffer[] {
    const body: CancelMessage = { cancellations: list.map((c) => ({ root: c.root, expiresAt: c.expiresAt })) };
    return [encodeHeader(MessageType.CANCEL, seq, this.host.epoch(), list.length), Buffer.from(JSON.stringify(body))];
  }

  /** Drops cancelled records from a queue of deliveries not yet sent, in place. */
  private dropQueued(queue: Delivery[], slot: Slot | null): void {
    let kept = 0;
    let last: Delivery | null = slot ? lastInflight(slot) : null;
    for (let i = 0; i < queue.length; i++) {
      const d = queue[i]!;
      const f = this.filter(d.body, d.count);
      if (f && f.count === 0) {
        this.host.gone(d, last);
        continue;
      }
      if (f) this.host.shrunk(d, f.body, f.count);
      queue[kept++] = d;
      last = d;
    }
    queue.length = kept;
  }
}

/**
 * Spool marks of records dropped whole: they go with the slot's last delivery queued or in flight,
 * so each bucket's cursor still moves in order; with none, at once.
 */
export function carryMarks(marks: number[], slot: Slot, commit: (marks: number[]) => void): void {
  const last = slot.pending[slot.pending.length - 1] ?? lastInflight(slot);
  if (last) (last.marks ??= []).push(...marks);
  else commit(marks);
}

function lastInflight(slot: Slot): Delivery | null {
  let last: Delivery | null = null;
  for (const d of slot.inflight.values()) last = d;
  return last;
}

/** The parts of a portal cancelling uses; read when used (the portal makes some of them later). */
export interface CancelParts {
  egress: Egress;
  routing: Routing;
  staging: { flush(): void } | null;
  ingress: { ack(batch: InBatch): void };
  replay: { commit(marks: number[]): void } | null;
}

/** The host of a portal's Cancels, over its parts. */
export function portalCancelsHost(parts: () => CancelParts): CancelsHost {
  return {
    get slots() {
      return parts().egress.slots;
    },
    epoch: () => parts().routing.epoch,
    held: () => parts().routing.holds.groupsHeld().map((g) => g.group.deliveries),
    flush: () => parts().staging?.flush(),
    live: (slot) => parts().egress.live(slot),
    tell: (slot, frames) => parts().egress.tell(slot, frames),
    shrunk: (d, body, count) => {
      if (d.batch) d.batch.cancelled += d.count - count;
      parts().egress.shrink(d, body, count);
    },
    gone: (d, before) => {
      const p = parts();
      p.egress.drop(d);
      if (d.marks) {
        if (before) (before.marks ??= []).push(...d.marks);
        else p.replay?.commit(d.marks);
      }
      if (!d.batch) return;
      d.batch.cancelled += d.count;
      if (--d.batch.remaining === 0) p.ingress.ack(d.batch);
    },
  };
}
