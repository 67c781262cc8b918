/**
 * How an agent carries its server's portals into a new map epoch, so that only the buckets that
 * change owner stop, no bucket is ever processed by two servers at once, and any process may
 * restart at any point. The agent does not remember a switch: each round it looks at what is
 * (its map, its portals' fresh beacons, the other agents' maps) and does the next step.
 *
 *   round (every 100 ms while a switch or a hold is open, else every heartbeat):
 *     1. agree:    every server of the new map has it too (epoch and digest: peers.ts); a server
 *                  with the same epoch and other content is a conflict: nothing moves
 *     2. switch:   each portal here below the map's epoch -> switch(epoch, digest)
 *                  buckets lost: refused (redirect) and drained; buckets gained: held per old owner
 *     3. handover: for each hold, ask the old owner's agent `drained(stream, epoch, digest)`;
 *                  once it says yes -> release(from, epoch, digest, buckets) to the portal here
 *
 * A hold outlives a restart of either portal (their handover files) or agent (the next round
 * asks again), and one that waits longer than the hold limit is shown as stuck, with the
 * `portalctl release` command that ends it (docs/operations.md).
 */
import { FlotillaError } from '../errors';
import type { Logger } from '../log';
import { shortDigest } from '../map/digest';
import type { FlotillaMap } from '../map/types';
import { portalRequest } from '../portal/client';
import type { PortalBeacon } from '../protocol/beacons';
import type { EpochSwitchStatus, HandoverReply, HandoverStatus } from '../protocol/control';
import type { DrainWord, HandoverStore } from './handovers';
import type { Peers } from './peers';
import { freshBeacons } from './portals';

/** A hold that has waited this long is shown as stuck, with the command that ends it. */
export const DEFAULT_HOLD_LIMIT_MS = 120_000;
/** How often a round runs while a switch or a hold is open. */
export const BUSY_ROUND_MS = 100;
/** How often the other agents are asked for their maps while nothing is open (for edit checks). */
const PEER_REFRESH_MS = 5_000;

/** What rounds need of the agent. */
export interface SwitchHost {
  readonly server: string;
  readonly runDir: string;
  readonly log: Logger;
  readonly peers: Peers;
  readonly portalTimeoutMs: number;
  readonly holdLimitMs: number;
  /** The newest valid map (the keeper's), and the one before it. */
  target(): FlotillaMap;
  previous(): FlotillaMap;
  /** How drains are said and learnt (handovers.ts: by asking the agents, or through etcd). */
  readonly handovers: HandoverStore;
  /** Files a fresh beacon in the agent's book. */
  note(beacon: PortalBeacon): void;
  /** The last beacon of each live portal here, from the book. */
  lastBeacons(): PortalBeacon[];
}

export class EpochSwitcher {
  /** The switch to the newest map: waiting, running or done; null before any edit. */
  status: EpochSwitchStatus | null = null;
  handovers: HandoverStatus[] = [];
  private peersAt = 0;
  private readonly conflictsLogged = new Set<string>();

  constructor(private readonly host: SwitchHost) {}

  /** One round; true if something is still open (a switch not done, a hold). */
  async round(): Promise<boolean> {
    const h = this.host;
    const target = h.target();
    // Nothing open and the portals' periodic beacons say so: no need to ask them again.
    const known = h.lastBeacons();
    const open = this.status?.epoch !== target.epoch || !this.status.done || this.handovers.length > 0;
    const quiet = !open && known.every((b) => b.epoch >= target.epoch && (b.holds ?? []).length === 0);
    const beacons = quiet ? known : await freshBeacons(h.runDir, target.streams.map((s) => s.name), h.portalTimeoutMs);
    if (!quiet) for (const b of beacons) h.note(b);
    const lagging = beacons.filter((b) => b.epoch < target.epoch);
    const now = Date.now();
    if (lagging.length > 0 || now - this.peersAt > PEER_REFRESH_MS) {
      await h.peers.refresh([target, h.previous()]);
      this.peersAt = Date.now();
    }
    if (lagging.length > 0 || this.status?.epoch !== target.epoch) await this.switchLagging(target, beacons, lagging);
    await h.handovers.publish(beacons, target, h.previous()).catch((err: unknown) => h.log.warn({ err: String(err) }, `drain records not written: ${String(err)}`));
    await this.handOver(target, beacons);
    return lagging.length > 0 || this.handovers.length > 0;
  }

  /** Steps 1 and 2: agree with the other servers, then switch the portals that lag. */
  private async switchLagging(target: FlotillaMap, beacons: PortalBeacon[], lagging: PortalBeacon[]): Promise<void> {
    const h = this.host;
    if (this.status?.epoch !== target.epoch) {
      const from = Math.min(target.epoch, ...beacons.map((b) => b.epoch));
      this.status = { epoch: target.epoch, digest: target.digest, from, done: false, waitingFor: [], conflicts: [], streams: [] };
    }
    const status = this.status;
    const agreement = h.peers.agreement(target, h.previous());
    status.waitingFor = agreement.waitingFor;
    status.conflicts = agreement.conflicts;
    for (const c of agreement.conflicts) {
      const key = `${target.epoch}/${c.server}/${c.digest}`;
      if (this.conflictsLogged.has(key)) continue;
      this.conflictsLogged.add(key);
      h.log.error(
        { epoch: target.epoch, digest: shortDigest(target.digest), server: c.server, theirs: shortDigest(c.digest) },
        `epoch ${target.epoch}: ${c.server} has a different map with the same epoch (${shortDigest(c.digest)}, here ${shortDigest(target.digest)}); no bucket moves until every server has the same file`,
      );
    }
    const results = new Map(status.streams.map((s) => [s.stream, s]));
    for (const b of beacons) results.set(b.stream, { stream: b.stream, epoch: b.epoch, ...(results.get(b.stream)?.error && b.epoch < target.epoch ? { error: results.get(b.stream)!.error } : {}) });
    if (agreement.agreed) {
      await Promise.all(
        lagging.map(async (b) => {
          try {
            const r = await portalRequest(h.runDir, b.stream, { cmd: 'switch', epoch: target.epoch, digest: target.digest }, Math.max(h.portalTimeoutMs, 5000));
            results.set(b.stream, { stream: b.stream, epoch: r.epoch });
            h.log.info({ stream: b.stream, epoch: r.epoch, outgoing: r.outgoing, incoming: r.incoming }, `epoch ${r.epoch}: ${b.stream} switched`);
          } catch (err) {
            const message = (err as Error).message;
            if (results.get(b.stream)?.error !== message) h.log.error({ stream: b.stream, epoch: target.epoch, err: message }, `epoch ${target.epoch}: ${b.stream}: ${message}`);
            results.set(b.stream, { stream: b.stream, epoch: b.epoch, error: message });
          }
        }),
      );
    }
    status.streams = [...results.values()];
    status.done = agreement.conflicts.length === 0 && status.streams.every((s) => s.epoch === target.epoch);
  }

  /** Step 3: ask each hold's old owner whether it has drained, and release what it has. */
  private async handOver(target: FlotillaMap, beacons: PortalBeacon[]): Promise<void> {
    const h = this.host;
    const out: HandoverStatus[] = [];
    await Promise.all(
      beacons.flatMap((b) =>
        (b.holds ?? []).map(async (hold) => {
          const entry: HandoverStatus = {
            ...hold,
            stream: b.stream,
            reason: '',
            stuck: hold.waitingMs > h.holdLimitMs,
            command: `portalctl release ${b.stream} --from ${hold.from} --server ${h.server}`,
          };
          let word: DrainWord;
          try {
            word = await h.handovers.drained(hold.from, b.stream, hold.epoch, b.digest, [target, h.previous()]);
          } catch (err) {
            word = { drained: false, reason: `cannot learn whether ${hold.from} has drained (${(err as Error).message})` };
          }
          if (!word.drained) {
            entry.reason = word.reason;
            out.push(entry);
            return;
          }
          try {
            const r = await portalRequest(h.runDir, b.stream, { cmd: 'release', from: hold.from, epoch: hold.epoch, digest: b.digest, buckets: hold.buckets }, h.portalTimeoutMs);
            h.log.info({ stream: b.stream, from: hold.from, epoch: hold.epoch, records: r.released }, `epoch ${hold.epoch}: ${hold.from} drained ${hold.buckets.length} buckets of ${b.stream}; released here`);
            await h.handovers
              .released({ from: hold.from, stream: b.stream, epoch: hold.epoch, digest: b.digest, buckets: hold.buckets, forced: false })
              .catch((err: unknown) => h.log.warn({ stream: b.stream, from: hold.from }, `the release record could not be written (${String(err)})`));
          } catch (err) {
            entry.reason = `the release failed: ${(err as Error).message}`;
            out.push(entry);
          }
        }),
      ),
    );
    for (const e of out) if (e.stuck) h.log.warn({ stream: e.stream, from: e.from, waitingMs: e.waitingMs }, `hold of ${e.buckets.length} ${e.stream} buckets from ${e.from} stuck for ${Math.round(e.waitingMs / 1000)} s: ${e.reason}; to end it: ${e.command}`);
    this.handovers = out;
  }
}

/**
 * The old owner's side of a handover, as this server's agent answers another's `drained`: has
 * `stream`'s portal here switched to `epoch` (map `digest`) or later, and drained everything from
 * before?
 */
export async function answerDrained(server: string, map: FlotillaMap, runDir: string, req: { stream: string; epoch: number; digest: string }, timeoutMs: number): Promise<HandoverReply> {
  const no = (reason: string): HandoverReply => ({ server, stream: req.stream, drained: false, reason });
  if (!map.streams.some((s) => s.name === req.stream)) return no(`no stream ${req.stream} in its map (epoch ${map.epoch})`);
  let r;
  try {
    r = await portalRequest(runDir, req.stream, { cmd: 'drained' }, timeoutMs);
  } catch (err) {
    return no(`its ${req.stream} portal does not answer (${(err as Error).message})`);
  }
  if (r.epoch < req.epoch) return no(`its ${req.stream} portal runs epoch ${r.epoch}, not yet ${req.epoch}`);
  if (r.epoch === req.epoch && r.digest !== req.digest) return no(`its ${req.stream} portal runs map ${shortDigest(r.digest)} at epoch ${r.epoch}, not ${shortDigest(req.digest)}`);
  if (!r.drained) return no(`its ${req.stream} portal is still draining what it gave up`);
  return { server, stream: req.stream, drained: true };
}

/**
 * An operator ends a hold without the old owner's word (it is gone for good): the portal here
 * processes the held buckets at once. Records the old owner still had are then its to lose or
 * to process twice: docs/operations.md says when this is safe.
 */
export async function forceRelease(runDir: string, stream: string, from: string, timeoutMs: number, log: Logger, handovers?: HandoverStore): Promise<{ ok: true; released: number }> {
  const beacon = await portalRequest(runDir, stream, { cmd: 'beacon' }, timeoutMs);
  const hold = (beacon.holds ?? []).find((x) => x.from === from);
  if (!hold) {
    const held = (beacon.holds ?? []).map((x) => x.from);
    throw new FlotillaError('BAD_REQUEST', `the ${stream} portal holds nothing for ${from}${held.length > 0 ? ` (it holds buckets for ${held.join(', ')})` : ''}`);
  }
  const r = await portalRequest(runDir, stream, { cmd: 'release', from, epoch: hold.epoch, digest: beacon.digest, buckets: hold.buckets }, timeoutMs);
  await handovers?.released({ from, stream, epoch: hold.epoch, digest: beacon.digest, buckets: hold.buckets, forced: true }).catch((err: unknown) => log.warn({ stream, from }, `the release record could not be written (${String(err)})`));
  log.warn({ stream, from, epoch: hold.epoch, buckets: hold.buckets.length, records: r.released }, `operator ended the hold of ${hold.buckets.length} ${stream} buckets from ${from} without its word (after ${Math.round(hold.waitingMs / 1000)} s)`);
  return r;
}
