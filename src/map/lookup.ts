/** Finding things in a map: a stream, a server, a portal's port, slots and address. */
import { FlotillaError } from '../errors';
import type { FlotillaMap, MapServer, MapStream } from './types';

/** The stream named `name`, or an error that lists the streams there are. */
export function streamOf(map: FlotillaMap, name: string): MapStream {
  const stream = map.streams.find((s) => s.name === name);
  if (!stream) {
    throw new FlotillaError('UNKNOWN_STREAM', `no stream "${name}" in map ${map.file} (streams: ${map.streams.map((s) => s.name).join(', ')})`);
  }
  return stream;
}

/** The server named `name`, or an error that lists the servers there are. */
export function serverOf(map: FlotillaMap, name: string): MapServer {
  const server = map.servers.find((s) => s.name === name);
  if (!server) {
    throw new FlotillaError('UNKNOWN_SERVER', `no server "${name}" in map ${map.file} (servers: ${map.servers.map((s) => s.name).join(', ')})`);
  }
  return server;
}

/** The TCP port of `stream`'s portal on `server`. */
export function portalPort(server: MapServer, stream: MapStream): number {
  return server.ports[stream.name] ?? stream.port;
}

/** How many component slots `stream` has on `server`. */
export function slotCount(server: MapServer, stream: MapStream): number {
  return server.slots[stream.name] ?? stream.slots;
}

/** The address a sender connects to for `stream`'s portal on `server`. */
export function portalEndpoint(server: MapServer, stream: MapStream): string {
  return `tcp://${server.host}:${portalPort(server, stream)}`;
}
