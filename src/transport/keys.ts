/**
 * CURVE key pairs: made by `portalctl keys generate`, read by every process from the file its
 * configuration names (`--key FILE`, `$FLOTILLA_KEY`), never from the map. A key file holds the
 * secret key in Z85 (40 characters) and must be readable by its owner only (mode 0600); the
 * public key, which the map lists, is derived from it, so a file and the map can be compared.
 *
 *   portalctl keys generate alpha  ->  alpha.key (secret, 0600)   alpha.pub (public, in the map)
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import { FlotillaError } from '../errors';

/** Where a daemon's secret key is read from unless `--key` or `$FLOTILLA_KEY` says otherwise. */
export const DEFAULT_KEY_DIR = '/etc/flotilla/keys';

/** A process's CURVE identity: its key pair, both in Z85. */
export interface KeyPair {
  publicKey: string;
  secretKey: string;
}

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
const Z85_VALUE = new Map([...Z85].map((c, i) => [c, i]));
/** A Z85-encoded 32-byte CURVE key. */
export const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

/** Z85 text (a multiple of 5 characters) -> bytes; null if it is not Z85. */
export function z85Decode(text: string): Buffer | null {
  if (text.length % 5 !== 0) return null;
  const out = Buffer.alloc((text.length / 5) * 4);
  for (let i = 0; i < text.length; i += 5) {
    let value = 0;
    for (let j = 0; j < 5; j++) {
      const digit = Z85_VALUE.get(text[i + j]!);
      if (digit === undefined) return null;
      value = value * 85 + digit;
    }
    if (value > 0xffffffff) return null;
    out.writeUInt32BE(value, (i / 5) * 4);
  }
  return out;
}

/** Bytes (a multiple of 4) -> Z85 text. */
export function z85Encode(bytes: Buffer): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 4) {
    let value = bytes.readUInt32BE(i);
    let chunk = '';
    for (let j = 0; j < 5; j++) {
      chunk = Z85[value % 85]! + chunk;
      value = Math.floor(value / 85);
    }
    out += chunk;
  }
  return out;
}

// DER wrappers of a raw X25519 key (RFC 8410): CURVE keys are X25519 keys.
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** A raw 32-byte CURVE secret key as node:crypto's X25519 private key. */
export function x25519PrivateKey(raw: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_X25519, raw]), format: 'der', type: 'pkcs8' });
}

/** The public key (Z85) of a secret key (Z85); null if `secret` is not a CURVE secret key. */
export function publicKeyOf(secret: string): string | null {
  const raw = Z85_KEY.test(secret) ? z85Decode(secret) : null;
  if (!raw) return null;
  const key = createPublicKey(x25519PrivateKey(raw));
  const spki = key.export({ format: 'der', type: 'spki' });
  return z85Encode(spki.subarray(spki.length - 32));
}

/** A new key pair (libzmq's `zmq_curve_keypair`). */
export function generateKeyPair(): KeyPair {
  return zmq.curveKeyPair();
}

/**
 * Writes `<dir>/<name>.key` (the secret, mode 0600) and `<dir>/<name>.pub` (the public key,
 * for the map). Refuses to overwrite an existing key file: a lost secret is a revoked key.
 */
export function writeKeyPair(dir: string, name: string, pair = generateKeyPair()): { secretFile: string; publicFile: string; publicKey: string } {
  const secretFile = join(dir, `${name}.key`);
  const publicFile = join(dir, `${name}.pub`);
  try {
    writeFileSync(secretFile, `${pair.secretKey}\n`, { mode: 0o600, flag: 'wx' });
    writeFileSync(publicFile, `${pair.publicKey}\n`, { mode: 0o644, flag: 'wx' });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'EEXIST' ? `${e.path ?? secretFile} exists already (remove it first to replace the key)` : e.message;
    throw new FlotillaError('KEY_INVALID', `cannot write the key pair ${name}: ${why}`, { cause: err });
  }
  return { secretFile, publicFile, publicKey: pair.publicKey };
}

/**
 * Reads a secret key file: it must exist, be readable, be open to its owner only (no group or
 * other bits) and hold a CURVE secret key. Throws KEY_INVALID naming the file and what is wrong.
 */
export function readKeyFile(file: string): KeyPair {
  let text: string;
  let mode: number;
  try {
    mode = statSync(file).mode & 0o777;
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file; make one with `portalctl keys generate NAME --dir DIR`' : e.message;
    throw new FlotillaError('KEY_INVALID', `cannot read the key file ${file}: ${why}`, { cause: err });
  }
  if ((mode & 0o077) !== 0) {
    throw new FlotillaError('KEY_INVALID', `the key file ${file} has mode 0${mode.toString(8)}: a secret key must be readable by its owner only (chmod 600 ${file})`);
  }
  const secretKey = text.trim();
  const publicKey = publicKeyOf(secretKey);
  if (!publicKey) throw new FlotillaError('KEY_INVALID', `the key file ${file} does not hold a CURVE secret key (40 characters of Z85, as \`portalctl keys generate\` writes)`);
  return { publicKey, secretKey };
}
