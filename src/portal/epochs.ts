/**
 * A portal's epoch switches: `switch` to the map's next epoch, `drained` (has everything from
 * before it been processed, and forwarded), and `release` (an old owner has drained the buckets
 * it gave this server). planSwitch checks and computes a switch without touching the portal.
 *
 *   agent --switch(e)--> planSwitch(routing in force, next map) -> routing.map/stream/self, holds.begin
 *   agent --drained--> every delivery made before the switch done, nothing foreign left in the spool
 *   old owner's agent --release(from, e)--> holds.release(from) -> held deliveries to their slots
 *
 * Buckets the server gives up are refused from the switch on (WRONG_OWNER: a redirect) and
 * drain; buckets it takes over are held per old owner (holds.ts) until that owner releases them.
 */
import { FlotillaError } from '../errors';
import type { CauseCounter, Logger } from '../log';
import type { MapKeeper } from '../map/keeper';
import { slotCount } from '../map/lookup';
import { bucketsOf } from '../map/route';
import type { FlotillaMap, MapStream } from '../map/types';
import type { SwitchReply } from '../protocol/control';
import { RecordIndex } from '../protocol/envelope';
import { type Spool, SpoolFullError } from '../spool/spool';
import type { Delivery, InBatch, Slot } from './slot';
import type { Egress } from './egress';
import type { Forwarder } from './forwarder';
import type { Routing } from './router';

/** A switch, planned: the stream and this server's index in the next map, and what moves. */
export interface SwitchPlan {
  map: FlotillaMap;
  stream: MapStream;
  self: number;
  /** Buckets this server gives up. */
  outgoing: number;
  /** Buckets this server takes over, by old owner. */
  incoming: Map<string, number[]>;
}

/**
 * Plans the switch of `server`'s portal of `before`'s stream to `next`. Throws a FlotillaError
 * for a map the portal cannot switch to in place: the server left it (UNKNOWN_SERVER), the
 * stream's bucket count or the server's slot count changed (MAP_INVALID).
 */
export function planSwitch(before: FlotillaMap, stream: MapStream, server: string, slots: number, next: FlotillaMap): SwitchPlan {
  const after = next.streams.find((s) => s.name === stream.name);
  if (!after) throw new FlotillaError('UNKNOWN_STREAM', `stream ${stream.name} is not in epoch ${next.epoch} of the map`);
  const self = next.servers.findIndex((x) => x.name === server);
  if (self < 0) throw new FlotillaError('UNKNOWN_SERVER', `server ${server} is not in epoch ${next.epoch} of the map`);
  if (after.buckets !== stream.buckets) throw new FlotillaError('MAP_INVALID', `stream ${after.name} changes its bucket count; that needs a new stream`);
  if (slotCount(next.servers[self]!, after) !== slots) {
    throw new FlotillaError('MAP_INVALID', `stream ${after.name} changes its slot count on ${server}; restart its portal and components for that`);
  }
  let outgoing = 0;
  const incoming = new Map<string, number[]>();
  for (let b = 0; b < after.buckets; b++) {
    const was = before.servers[stream.owner[b]!]!.name;
    const now = next.servers[after.owner[b]!]!.name;
    if (was === server && now !== server) outgoing++;
    if (now === server && was !== server) {
      if (!incoming.has(was)) incoming.set(was, []);
      incoming.get(was)!.push(b);
    }
  }
  return { map: next, stream: after, self, outgoing, incoming };
}

/** What epoch switches need of the rest of the portal. */
export interface EpochHost {
  readonly server: string;
  readonly routing: Routing;
  /** The map's keeper, read again at a switch; null: the portal was given a map only. */
  readonly keeper: MapKeeper | null;
  readonly egress: Egress;
  readonly spool: Spool | null;
  readonly forwarder: Forwarder | null;
  /** Writes what is staged for the spool now (a switch or release must not overtake it). */
  flush(): void;
  feed(slot: Slot): void;
  ack(batch: InBatch): void;
}

export class Epochs {
  /** Deliveries with ids below this were made before the last epoch switch. */
  private drainMark = 0;
  private readonly heldIndex = new RecordIndex();

  constructor(
    private readonly host: EpochHost,
    private readonly causes: CauseCounter,
    private readonly log: Logger,
  ) {}

  /**
   * Switches to the map's next epoch (read again from the map file). Buckets this server gives
   * up are refused from now on and drain; buckets it takes over are held per old owner.
   */
  switchTo(epoch: number): SwitchReply {
    const { routing, keeper } = this.host;
    this.host.flush();
    if (epoch <= routing.epoch) return { ok: true, epoch: routing.epoch, outgoing: 0, incoming: {} };
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
    const plan = planSwitch(routing.map, routing.stream, this.host.server, routing.slots, next);
    routing.holds.begin(epoch, plan.incoming);
    routing.map = plan.map;
    routing.stream = plan.stream;
    routing.self = plan.self;
    this.drainMark = this.host.egress.mark;
    const incoming = Object.fromEntries([...plan.incoming].map(([from, b]) => [from, b.length]));
    const arriving = [...plan.incoming.values()].reduce((n, b) => n + b.length, 0);
    this.log.info({ epoch, outgoing: plan.outgoing, incoming }, `portal ${plan.stream.name}: now at epoch ${epoch}; ${plan.outgoing} buckets leave, ${arriving} arrive`);
    this.host.forwarder?.start();
    return { ok: true, epoch, outgoing: plan.outgoing, incoming };
  }

  /**
   * True once every record accepted before the last epoch switch is processed, and every spooled
   * record of a bucket this server gave up has been taken by the bucket's new owner.
   */
  drained(): boolean {
    const f = this.host.forwarder;
    if (f && (f.busy || f.foreignBuckets().length > 0)) {
      f.start();
      return false;
    }
    return !this.host.egress.hasBefore(this.drainMark);
  }

  /** `from` has drained the buckets it gave this server at `epoch`: process them now. */
  release(from: string, epoch: number): { ok: true; released: number } {
    const { routing, spool, egress } = this.host;
    this.host.flush();
    if (epoch > routing.epoch) {
      routing.holds.releaseEarly(from, epoch);
      return { ok: true, released: 0 };
    }
    const group = epoch === routing.epoch ? routing.holds.release(from) : null;
    if (!group) return { ok: true, released: 0 };
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
    this.log.info({ from, epoch, records: released }, `portal ${routing.stream.name}: ${from} drained its buckets; ${released} held records go to their slots`);
    return { ok: true, released };
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
