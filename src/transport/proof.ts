/**
 * Who sent a request, proven. zeromq.js cannot read the key ZAP saw for a message (libzmq's
 * User-Id property), so a client of a keyed map proves its key inside what it sends: an HMAC
 * keyed by the X25519 secret its CURVE key pair shares with the server's (each side computes it
 * from its own secret and the other's public key). Only the holder of the secret can make it; a
 * listener sees nothing (the connection is CURVE), and a proof is good for PROOF_MAX_AGE_MS.
 *
 *   {"cmd": ..., "auth": {"key": <client public>, "at": <ms>, "mac": hmac(shared, at + "\n" + request)}}
 */
import { createHmac, createPublicKey, diffieHellman, timingSafeEqual } from 'node:crypto';
import { FlotillaError } from '../errors';
import { type KeyPair, x25519PrivateKey, z85Decode } from './keys';

/** How old a control request's proof may be when it arrives, ms (clocks of servers are kept in step). */
export const PROOF_MAX_AGE_MS = 120_000;

const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');
const shared = new Map<string, Buffer>();

/** The secret two key pairs share: X25519(my secret, their public), cached. */
function sharedSecret(me: KeyPair, theirPublic: string): Buffer {
  const id = `${me.publicKey}:${theirPublic}`;
  let s = shared.get(id);
  if (!s) {
    const privateKey = x25519PrivateKey(z85Decode(me.secretKey)!);
    const raw = z85Decode(theirPublic);
    if (!raw || raw.length !== 32) throw new FlotillaError('NOT_AUTHORIZED', `not a CURVE public key: ${theirPublic}`);
    const publicKey = createPublicKey({ key: Buffer.concat([SPKI_X25519, raw]), format: 'der', type: 'spki' });
    s = diffieHellman({ privateKey, publicKey });
    shared.set(id, s);
  }
  return s;
}

const mac = (secret: Buffer, text: string) => createHmac('sha256', secret).update(text).digest('hex');

/** `request` with the proof that `me` sent it to the server whose public key is `serverKey`. */
export function signRequest(request: object, me: KeyPair, serverKey: string): object {
  const at = Date.now();
  return { ...request, auth: { key: me.publicKey, at, mac: mac(sharedSecret(me, serverKey), `${at}\n${JSON.stringify(request)}`) } };
}

/**
 * The request without its proof, and the public key that proved it sent it; throws
 * NOT_AUTHORIZED for a request over TCP without a proof, with one that does not hold, or from a
 * key `known` does not know (checked first: no key agreement, nothing cached, for a stranger's key).
 */
export function verifyRequest(raw: unknown, me: KeyPair, known: (key: string) => boolean, now = Date.now()): { request: unknown; key: string } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { request: raw, key: '' };
  const { auth, ...request } = raw as Record<string, unknown>;
  const a = auth as { key?: unknown; at?: unknown; mac?: unknown } | undefined;
  if (!a || typeof a.key !== 'string' || typeof a.at !== 'number' || typeof a.mac !== 'string') {
    throw new FlotillaError('NOT_AUTHORIZED', 'a control request over TCP must carry the proof of its key ("auth"): use portalctl, or the agent client, with your key');
  }
  if (!known(a.key)) throw new FlotillaError('NOT_AUTHORIZED', `key ${a.key} is not an operator's, a server's or a sender's in the map in force`);
  if (Math.abs(now - a.at) > PROOF_MAX_AGE_MS) throw new FlotillaError('NOT_AUTHORIZED', `the request's proof is ${Math.round((now - a.at) / 1000)} s old (at most ${PROOF_MAX_AGE_MS / 1000} s: are the clocks in step?)`);
  const expected = Buffer.from(mac(sharedSecret(me, a.key), `${a.at}\n${JSON.stringify(request)}`));
  const given = Buffer.from(a.mac);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new FlotillaError('NOT_AUTHORIZED', `the request's proof does not hold for key ${a.key}`);
  return { request, key: a.key };
}

/**
 * A proof of a routing id's prefix for the server whose public key is `serverKey` (the forwarder's
 * `fwd/<server>`, which earns its records a place ahead in the new owner's spool): 32 hex digits
 * only the holder of `me`'s secret can make for that server.
 */
export function identityProof(identity: string, me: KeyPair, serverKey: string): string {
  return mac(sharedSecret(me, serverKey), identity).slice(0, 32);
}

/**
 * True if `routingId` is `<identity>/<proof>/...` with a proof made by the key `claimedKey` for
 * the server holding `me` (see identityProof).
 */
export function provesIdentity(routingId: string, identity: string, claimedKey: string, me: KeyPair): boolean {
  const proof = routingId.slice(identity.length + 1, identity.length + 33);
  return routingId.startsWith(`${identity}/`) && proof === identityProof(identity, me, claimedKey);
}
