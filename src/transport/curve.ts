/**
 * CURVE on a process's TCP sockets. A process has one key pair (`useKey`, or read from the file
 * `$FLOTILLA_KEY` names when first needed); a client socket to a keyed server gets the server's
 * public key from the map, and a server socket gets its secret key and a ZAP domain whose rule
 * admits the map's keys for its role (src/transport/zap.ts). A map without keys gives no
 * options: plain TCP, which the map allows only on loopback (src/map/security.ts).
 *
 *   sender / portalctl / agent / forwarder   --CURVE (its key, the server's public key)-->   portal / agent
 */
import type * as zmq from 'zeromq';
import { FlotillaError } from '../errors';
import type { CauseCounter, Logger } from '../log';
import { assertTransport, isLoopback, keyHolder } from '../map/security';
import type { FlotillaMap } from '../map/types';
import { ConnectionGuard, HANDSHAKE_MS } from './connections';
import { DEFAULT_KEY_DIR, type KeyPair, readKeyFile } from './keys';
import { guardDomain } from './zap';

let own: KeyPair | null = null;

/** Sets this process's key pair (a daemon, once at start; a client with `--key`). */
export function useKey(pair: KeyPair | null): void {
  own = pair;
}

/** This process's key pair: set by useKey, else read from `$FLOTILLA_KEY`; throws KEY_REQUIRED when there is none. */
export function ownKey(): KeyPair {
  if (own) return own;
  const file = process.env.FLOTILLA_KEY;
  if (!file) throw new FlotillaError('KEY_REQUIRED', 'the map has keys, so every TCP connection needs one: give this process its secret key file (--key FILE or FLOTILLA_KEY; `portalctl keys generate NAME` makes one, and the map lists its public key)');
  own = readKeyFile(file);
  return own;
}

/** Options of a client socket to a server whose public key is `serverKey`; none for plain TCP. */
export function clientOptions(serverKey: string | undefined): Partial<zmq.SocketOptions<zmq.Dealer>> {
  if (serverKey === undefined) return {};
  const me = ownKey();
  return { curveServerKey: serverKey, curvePublicKey: me.publicKey, curveSecretKey: me.secretKey };
}

/**
 * A daemon's key: for a map with keys, read from `keyFile` (else `$FLOTILLA_KEY`, else
 * /etc/flotilla/keys/<server>.key) and checked against the map's public key of `server`
 * (KEY_INVALID, KEY_MISMATCH); for a map without keys, none, after checking that the map (and
 * `bindHost`, a --bind) may run on plain TCP (PLAIN_TCP_REFUSED). The key becomes this process's (useKey).
 */
export function daemonKey(map: FlotillaMap, server: string, keyFile?: string, bindHost?: string): KeyPair | null {
  if (!map.security.curve) {
    assertTransport(map);
    if (bindHost !== undefined && !isLoopback(bindHost)) {
      throw new FlotillaError('PLAIN_TCP_REFUSED', `--bind ${bindHost} is not a loopback address and the map has no keys: records and commands would cross the network in clear (make keys: \`portalctl keys generate ${server}\`, docs/security.md)`);
    }
    useKey(null);
    return null;
  }
  const file = keyFile ?? process.env.FLOTILLA_KEY ?? `${DEFAULT_KEY_DIR}/${server}.key`;
  const pair = readKeyFile(file);
  const expected = map.servers.find((s) => s.name === server)?.publicKey;
  if (pair.publicKey !== expected) {
    throw new FlotillaError('KEY_MISMATCH', `the key in ${file} is not ${server}'s: its public key is ${pair.publicKey}, the map gives ${server} ${expected ?? 'no key'} (wrong file, or the map was not updated after the key was made)`);
  }
  useKey(pair);
  return pair;
}

/** A server socket's role: its ZAP domain (each admits the map's servers, operators and senders: keyHolder). */
export type Role = 'portal' | 'agent';

/**
 * Makes `socket` (not yet bound) a guarded TCP server: connections capped (connections.ts; ZAP
 * refuses handshakes past the cap) and, for a map with keys, a CURVE server with this process's
 * key admitting the keys `mapNow()` lists for `role` (read at each handshake, so a map edit
 * applies to new connections). A map without keys admits any plain-TCP client (loopback only).
 */
export async function guardServer(socket: zmq.Socket, mapNow: () => FlotillaMap, role: Role, causes: CauseCounter, log: Logger, what: string): Promise<ConnectionGuard> {
  socket.handshakeInterval = HANDSHAKE_MS;
  const curve = mapNow().security.curve;
  const guard = new ConnectionGuard(socket, mapNow().security.maxConnections, causes, log, what);
  const admit = curve ? (key: string) => holderName(mapNow(), key) : (key: string) => (key === '' ? 'a plain-TCP client' : null);
  guard.zap = await guardDomain(role, admit, () => guard.full(), causes);
  guard.curve = curve;
  if (curve) {
    const me = ownKey();
    socket.curveServer = true;
    socket.curveSecretKey = me.secretKey;
    socket.curvePublicKey = me.publicKey;
  }
  socket.zapDomain = role;
  return guard;
}

/** `server beta`, `operator ops`: who holds `key` in the map, or null. */
function holderName(map: FlotillaMap, key: string): string | null {
  const h = keyHolder(map, key);
  return h ? `${h.role} ${h.name}` : null;
}
