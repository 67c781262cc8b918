/**
 * How an agent carries its server's portals into a new map epoch, so that only the buckets that
 * change owner stop, and no bucket is ever processed by two servers at once:
 *
 *   every portal:   switch(epoch)       buckets lost: refused (redirect) and draining
 *                                       buckets gained: accepted, held per old owner
 *   old owner:      wait drained(), then tell each new owner's agent: release(stream, from, epoch)
 *   new owner:      release -> its portal processes the held records, in order
 *
 * Servers may switch in any order: a release that reaches a portal before its switch is kept.
 */
import { FlotillaError } from '../errors';
import { serverOf } from '../map/lookup';
import { portalRequest } from '../portal/client';
import { askAgent, remoteAgent } from './client';
import type { StreamSwitch } from '../protocol/control';
import type { Logger } from '../log';
import type { FlotillaMap } from '../map/types';
import { diffMaps } from '../map/diff';

export interface EpochSwitchOptions {
  server: string;
  runDir: string;
  before: FlotillaMap;
  after: FlotillaMap;
  /** Tells `toServer`'s agent that this server has drained what it gave up of `stream`. */
  sendRelease: (toServer: string, stream: string, epoch: number) => Promise<void>;
  log: Logger;
  /** How long to wait for a portal to drain before giving up (the error says so). */
  drainTimeoutMs?: number;
  pollMs?: number;
}

/** Switches every portal of this server to `after.epoch` and releases what it gave up. */
export async function switchEpoch(o: EpochSwitchOptions): Promise<StreamSwitch[]> {
  const diff = diffMaps(o.before, o.after);
  const here = o.after.streams.filter((s) => o.before.streams.some((b) => b.name === s.name));
  return Promise.all(here.map((s) => switchStream(o, s.name, diff.streams.find((x) => x.stream === s.name)?.moves ?? [])));
}

async function switchStream(o: EpochSwitchOptions, stream: string, moves: { from: string; to: string }[]): Promise<StreamSwitch> {
  const epoch = o.after.epoch;
  const result: StreamSwitch = { stream, outgoing: 0, incoming: {}, released: [] };
  try {
    const r = await portalRequest(o.runDir, stream, { cmd: 'switch', epoch }, 5000);
    result.outgoing = r.outgoing;
    result.incoming = r.incoming;
    const takers = [...new Set(moves.filter((m) => m.from === o.server).map((m) => m.to))];
    if (takers.length === 0) return result;
    const deadline = Date.now() + (o.drainTimeoutMs ?? 60_000);
    for (;;) {
      const d = await portalRequest(o.runDir, stream, { cmd: 'drained' }, 5000);
      if (d.drained) break;
      if (Date.now() > deadline) throw new Error(`the ${stream} portal did not drain the buckets it gave up within ${o.drainTimeoutMs ?? 60_000} ms`);
      await new Promise((r) => setTimeout(r, o.pollMs ?? 20));
    }
    for (const to of takers) {
      await o.sendRelease(to, stream, epoch);
      result.released.push(to);
    }
    o.log.info({ stream, epoch, released: result.released }, `epoch ${epoch}: ${stream} drained; released to ${result.released.join(', ')}`);
  } catch (err) {
    result.error = (err as Error).message;
    o.log.error({ stream, epoch, err: result.error }, `epoch ${epoch}: ${stream}: ${result.error}`);
  }
  return result;
}

/** How long an agent keeps trying to tell another agent that it has drained its buckets. */
export const RELEASE_RETRY_MS = 60_000;

/**
 * Tells `to`'s agent (over TCP, at its agent_port in `map`) that `from` has drained what it gave
 * `to` of `stream` at `epoch`; tries again every 200 ms for RELEASE_RETRY_MS, or until `stopped()`.
 */
export async function sendRelease(map: FlotillaMap, from: string, to: string, stream: string, epoch: number, stopped: () => boolean): Promise<void> {
  const target = remoteAgent(serverOf(map, to));
  if (!target) throw new FlotillaError('AGENT_UNREACHABLE', `server ${to} has no agent_port in the map: cannot tell it to take over ${stream}`);
  const deadline = Date.now() + RELEASE_RETRY_MS;
  for (;;) {
    try {
      await askAgent(target, { cmd: 'release', stream, from, epoch });
      return;
    } catch (err) {
      if (stopped() || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
