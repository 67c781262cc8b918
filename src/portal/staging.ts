/**
 * The spool side of ingress: which of a batch's records go to disk, their group commit, and what
 * happens when the spool has no room.
 *
 *   laneModes(plan): per lane, LANE_MEMORY (acked when processed); LANE_SPOOL, read back later (a
 *     slot that is spooling: the stream paused, the slot dead, missing or full; and records
 *     forwarded from a held bucket's old owner); LANE_BOTH, the spool and memory (mode always)
 *   stage -> keep: the batch waits, with every batch staged in this turn of the event loop ...
 *   flush (group commit): ... one write per bucket for all of them; then each batch's parts are
 *     placed (host.place) and, once on disk, mode-2 parts are acked; spooling slots read on
 *
 * A write that fails takes its batches back whole (nothing of them was delivered), and they are
 * refused (when_full: reject) or parked and tried again until there is room (block).
 */
import type { WireErrorCode } from '../errors';
import type { CauseCounter, Logger } from '../log';
import type { RecordIndex } from '../protocol/envelope';
import { type Spool, SpoolFullError, type WriteResult } from '../spool/spool';
import type { Delivery, InBatch, Slot } from './slot';
import { type BatchPlan, cutLanes, LANE_BOTH, LANE_MEMORY, LANE_SPOOL } from './router';

/** Under load, how often staged batches are written to the spool (see scheduleFlush). */
const GROUP_COMMIT_MS = 120;
/** ...or sooner, once this much is staged. */
const GROUP_COMMIT_BYTES = 16 << 20;
/** While blocked on a full spool, how often the parked batch is tried again. */
const BLOCKED_RETRY_MS = 50;

/** A batch staged in the spool, waiting for the next group commit. */
interface Staged {
  msg: Buffer[];
  batch: InBatch;
  /** Its deliveries and their lanes, handed on once written. */
  placed: Delivery[];
  lanes: number[];
  /** (bucket, generation, offset, records) quads to mark read in the spool once written. */
  reads: number[];
}

/** What staging needs of the rest of the portal: the slots, and the steps before and after it. */
export interface StagingHost {
  readonly slots: readonly Slot[];
  /** The lane of bucket `b` now (its slot, or its slot in its hold group). */
  laneOf(b: number): number;
  paused(): boolean;
  /** The slot has a component heard from lately. */
  live(slot: Slot): boolean;
  /** The slot's backlog is past max_slot_bytes. */
  full(slot: Slot): boolean;
  make(slot: Slot, body: Buffer, count: number, batch: InBatch | null, marks: number[] | null): Delivery;
  drop(d: Delivery): void;
  /** flush -> place: a written batch's part goes to its slot (or its hold group). */
  place(d: Delivery, lane: number): void;
  /** flush -> feed: spooling slots read back what was just written. */
  feed(): void;
  ack(batch: InBatch): void;
  reject(sender: Buffer, seq: number, code: WireErrorCode, message: string): void;
  /** A staged batch taken back: undo its acceptance. */
  unaccept(batch: InBatch): void;
  /** unblock -> ingress: a parked batch is handled again, from the start. */
  retry(msg: Buffer[]): void;
  /** Room again: reading may go on (if the portal holds few enough records). */
  unblocked(): void;
}

export class Staging {
  /** Batches waiting for room in a full spool (when_full: block); nothing is read meanwhile. */
  private parked: Buffer[][] = [];
  private staged: Staged[] = [];
  private flushSoon: NodeJS.Timeout | null = null;
  private flushedAt = 0;
  private parkedTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    readonly spool: Spool,
    /** The stream's bucket count. */
    private readonly buckets: number,
    /** Spool mode always: every record is written before its ACK. */
    private readonly always: boolean,
    private readonly whenFull: 'block' | 'reject',
    /** Half a sender window: that many batches staged are written at once. */
    private readonly flushBatches: number,
    /** Records a slot may hold in memory before its records go to the spool (spill). */
    private readonly slotFull: number,
    private readonly host: StagingHost,
    private readonly causes: CauseCounter,
    private readonly log: Logger,
  ) {}

  /** True while a batch waits for room in the spool. */
  get blocked(): boolean {
    return this.parked.length > 0;
  }

  close(): void {
    this.closed = true;
    if (this.parkedTimer) clearTimeout(this.parkedTimer);
    if (this.flushSoon) clearTimeout(this.flushSoon);
  }

  /** Each lane's mode for this batch (see the top of this file), or null if nothing is written. */
  laneModes(plan: BatchPlan, forwarded: boolean): Uint8Array | null {
    const slots = this.host.slots;
    const nSlots = slots.length;
    const counts = plan.laneCount;
    const modes = new Uint8Array(counts.length);
    const paused = this.host.paused();
    let write = false;
    for (let l = 0; l < counts.length; l++) {
      if (counts[l] === 0) continue;
      if (l >= nSlots) {
        modes[l] = forwarded ? LANE_SPOOL : LANE_MEMORY;
      } else {
        const slot = slots[l]!;
        if (!slot.spooling && (paused || !this.host.live(slot) || slot.queuedRecords >= this.slotFull || this.host.full(slot))) slot.spooling = true;
        modes[l] = slot.spooling ? LANE_SPOOL : this.always ? LANE_BOTH : LANE_MEMORY;
      }
      if (modes[l] !== LANE_MEMORY) write = true;
    }
    return write ? modes : null;
  }

  /** Stages the records of lanes whose mode is not 0; throws SpoolFullError, staging nothing. */
  stage(body: Buffer, index: RecordIndex, plan: BatchPlan, modes: Uint8Array): WriteResult {
    const take = new Uint8Array(plan.count);
    const lane = plan.lane;
    for (let i = 0; i < plan.count; i++) take[i] = modes[lane[i]!] === LANE_MEMORY ? 0 : 1;
    return this.spool.stage(body, index.starts, plan.bucket, plan.count, take);
  }

  /**
   * Keeps a staged batch until the group commit: its memory lanes are cut into deliveries now
   * (mode-2 lanes carry their spool positions, and count as acknowledged once written).
   */
  keep(msg: Buffer[], batch: InBatch, body: Buffer, index: RecordIndex, plan: BatchPlan, modes: Uint8Array, res: WriteResult): void {
    const entry: Staged = { msg, batch, placed: [], lanes: [], reads: [] };
    const lanes = modes.length;
    const bodies = cutLanes(body, index, plan, modes);
    let marks: (number[] | undefined)[] | null = null;
    if (this.always) {
      // Lanes written and delivered from memory (mode 2): their records are marked read in the
      // spool once written, and the delivery carries their positions for the cursor.
      marks = new Array(lanes);
      for (let k = 0; k < res.n; k++) {
        const b = res.bucket[k]!;
        const l = this.host.laneOf(b);
        if (modes[l] !== LANE_BOTH) continue;
        (marks[l] ??= []).push(b, res.gen[k]!, res.off[k]!, res.records[k]!);
        entry.reads.push(b, res.gen[k]!, res.off[k]!, res.records[k]!);
      }
    }
    const slots = this.host.slots;
    for (let l = 0; l < lanes; l++) {
      const lBody = bodies[l];
      if (lBody === undefined) continue;
      // A lane on disk too was acknowledged with the write; the others when processed.
      const owner = modes[l] === LANE_BOTH ? null : batch;
      if (owner) batch.remaining++;
      const d = this.host.make(slots[l % slots.length]!, lBody, plan.laneCount[l]!, owner, marks?.[l] ?? null);
      entry.placed.push(d);
      entry.lanes.push(l);
    }
    this.staged.push(entry);
    this.scheduleFlush();
  }

  /**
   * Writes the batches staged in this turn of the event loop, one write per bucket for all of
   * them; then sends their deliveries on and acknowledges each batch whose records are all on
   * disk. If the write fails, the batches are taken back whole and refused or parked.
   */
  flush(): void {
    if (this.flushSoon) clearTimeout(this.flushSoon);
    this.flushSoon = null;
    const entries = this.staged;
    if (entries.length === 0) return;
    this.staged = [];
    const spool = this.spool;
    this.flushedAt = performance.now();
    try {
      spool.flush();
    } catch (err) {
      if (!(err instanceof SpoolFullError)) throw err;
      for (const e of entries) this.unstage(e);
      for (let i = entries.length - 1; i >= 0; i--) this.refused(entries[i]!.msg, entries[i]!.batch.seq, err, true);
      return;
    }
    for (const e of entries) {
      const r = e.reads;
      for (let i = 0; i < r.length; i += 4) spool.markRead(r[i]!, r[i + 1]!, r[i + 2]!, r[i + 3]!);
      for (let i = 0; i < e.placed.length; i++) this.host.place(e.placed[i]!, e.lanes[i]!);
      if (e.batch.remaining === 0) this.host.ack(e.batch);
    }
    this.host.feed();
  }

  /**
   * The spool has no room for a batch: refuse it (when_full: reject), or park it and read nothing
   * more until there is room (block); `first` puts it ahead of those parked already.
   */
  refused(msg: Buffer[], seq: number, err: SpoolFullError, first: boolean): void {
    const sender = msg[0]!;
    if (this.whenFull === 'reject') return this.host.reject(sender, seq, 'SPOOL_FULL', err.message);
    this.causes.count('SPOOL_FULL', `${err.message}; senders wait until there is room (when_full: block)`);
    if (first) this.parked.unshift(msg);
    else this.parked.push(msg);
    this.parkedTimer ??= setTimeout(() => this.retryParked(), BLOCKED_RETRY_MS);
  }

  /** True if records of `slot`'s buckets are staged and not yet written. */
  stagedFor(slot: Slot): boolean {
    const spool = this.spool;
    if (!spool.hasStaged) return false;
    const n = this.host.slots.length;
    for (let b = slot.index; b < this.buckets; b += n) if (spool.stagedOf(b) > 0) return true;
    return false;
  }

  /**
   * Group commit: the first batch after a quiet spell is written at the end of this turn of the
   * event loop; under load, writes come every GROUP_COMMIT_MS, or once half a sender window of
   * batches is staged, each taking all the batches staged since (a write per bucket costs about
   * the same for one record as for a hundred).
   */
  private scheduleFlush(): void {
    // Half a sender window staged: write now, so no sender waits on a full window for the timer.
    if (this.spool.stagedTotalBytes >= GROUP_COMMIT_BYTES || this.staged.length >= this.flushBatches) return this.flush();
    if (this.flushSoon) return;
    const wait = GROUP_COMMIT_MS - (performance.now() - this.flushedAt);
    this.flushSoon = setTimeout(() => this.flush(), Math.max(0, wait));
  }

  /** Takes a staged batch back: its deliveries are dropped and it counts as never accepted. */
  private unstage(e: Staged): void {
    for (const d of e.placed) this.host.drop(d);
    this.host.unaccept(e.batch);
  }

  /** Tries the parked batches again, in order, until one is parked again. */
  private retryParked(): void {
    this.parkedTimer = null;
    if (this.closed) return;
    const queue = this.parked;
    this.parked = [];
    for (let i = 0; i < queue.length; i++) {
      try {
        this.host.retry(queue[i]!);
      } catch (err) {
        this.log.error({ err }, 'portal: unexpected error handling a batch');
      }
      if (this.parked.length > 0) {
        this.parked.push(...queue.slice(i + 1));
        return;
      }
    }
    this.host.unblocked();
  }
}
