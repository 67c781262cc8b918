/**
 * A portal's epoch switches: `switch` to the map's next epoch, `drained` (has everything from
 * before it been processed, and forwarded), and `release` (an old owner has drained the buckets
 * it gave this server). switch-plan.ts computes a switch; this file applies it.
 *
 *   agent --switch(e, digest)--> planSwitch(routing in force, next map) -> handover file, holds.begin
 *   agent --drained--> every delivery made before the switch done, nothing foreign left in the spool
 *   agent --release(from, e, digest, buckets)--> handover file, holds.release(from) -> to the slots
 *
 * Buckets the server gives up are refused from the switch on (WRONG_OWNER: a redirect) and
 * drain; buckets it takes over are held per old owner (holds.ts) until that owner has drained
 * them. The map in force and the holds are in the handover file before either takes effect, so
 * a portal that restarts comes back holding what it held (handover-file.ts).
 */
import { FlotillaError } from '../errors';
import type { CauseCounter, Logger } from '../log';
import { shortDigest } from '../map/digest';
import type { MapKeeper } from '../map/keeper';
import { bucketsOf } from '../map/route';
import type { DrainedReply, HoldView, ReleaseRequest, SwitchReply } from '../protocol/control';
import { RecordIndex } from '../protocol/envelope';
import { type Spool, SpoolFullError } from '../spool/spool';
import type { Delivery, InBatch, Slot } from './slot';
import type { Egress } from './egress';
import type { Forwarder } from './forwarder';
import type { HandoverFile } from './handover-file';
import { sameBuckets } from './holds';
import type { Routing } from './router';
import { planSwitch } from './switch-plan';

/** What epoch switches need of the rest of the portal. */
export interface EpochHost {
  readonly server: string;
  readonly routing: Routing;
  /** The map's keeper, read again at a switch; null: the portal was given a map only. */
  readonly keeper: MapKeeper | null;
  readonly egress: Egress;
  readonly spool: Spool | null;
  readonly forwarder: Forwarder | null;
  /** Where the map in force and the holds are kept; null: nowhere (a portal given a map only). */
  readonly file: HandoverFile | null;
  /** Milliseconds after which a silent component is dead. */
  deadMs(): number;
  /** Writes what is staged for the spool now (a switch or release must not overtake it). */
  flush(): void;
  feed(slot: Slot): void;
  ack(batch: InBatch): void;
}

export class Epochs {
  /** Deliveries with ids below this were made before the last epoch switch. */
  private drainMark = 0;
  private readonly heldIndex = new RecordIndex();
  private readonly startedAt = Date.now();
  /** Every component has said it has nothing in flight since this portal started (see drained). */
  private settled = false;

  constructor(
    private readonly host: EpochHost,
    private readonly causes: CauseCounter,
    private readonly log: Logger,
  ) {}

  /** Writes the map in force and the holds to the handover file. */
  save(): void {
    const { routing, file } = this.host;
    if (!file) return;
    const map = routing.map;
    file.save({ epoch: map.epoch, digest: map.digest, text: map.text, holds: routing.holds.held(), early: routing.holds.earlyReleases() });
  }

  /**
   * Switches to the map's next epoch (read again from the map file), which must have `digest`
   * when one is given. Buckets this server gives up are refused from now on and drain; buckets
   * it takes over are held per old owner.
   */
  switchTo(epoch: number, digest?: string): SwitchReply {
    const { routing, keeper } = this.host;
    this.host.flush();
    if (epoch <= routing.epoch) return { ok: true, epoch: routing.epoch, digest: routing.map.digest, outgoing: 0, incoming: {} };
    if (!keeper || keeper.file === null) throw new FlotillaError('CONFIG_INVALID', 'this portal was started without a map file to read again');
    if (routing.holds.holding) {
      throw new FlotillaError('EPOCH_BUSY', `epoch ${routing.epoch} still holds buckets from ${routing.holds.from.join(', ')}; switch again once they are released`);
    }
    const outcome = keeper.reload();
    if (outcome.type === 'rejected') {
      const problems = outcome.rejection.problems.map((p) => `${p.path}: ${p.message}`).join('; ');
      throw new FlotillaError(outcome.rejection.code, `cannot switch to epoch ${epoch}: ${keeper.file}: ${problems}`);
    }
    const next = keeper.map;
    if (next.epoch !== epoch) throw new FlotillaError('EPOCH_MISMATCH', `asked to switch to epoch ${epoch}, but ${keeper.file} is at epoch ${next.epoch}`);
    if (digest !== undefined && next.digest !== digest) {
      throw new FlotillaError('MAP_DISAGREES', `asked to switch to epoch ${epoch} with map ${shortDigest(digest)}, but ${keeper.file} at epoch ${epoch} is map ${shortDigest(next.digest)}`);
    }
    const plan = planSwitch(routing.map, routing.stream, this.host.server, routing.slots, next);
    const held = routing.holds;
    held.begin(epoch, next.digest, plan.incoming);
    routing.map = plan.map;
    routing.stream = plan.stream;
    routing.self = plan.self;
    this.save();
    this.drainMark = this.host.egress.mark;
    const incoming = Object.fromEntries([...plan.incoming].map(([from, b]) => [from, b.length]));
    const arriving = [...plan.incoming.values()].reduce((n, b) => n + b.length, 0);
    this.log.info({ epoch, digest: shortDigest(next.digest), outgoing: plan.outgoing, incoming }, `portal ${plan.stream.name}: now at epoch ${epoch}; ${plan.outgoing} buckets leave, ${arriving} arrive`);
    this.host.forwarder?.start();
    return { ok: true, epoch, digest: next.digest, outgoing: plan.outgoing, incoming };
  }

  /**
   * True once every record accepted before the last epoch switch is processed, every spooled
   * record of a bucket this server gave up has been taken by the bucket's new owner, and (after
   * a restart) every component has said it has nothing in flight from the portal's last run, or
   * has been silent for longer than the dead limit.
   */
  drained(): boolean {
    const f = this.host.forwarder;
    if (f && (f.busy || f.foreignBuckets().length > 0)) {
      f.start();
      return false;
    }
    return this.componentsSettled() && !this.host.egress.hasBefore(this.drainMark);
  }

  /** `drained`, with the map it is about, as the control socket answers it. */
  drainedReply(): DrainedReply {
    return { drained: this.drained(), epoch: this.host.routing.epoch, digest: this.host.routing.map.digest };
  }

  /**
   * `from` has drained the buckets it gave this server at `epoch`: process them now. The release
   * must name the map (epoch and digest) and exactly the buckets held for `from`; a release for
   * a switch not yet made is kept for it.
   */
  release(r: ReleaseRequest): { ok: true; released: number } {
    const { routing, spool, egress } = this.host;
    this.host.flush();
    if (r.epoch > routing.epoch) {
      routing.holds.releaseEarly({ from: r.from, epoch: r.epoch, digest: r.digest, buckets: r.buckets });
      this.save();
      return { ok: true, released: 0 };
    }
    if (r.epoch < routing.epoch) return { ok: true, released: 0 };
    if (r.digest !== routing.map.digest) {
      throw new FlotillaError('MAP_DISAGREES', `release from ${r.from} is for map ${shortDigest(r.digest)} at epoch ${r.epoch}, but this portal runs map ${shortDigest(routing.map.digest)}`);
    }
    const held = routing.holds.groupOf(r.from);
    if (!held) return { ok: true, released: 0 };
    if (!sameBuckets(held.buckets, r.buckets)) {
      throw new FlotillaError('RELEASE_MISMATCH', `release from ${r.from} names ${r.buckets.length} buckets, but ${held.buckets.length} are held for it (${preview(held.buckets)}); nothing released`);
    }
    const group = routing.holds.release(r.from)!;
    this.save();
    // Records the old owner forwarded from its spool are older than those held here: the held
    // ones go to the spool behind them. (Without a spool, or if it is full, straight to the slots.)
    const forwardedIn = spool !== null && group.buckets.some((b) => spool.unreadOf(b) > 0);
    let released = 0;
    for (const d of group.deliveries) {
      released += d.count;
      if (!(forwardedIn && this.spoolHeld(spool, d))) d.slot.pending.push(d);
    }
    for (const slot of egress.slots) {
      if (forwardedIn) slot.spooling = true;
      egress.pump(slot);
      this.host.feed(slot);
    }
    this.log.info({ from: r.from, epoch: r.epoch, records: released }, `portal ${routing.stream.name}: ${r.from} drained its buckets; ${released} held records go to their slots`);
    return { ok: true, released };
  }

  /** What is held, for stats and beacons. */
  holdViews(now = Date.now()): HoldView[] {
    return this.host.routing.holds.groupsHeld().map(({ group }) => ({
      from: group.from,
      epoch: group.epoch,
      buckets: group.buckets,
      records: group.deliveries.reduce((n, d) => n + d.count, 0),
      waitingMs: now - group.since,
    }));
  }

  private componentsSettled(): boolean {
    if (this.settled) return true;
    const now = Date.now();
    const silentLongEnough = now - this.startedAt > this.host.deadMs();
    // A component heard since the start must say it has nothing in flight; one never heard
    // since is dead once the dead limit has passed (a live one beats every heartbeat).
    this.settled = this.host.egress.slots.every((s) => (s.heardAt >= this.startedAt ? s.beacon !== null && s.beacon.inflight === 0 : silentLongEnough));
    return this.settled;
  }

  /** Writes a held delivery to the spool (acknowledging its part of the batch); false if full. */
  private spoolHeld(spool: Spool, d: Delivery): boolean {
    const index = this.heldIndex;
    if (!index.scan(d.body, d.count)) return false;
    const buckets = bucketsOf(d.body, index, this.host.routing.stream.buckets);
    try {
      spool.write(d.body, index.starts, buckets, d.count, null);
    } catch (err) {
      if (!(err instanceof SpoolFullError)) throw err;
      this.causes.count('SPOOL_FULL', `${err.message}; held records go to their slot from memory, possibly before older forwarded ones`);
      return false;
    }
    this.host.egress.drop(d);
    if (d.batch && --d.batch.remaining === 0) this.host.ack(d.batch);
    return true;
  }
}

/** A few buckets of a list, for a message. */
function preview(buckets: readonly number[]): string {
  return buckets.length <= 8 ? buckets.join(', ') : `${buckets.slice(0, 8).join(', ')}, ...`;
}
