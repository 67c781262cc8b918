/**
 * The agent's part of the management bus: a `configure` from an operator is kept (config-store.ts),
 * given to the stream's portal, and answered once every live component of the stream has taken
 * the version or said why not, or the wait is over; and a portal that does not have the current
 * version (it restarted, or missed a push) is given it again at the next heartbeat.
 *
 *   portalctl --configure--> agent: store (file) --configure {configs}--> portal --CONFIGURE--> slots
 *   agent: every heartbeat_ms, a live portal whose beacon's configVersion is not the kept one --> pushed again
 */
import { FlotillaError } from '../errors';
import type { Logger } from '../log';
import { serverOf, slotCount, streamOf } from '../map/lookup';
import type { FlotillaMap } from '../map/types';
import { portalRequest } from '../portal/client';
import type { PortalBeacon, SlotView } from '../protocol/beacons';
import { type ConfigureReply, type ConfigureRequest, DEFAULT_CONFIGURE_WAIT_MS, type SlotConfigResult, type StreamConfigs } from '../protocol/configure';
import type { ConfigStore } from './config-store';

/** What configuring needs of the agent. */
export interface ConfigureHost {
  server: string;
  runDir: string;
  map(): FlotillaMap;
  store: ConfigStore;
  portalTimeoutMs: number;
  log: Logger;
}

/** Keeps `req`'s configuration, gives it to the stream's portal and waits for the components' answers. */
export async function configureStream(h: ConfigureHost, req: ConfigureRequest): Promise<ConfigureReply> {
  const map = h.map();
  if (!map.streams.some((s) => s.name === req.stream)) {
    throw new FlotillaError('UNKNOWN_STREAM', `no stream "${req.stream}" in the map in force (streams: ${map.streams.map((s) => s.name).join(', ')})`);
  }
  const slots = slotCount(serverOf(map, h.server), streamOf(map, req.stream));
  if (req.slot !== undefined && req.slot >= slots) {
    throw new FlotillaError('BAD_REQUEST', `configure: stream ${req.stream} has slots 0 to ${slots - 1} on server ${h.server}; there is no slot ${req.slot}`);
  }
  const { configs, entry } = h.store.set(req.stream, req.slot, req.config, { merge: req.merge, version: req.version });
  const scope = req.slot === undefined ? `${req.stream}` : `${req.stream} slot ${req.slot}`;
  h.log.info({ stream: req.stream, slot: req.slot ?? null, version: entry.version }, `configuration version ${entry.version} of ${scope} kept in ${h.store.path}; giving it to the portal`);
  const reply: ConfigureReply = { server: h.server, stream: req.stream, version: entry.version, slot: req.slot ?? null, config: entry.config, ok: false, slots: [] };
  try {
    await portalRequest(h.runDir, req.stream, { cmd: 'configure', configs }, h.portalTimeoutMs);
  } catch (err) {
    const code = err instanceof FlotillaError ? ` [${err.code}]` : '';
    return { ...reply, unconfirmed: `${err instanceof Error ? err.message : String(err)}; version ${entry.version} is kept and given to the portal when it answers${code}` };
  }
  const wanted = req.slot === undefined ? Array.from({ length: slots }, (_, i) => i) : [req.slot];
  const deadline = Date.now() + (req.timeoutMs ?? DEFAULT_CONFIGURE_WAIT_MS);
  const everyMs = Math.max(20, Math.floor(map.heartbeatMs / 10));
  for (;;) {
    const last = Date.now() >= deadline;
    let views: SlotView[] | null = null;
    try {
      views = (await portalRequest(h.runDir, req.stream, { cmd: 'stats' }, h.portalTimeoutMs)).slots;
    } catch (err) {
      // A portal that cannot answer now (restarting): asked again after the pause below.
      if (last) return { ...reply, unconfirmed: `${err instanceof Error ? err.message : String(err)}; version ${entry.version} is kept` };
    }
    const results = views ? wanted.map((n) => slotResult(views[n], n, entry.version, last)) : null;
    if (results && (last || results.every((r) => r !== null))) {
      reply.slots = results.map((r, i) => r ?? { slot: wanted[i]!, pid: 0, outcome: 'not-taken', running: null });
      reply.ok = reply.slots.every((r) => r.outcome === 'taken' || r.outcome === 'not-running');
      return reply;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(everyMs, Math.max(0, deadline - Date.now()))));
  }
}

/** How slot `n` stands with `version`; null while a live component has not answered (`last`: the wait is over). */
function slotResult(v: SlotView | undefined, n: number, version: number, last: boolean): SlotConfigResult | null {
  if (!v) return { slot: n, pid: 0, outcome: 'not-running', running: null };
  const running = v.config?.running ?? null;
  const base = { slot: n, pid: v.pid, running };
  if (running !== null && running >= version) return { ...base, outcome: 'taken' };
  if (v.config?.rejected?.version === version) return { ...base, outcome: 'rejected', reason: v.config.rejected.reason };
  if (v.state === 'dead' || v.state === 'missing') return { ...base, outcome: 'not-running' };
  return last ? { ...base, outcome: 'not-taken' } : null;
}

/** When the newest of a stream's configurations was set (ms since the Unix epoch). */
function newestAt(c: StreamConfigs): number {
  return Math.max(c.all?.at ?? 0, ...Object.values(c.slots).map((e) => e.at));
}

/**
 * Gives a live portal whose beacon shows another configuration version than the one kept (a
 * portal that restarted, or missed a push) the stream's configurations again.
 */
export class ConfigPusher {
  private readonly pushing = new Set<string>();

  constructor(private readonly h: ConfigureHost) {}

  /** Checks the live portals' last beacons; pushes where a portal is behind (at most one push per stream at a time). */
  check(beacons: readonly PortalBeacon[]): void {
    for (const b of beacons) {
      const configs = this.h.store.get(b.stream);
      // A beacon made before the version was set cannot show it yet: only a later one that does not is behind.
      if (!configs || b.configVersion === configs.version || b.at <= newestAt(configs) || this.pushing.has(b.stream)) continue;
      this.pushing.add(b.stream);
      this.h.log.info({ stream: b.stream, version: configs.version, portal: b.configVersion ?? 0 }, `portal ${b.stream} (pid ${b.pid}) has configuration version ${b.configVersion ?? 0}; giving it ${configs.version}`);
      portalRequest(this.h.runDir, b.stream, { cmd: 'configure', configs }, this.h.portalTimeoutMs)
        .catch((err: unknown) => this.h.log.warn({ stream: b.stream }, `portal ${b.stream}: configuration not given (${String(err)}); tried again at the next heartbeat`))
        .finally(() => this.pushing.delete(b.stream));
    }
  }
}
