/**
 * Keys and the transport rule, as an operator meets them: `portalctl keys generate` writes a key
 * pair (the secret 0600), `portalctl map check` refuses a map that would run plain TCP off
 * loopback and says how to make keys, and a daemon refuses to start on a key file that is
 * missing, open to others or not the one the map gives its server, each with its code.
 */
import { strict as assert } from 'node:assert';
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import type { FlotillaError } from '../src/errors';
import { generateKeyPair, publicKeyOf } from '../src/transport/keys';
import { identityProof, provesIdentity, signRequest, verifyRequest } from '../src/transport/proof';
import { portalctl, runCli } from './support/cli';
import { RECORD_SCHEMA } from './support/flows';

const dir = mkdtempSync(join(tmpdir(), 'flt-keys-'));
const keys = join(dir, 'keys');

function mapFile(name: string, servers: Record<string, unknown>[], extra: Record<string, unknown> = {}): string {
  const file = join(dir, `${name}.yaml`);
  const streams = [{ name: 'orders', key: 'key', port: 7401, schema: RECORD_SCHEMA('Order') }];
  writeFileSync(file, stringify({ instance: 'test', epoch: 1, run_dir: join(dir, 'run', name), servers, streams, ...extra }));
  return file;
}

test('portalctl keys generate writes the secret (0600) and its public key, and never overwrites a key', () => {
  const made = portalctl('keys', 'generate', 'alpha', '--dir', keys);
  assert.equal(made.status, 0, made.stderr);
  const secret = readFileSync(join(keys, 'alpha.key'), 'utf8').trim();
  const pub = readFileSync(join(keys, 'alpha.pub'), 'utf8').trim();
  assert.equal(statSync(join(keys, 'alpha.key')).mode & 0o777, 0o600);
  assert.equal(publicKeyOf(secret), pub);
  assert.match(made.stdout, new RegExp(`public_key: "${pub.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}"`));
  const again = portalctl('keys', 'generate', 'alpha', '--dir', keys);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /exists already .*KEY_INVALID/);
  assert.equal(readFileSync(join(keys, 'alpha.key'), 'utf8').trim(), secret, 'the key is kept');
});

test('map check refuses plain TCP off loopback, saying how to make keys, and a map without keys that does not ask for plain TCP; loopback with plain_tcp passes', () => {
  const off = portalctl('map', 'check', mapFile('off', [{ name: 'alpha', host: '10.9.8.7' }]));
  assert.equal(off.status, 1);
  assert.match(off.stderr, /servers\[0\]\.host: alpha binds 10\.9\.8\.7, not a loopback address, and the map has no keys/);
  assert.match(off.stderr, /portalctl keys generate alpha/);
  const json = JSON.parse(portalctl('map', 'check', mapFile('off', [{ name: 'alpha', host: '10.9.8.7' }]), '--json').stdout) as { code: string };
  assert.equal(json.code, 'PLAIN_TCP_REFUSED');
  const opted = portalctl('map', 'check', mapFile('opted', [{ name: 'alpha', host: '10.9.8.7' }], { security: { plain_tcp: true } }));
  assert.equal(opted.status, 1);
  assert.match(opted.stderr, /plain_tcp is allowed only when every server is on loopback/);
  const loop = portalctl('map', 'check', mapFile('loop', [{ name: 'alpha', host: '127.0.0.1' }], { security: { plain_tcp: true } }));
  assert.equal(loop.status, 0, loop.stderr);
  // On loopback too, plain TCP is asked for, never assumed.
  const unsaid = portalctl('map', 'check', mapFile('unsaid', [{ name: 'alpha', host: '127.0.0.1' }]));
  assert.equal(unsaid.status, 1);
  assert.match(unsaid.stderr, /security\.plain_tcp: the map has no keys and does not ask for plain TCP: on one host, say so with `security: \{ plain_tcp: true \}`/);
  const daemon = runCli('portal/main.js', ['--map', mapFile('unsaid', [{ name: 'alpha', host: '127.0.0.1' }]), '--server', 'alpha', '--stream', 'orders']);
  assert.equal(daemon.status, 1);
  assert.match(daemon.stderr, /PLAIN_TCP_REFUSED/);
  const pub = readFileSync(join(keys, 'alpha.pub'), 'utf8').trim();
  const half = portalctl('map', 'check', mapFile('half', [{ name: 'alpha', host: '10.9.8.7', public_key: pub }, { name: 'beta', host: '10.9.8.6' }]));
  assert.equal(half.status, 1);
  assert.match(half.stderr, /servers\[1\]\.public_key: is required: other servers have keys/);
  // One key for two servers: which server a request came from could not be told.
  const twin = portalctl('map', 'check', mapFile('twin', [{ name: 'alpha', host: '10.9.8.7', public_key: pub }, { name: 'beta', host: '10.9.8.6', public_key: pub }]));
  assert.equal(twin.status, 1);
  assert.match(twin.stderr, /servers\[1\]\.public_key: is also the key of server alpha: give each holder a key of its own/);
});

test('a daemon refuses a missing key, a key open to others, another server\'s key, and plain TCP off loopback', () => {
  portalctl('keys', 'generate', 'beta', '--dir', keys);
  const pub = readFileSync(join(keys, 'alpha.pub'), 'utf8').trim();
  const keyed = mapFile('keyed', [{ name: 'alpha', host: '127.0.0.1', public_key: pub }]);
  const portal = (map: string, ...args: string[]) => runCli('portal/main.js', ['--map', map, '--server', 'alpha', '--stream', 'orders', ...args]);

  const missing = portal(keyed, '--key', join(keys, 'nope.key'));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /cannot read the key file .*nope\.key: no such file; make one with `portalctl keys generate/);
  assert.match(missing.stderr, /KEY_INVALID/);

  const open = join(keys, 'open.key');
  writeFileSync(open, readFileSync(join(keys, 'alpha.key')));
  chmodSync(open, 0o644);
  const loose = portal(keyed, '--key', open);
  assert.equal(loose.status, 1);
  assert.match(loose.stderr, /has mode 0644: a secret key must be readable by its owner only \(chmod 600/);

  const other = portal(keyed, '--key', join(keys, 'beta.key'));
  assert.equal(other.status, 1);
  assert.match(other.stderr, /the key in .*beta\.key is not alpha's/);
  assert.match(other.stderr, /KEY_MISMATCH/);

  const env = runCli('agent/main.js', ['--map', mapFile('plain-off', [{ name: 'alpha', host: '10.9.8.7', agent_port: 7402 }]), '--server', 'alpha']);
  assert.equal(env.status, 1);
  assert.match(env.stderr, /PLAIN_TCP_REFUSED/);
  const bind = portal(mapFile('bind', [{ name: 'alpha', host: '127.0.0.1' }], { security: { plain_tcp: true } }), '--bind', '0.0.0.0');
  assert.equal(bind.status, 1);
  assert.match(bind.stderr, /--bind 0\.0\.0\.0 is not a loopback address/);
});

test("a forwarder's routing id (fwd/<server>) is proven by that server's key only; a request's proof by its sender's", () => {
  const portal = generateKeyPair();
  const alpha = generateKeyPair();
  const web = generateKeyPair();
  const id = 'fwd/alpha';
  const real = `${id}/${identityProof(id, alpha, portal.publicKey)}/0123456789abcdef`;
  assert.equal(provesIdentity(real, id, alpha.publicKey, portal), true);
  const forged = `${id}/${identityProof(id, web, portal.publicKey)}/0123456789abcdef`;
  assert.equal(provesIdentity(forged, id, alpha.publicKey, portal), false);
  assert.equal(provesIdentity(`${id}/0123456789abcdef`, id, alpha.publicKey, portal), false);

  const signed = signRequest({ cmd: 'pause' }, web, portal.publicKey);
  assert.deepEqual(verifyRequest(JSON.parse(JSON.stringify(signed)), portal, () => true).key, web.publicKey);
  const tampered = { ...(signed as Record<string, unknown>), cmd: 'resume' };
  assert.throws(() => verifyRequest(tampered, portal, () => true), /proof does not hold/);
  // A key the map does not list is refused before any key agreement.
  assert.throws(() => verifyRequest(JSON.parse(JSON.stringify(signed)), portal, () => false), /is not an operator's, a server's or a sender's/);
  assert.throws(() => verifyRequest({ cmd: 'pause' }, portal, () => true), (e: FlotillaError) => e.code === 'NOT_AUTHORIZED');
});
