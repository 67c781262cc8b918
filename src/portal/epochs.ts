/**
 * What an epoch switch means for one portal: checked and computed without touching the portal,
 * so the portal only applies the result.
 *
 *   planSwitch(routing in force, next map) -> { stream, self, outgoing, incoming per old owner }
 *
 * Buckets the server gives up are refused from the switch on (WRONG_OWNER: a redirect) and
 * drain; buckets it takes over are held per old owner (holds.ts) until that owner releases them.
 */
import { FlotillaError } from '../errors';
import { slotCount } from '../map/lookup';
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
