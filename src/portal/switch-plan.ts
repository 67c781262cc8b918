/**
 * An epoch switch, planned: what a portal's server gives up and takes over when its map goes
 * from one epoch to the next, checked and computed without touching the portal (epochs.ts
 * applies it; handover-file.ts uses it to tell whether a portal can come back on an older map).
 */
import { FlotillaError } from '../errors';
import { portalPort, slotCount } from '../map/lookup';
import type { FlotillaMap, MapStream } from '../map/types';

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
 * stream's bucket count, the server's slot count or port, or the heartbeat changed (MAP_INVALID:
 * each needs a restart of the units the message names).
 */
export function planSwitch(before: FlotillaMap, stream: MapStream, server: string, slots: number, next: FlotillaMap): SwitchPlan {
  const after = next.streams.find((s) => s.name === stream.name);
  if (!after) throw new FlotillaError('UNKNOWN_STREAM', `stream ${stream.name} is not in epoch ${next.epoch} of the map`);
  const self = next.servers.findIndex((x) => x.name === server);
  if (self < 0) throw new FlotillaError('UNKNOWN_SERVER', `server ${server} is not in epoch ${next.epoch} of the map`);
  if (after.buckets !== stream.buckets) throw new FlotillaError('MAP_INVALID', `stream ${after.name} changes its bucket count; that needs a new stream`);
  if (slotCount(next.servers[self]!, after) !== slots) {
    throw new FlotillaError('MAP_INVALID', `stream ${after.name} changes its slot count on ${server} (${slots} -> ${slotCount(next.servers[self]!, after)}); that needs a restart of flotilla-portal@${after.name} and its components on ${server}`);
  }
  const wasServer = before.servers.find((x) => x.name === server);
  const port = portalPort(next.servers[self]!, after);
  if (wasServer && portalPort(wasServer, stream) !== port) {
    throw new FlotillaError('MAP_INVALID', `stream ${after.name} moves its port on ${server} (${portalPort(wasServer, stream)} -> ${port}); that needs a restart of flotilla-portal@${after.name} on ${server}`);
  }
  const heartbeat = heartbeatChange(before, next);
  if (heartbeat) throw new FlotillaError('MAP_INVALID', heartbeat);
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

/** Why `next` cannot be switched to live because its heartbeat differs; null if it does not. */
export function heartbeatChange(before: FlotillaMap, next: FlotillaMap): string | null {
  if (next.heartbeatMs === before.heartbeatMs) return null;
  return `heartbeat_ms changes (${before.heartbeatMs} -> ${next.heartbeatMs}); that needs a restart of every agent, portal and component of instance ${next.instance}`;
}
