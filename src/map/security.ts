/**
 * The map's transport security: the servers' public keys, the operators' and senders' keys, the
 * plain-TCP opt-in and the connection cap, resolved from the file; and the rule every process
 * and `portalctl map check` apply before anything binds: no plain TCP off loopback.
 *
 *   keys on every server   -> CURVE on every TCP socket, ZAP admits the map's keys (src/transport/zap.ts)
 *   no keys, all loopback, `security.plain_tcp: true` -> plain TCP (the one-host demo)
 *   no keys, all loopback, no plain_tcp               -> refused: plain TCP is asked for, never assumed
 *   no keys, a server off loopback -> refused, with how to make keys
 */
import { isIP } from 'node:net';
import { FlotillaError, type MapProblem } from '../errors';
import { DEFAULT_MAX_CONNECTIONS, type FlotillaMap, type MapKey, type MapSecurity } from './types';

interface RawKey {
  name: string;
  public_key: string;
}
/** The parts of a map file this file reads (already checked against the schema). */
export interface RawSecurity {
  security?: { plain_tcp?: boolean; max_connections?: number };
  operators?: RawKey[];
  senders?: RawKey[];
  servers: { name: string; public_key?: string }[];
}

/** The map's security settings; adds to `problem` what a schema cannot say (keys on some servers only, a key listed twice). */
export function resolveSecurity(raw: RawSecurity, serverIndex: number[], problem: (segs: (string | number)[], message: string) => void): MapSecurity {
  const keyed = raw.servers.filter((s) => s.public_key !== undefined).length;
  if (keyed > 0 && keyed < raw.servers.length) {
    raw.servers.forEach((s, k) => {
      if (s.public_key === undefined) problem(['servers', serverIndex[k]!, 'public_key'], `is required: other servers have keys, and every TCP socket of a keyed map runs CURVE (make one with \`portalctl keys generate ${s.name}\`)`);
    });
  }
  const plainTcp = raw.security?.plain_tcp === true;
  if (plainTcp && keyed > 0) problem(['security', 'plain_tcp'], 'the servers have keys: remove plain_tcp (a keyed map runs CURVE on every TCP socket)');
  const seen = new Map<string, string>();
  raw.servers.forEach((s, k) => {
    if (s.public_key === undefined) return;
    const other = seen.get(s.public_key);
    if (other) problem(['servers', serverIndex[k]!, 'public_key'], `is also the key of ${other}: give each holder a key of its own`);
    seen.set(s.public_key, `server ${s.name}`);
  });
  const list = (field: 'operators' | 'senders'): MapKey[] =>
    (raw[field] ?? []).map((e, i) => {
      const other = seen.get(e.public_key);
      if (other && !(field === 'senders' && other.startsWith('operator '))) problem([field, i, 'public_key'], `is also the key of ${other}: give each holder a key of its own`);
      seen.set(e.public_key, `${field === 'operators' ? 'operator' : 'sender'} ${e.name}`);
      return { name: e.name, publicKey: e.public_key };
    });
  const operators = list('operators');
  const senders = list('senders');
  return { curve: keyed > 0, plainTcp, maxConnections: raw.security?.max_connections ?? DEFAULT_MAX_CONNECTIONS, operators, senders };
}

/** Who holds a public key in the map: a server, an operator or a listed sender. */
export interface KeyHolder {
  role: 'operator' | 'server' | 'sender';
  name: string;
}

/** The holder of `key` in `map` (a server first, then an operator, then a sender), or null. */
export function keyHolder(map: Pick<FlotillaMap, 'servers' | 'security'>, key: string): KeyHolder | null {
  const server = map.servers.find((s) => s.publicKey === key);
  if (server) return { role: 'server', name: server.name };
  const operator = map.security.operators.find((k) => k.publicKey === key);
  if (operator) return { role: 'operator', name: operator.name };
  const sender = map.security.senders.find((k) => k.publicKey === key);
  return sender ? { role: 'sender', name: sender.name } : null;
}

/** True for an address only this host can reach (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

/**
 * What is wrong with the map's transport: a server that binds an address off loopback in a map
 * without keys, plain_tcp set off loopback, or a map without keys that does not ask for plain TCP.
 * Empty when the map may run as it is.
 */
export function transportProblems(map: Pick<FlotillaMap, 'servers' | 'security'>): MapProblem[] {
  if (map.security.curve) return [];
  const off = map.servers.map((s, i) => ({ s, i })).filter(({ s }) => !isLoopback(s.host));
  if (off.length === 0 && !map.security.plainTcp) {
    return [
      {
        path: 'security.plain_tcp',
        message:
          'the map has no keys and does not ask for plain TCP: on one host, say so with `security: { plain_tcp: true }` (loopback only); ' +
          `across hosts, make a key pair per server (\`portalctl keys generate ${map.servers[0]?.name ?? 'NAME'} --dir /etc/flotilla/keys\`) and put each NAME.pub in its server's public_key (docs/security.md)`,
      },
    ];
  }
  return off.map(({ s, i }) => ({
    path: `servers[${i}].host`,
    message:
      `${s.name} binds ${s.host}, not a loopback address, and the map has no keys: records and commands would cross the network in clear. ` +
      `Make a key pair per server (\`portalctl keys generate ${s.name} --dir /etc/flotilla/keys\`), put each NAME.pub in the server's public_key, ` +
      `and list operators and senders (docs/security.md)` +
      (map.security.plainTcp ? '; security.plain_tcp is allowed only when every server is on loopback' : ''),
  }));
}

/** Throws PLAIN_TCP_REFUSED (every problem listed) if the map may not run as it is; see transportProblems. */
export function assertTransport(map: FlotillaMap): void {
  const problems = transportProblems(map);
  if (problems.length === 0) return;
  throw new FlotillaError('PLAIN_TCP_REFUSED', `${map.file}: ${problems.map((p) => `${p.path}: ${p.message}`).join('\n')}`);
}

/** How a map's transport is described to a person (banners, status). */
export function describeTransport(map: Pick<FlotillaMap, 'security'>): string {
  return map.security.curve ? 'CURVE (keys from the map)' : 'plain TCP on loopback, no keys';
}
