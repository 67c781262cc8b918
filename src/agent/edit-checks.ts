/**
 * An edit of the map checked against the running system, before the agent takes it (on top of
 * the keeper's checks, which look at the map alone). Refused, with a message that says what to
 * do instead:
 *
 *   - removing a stream, or a server, that still holds acknowledged records in its spool (they
 *     would be stranded: the portal that could deliver them would not start again);
 *   - a server that joins the map owning buckets at once (its portals would have no record of
 *     what they take over: it joins with weight 0, its units start, then its weight is raised);
 *   - a change no portal can make live: a portal's port or slot count, the heartbeat (each
 *     needs a restart of the units named, with the new map: docs/operations.md).
 *
 * What the other servers hold comes from their agents' last answers (peers.ts).
 */
import type { MapProblem } from '../errors';
import { slotCount } from '../map/lookup';
import type { FlotillaMap } from '../map/types';
import { heartbeatChange, planSwitch } from '../portal/switch-plan';
import type { Peers } from './peers';

/** What the operator does for a change that needs a restart. */
const RESTART = 'stop those units, edit the map, start them again';

/** What is spooled here, per stream (from the portals' beacons). */
export type Spooled = Record<string, number>;

export function runningEditProblems(current: FlotillaMap, next: FlotillaMap, self: string, here: Spooled, peers: Peers): MapProblem[] {
  const problems: MapProblem[] = [];
  const spooledOn = (server: string): Spooled => (server === self ? here : (peers.info(server)?.spooled ?? {}));
  for (const s of current.streams) {
    if (next.streams.some((x) => x.name === s.name)) continue;
    const where = current.servers.map((x) => ({ server: x.name, records: spooledOn(x.name)[s.name] ?? 0 })).filter((x) => x.records > 0);
    if (where.length === 0) continue;
    const total = where.reduce((n, x) => n + x.records, 0);
    problems.push({
      path: 'streams',
      message: `stream ${s.name} is removed but ${total} acknowledged records wait in its spool (${where.map((x) => `${x.records} on ${x.server}`).join(', ')}); resume it and let its slots take them (portalctl status shows the spool empty), then remove it`,
    });
  }
  for (const server of current.servers) {
    if (next.servers.some((x) => x.name === server.name)) continue;
    const spooled = Object.entries(spooledOn(server.name)).filter(([, n]) => n > 0);
    if (spooled.length === 0) continue;
    const total = spooled.reduce((n, [, r]) => n + r, 0);
    problems.push({
      path: 'servers',
      message: `server ${server.name} is removed but ${total} acknowledged records wait in its spool (${spooled.map(([st, n]) => `${st}: ${n}`).join(', ')}); give it weight 0 first, so its buckets move and its spool is forwarded, then remove it`,
    });
  }
  next.servers.forEach((server, i) => {
    if (current.servers.some((x) => x.name === server.name)) return;
    const owned = next.streams.map((s) => ({ stream: s.name, buckets: s.owner.filter((o) => o === i).length })).filter((x) => x.buckets > 0);
    if (owned.length === 0) return;
    problems.push({
      path: `servers[${i}].weight`,
      message: `server ${server.name} joins the map owning buckets at once (${owned.map((x) => `${x.buckets} of ${x.stream}`).join(', ')}); add it with weight: 0 first, start its agent and portals, then raise its weight in a later epoch`,
    });
  });
  const heartbeat = heartbeatChange(current, next);
  if (heartbeat) problems.push({ path: 'heartbeat_ms', message: `${heartbeat}: ${RESTART}` });
  for (const s of current.streams) {
    const j = next.streams.findIndex((x) => x.name === s.name);
    if (j < 0 || next.streams[j]!.buckets !== s.buckets) continue; // the keeper names a bucket count change
    for (const server of current.servers) {
      if (!next.servers.some((x) => x.name === server.name)) continue;
      try {
        planSwitch(current, s, server.name, slotCount(server, s), next);
      } catch (err) {
        const message = (err as Error).message;
        if (!problems.some((p) => p.message.startsWith(message))) problems.push({ path: `streams[${j}]`, message: `${message}: ${RESTART}` });
      }
    }
  }
  return problems;
}
