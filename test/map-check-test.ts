/**
 * Broken maps are rejected before anything uses them, every problem reported as
 * `path: message`; `portalctl map check|lookup|diff` say what a map does.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { bucketOf } from '../src/map/bucket';
import { MapInvalidError } from '../src/errors';
import { loadMap, parseMap } from '../src/map/load';
import { generateKeyPair } from '../src/transport/keys';
import { portalctl } from './support/cli';

const dir = mkdtempSync(join(tmpdir(), 'flt-map-'));
const CLICK = { type: 'record', name: 'Click', fields: [{ name: 'user', type: 'string' }, { name: 'n', type: 'double' }] };

function good(): Record<string, any> {
  return {
    instance: 'test',
    epoch: 1,
    servers: [
      { name: 'alpha', host: '10.0.0.1', weight: 1 },
      { name: 'beta', host: '10.0.0.2', weight: 2 },
      { name: 'gamma', host: '10.0.0.3' },
    ],
    streams: [{ name: 'clicks', key: 'user', port: 7401, buckets: 512, slots: 4, schema: CLICK }],
  };
}

function write(name: string, map: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof map === 'string' ? map : stringify(map));
  return file;
}

function problemsOf(text: string): string[] {
  try {
    parseMap(text, 'm.yaml');
  } catch (err) {
    assert.ok(err instanceof MapInvalidError, `expected MapInvalidError, got ${String(err)}`);
    assert.equal(err.code, 'MAP_INVALID');
    return err.problems.map((p) => `${p.path}: ${p.message.replace(/ \(line \d+\)$/, '')}`);
  }
  assert.fail('map was accepted');
}

const BROKEN: [string, (m: Record<string, any>) => unknown, string][] = [
  ['no streams', (m) => (delete m.streams, m), 'streams: is required'],
  ['port out of range', (m) => ((m.streams[0].port = 70000), m), 'streams[0].port: must be <= 65535'],
  ['renamed field', (m) => ((m.streams[0].partitions = 8), m), 'streams[0].partitions: unknown field; did you mean "buckets"?'],
  ['bad server name', (m) => ((m.servers[1].name = 'Beta!'), m), 'servers[1].name: must be lower case letters, digits, "-" or "_", starting with a letter, at most 32 characters'],
  ['duplicate server', (m) => ((m.servers[2].name = 'alpha'), m), 'servers[2].name: duplicate server name "alpha"'],
  ['key not in schema', (m) => ((m.streams[0].key = 'page'), m), 'streams[0].key: field "page" is not in the schema (fields: user, n)'],
  ['key of wrong type', (m) => ((m.streams[0].key = 'n'), m), 'streams[0].key: field "n" has type double; a key must be string, int or long'],
  ['bad Avro schema', (m) => ((m.streams[0].schema = { type: 'record', name: 'X', fields: [{ name: 'a', type: 'strng' }] }), m), 'streams[0].schema: not a valid Avro schema: undefined type name: strng'],
  ['negative weight', (m) => ((m.servers[0].weight = -1), m), 'servers[0].weight: must be >= 0'],
  ['every weight 0', (m) => (m.servers.forEach((s: { weight?: number }) => (s.weight = 0)), m), 'servers: at least one server needs a weight above 0'],
  ['epoch missing', (m) => (delete m.epoch, m), 'epoch: is required'],
  ['override for no stream', (m) => ((m.servers[0].ports = { views: 9000 }), m), 'servers[0].ports.views: no stream named "views" in streams'],
  [
    'two portals on one port',
    (m) => (m.streams.push({ ...m.streams[0], name: 'views' }), m),
    'streams[1].port: port 7401 on host 10.0.0.1 is also used by the clicks portal of alpha',
  ],
  ['YAML syntax', () => 'instance: test\nservers: [\n', 'line 3: '],
  ['unknown spool mode', (m) => ((m.streams[0].spool = { mode: 'sometimes' }), m), 'streams[0].spool.mode: must be one of: off, spill, always'],
  ['a size that is not one', (m) => ((m.streams[0].spool = { mode: 'spill', max_bytes: '12 parsecs' }), m), 'streams[0].spool.max_bytes: must be a number of bytes, or a size such as "64KiB", "512MiB" or "1GiB"'],
  ['a spool smaller than 4 batches', (m) => ((m.streams[0].spool = { mode: 'always', max_bytes: '1MiB' }), m), 'streams[0].spool.max_bytes: must hold at least 4 batches (4194304 bytes at max_batch_bytes 1048576)'],
  ['an fsync interval without fsync: interval', (m) => ((m.streams[0].spool = { mode: 'always', fsync: 'always', fsync_interval_ms: 100 }), m), 'streams[0].spool.fsync_interval_ms: applies only with fsync: interval (fsync is always)'],
  ['an unknown spool field', (m) => ((m.streams[0].spool = { mode: 'spill', size: 10 }), m), 'streams[0].spool.size: unknown field'],
  // memory limits (docs/security.md, "Limits")
  ['max_unread_replies under 2 x window', (m) => ((m.streams[0].window = 64), (m.streams[0].memory = { max_unread_replies: 100 }), m), 'streams[0].memory.max_unread_replies: must be at least 2 x window (128)'],
  ['a slot bound smaller than a batch', (m) => ((m.streams[0].memory = { max_slot_bytes: '512KiB' }), m), 'streams[0].memory.max_slot_bytes: must hold at least one batch (max_batch_bytes 1048576)'],
  ['max_rss_bytes below the records it lets the portal hold', (m) => ((m.streams[0].memory = { max_queued_bytes: '1GiB', max_rss_bytes: '1GiB' }), m), 'streams[0].memory.max_rss_bytes: must be at least max_queued_bytes + 64MiB (1140850688)'],
  ['an unknown memory field', (m) => ((m.streams[0].memory = { max_frames: 10 }), m), 'streams[0].memory.max_frames: unknown field'],
];

for (const [what, breakIt, expected] of BROKEN) {
  test(`a map with ${what} is rejected: ${expected}`, () => {
    const broken = breakIt(good());
    const problems = problemsOf(typeof broken === 'string' ? broken : stringify(broken));
    assert.ok(
      problems.some((p) => p.startsWith(expected)),
      `expected a problem starting "${expected}", got:\n${problems.join('\n')}`,
    );
  });
}

test('spool settings: defaults filled in, sizes read with their units, dir relative to the map', () => {
  const none = parseMap(stringify(good()), join(dir, 'm.yaml')).streams[0]!.spool;
  assert.deepEqual(none, {
    mode: 'off',
    dir: '/var/lib/flotilla/test/spool',
    maxBytes: 2 ** 30,
    whenFull: 'block',
    fsync: 'interval',
    fsyncIntervalMs: 1000,
    minFreeBytes: 64 * 2 ** 20,
  });
  const m = good();
  m.streams[0].spool = { mode: 'always', dir: 'spool', max_bytes: '1.5GiB', min_free_bytes: '100MB', when_full: 'reject', fsync: 'never' };
  const sp = parseMap(stringify(m), join(dir, 'm.yaml')).streams[0]!.spool;
  assert.equal(sp.dir, join(dir, 'spool'));
  assert.equal(sp.maxBytes, 1.5 * 2 ** 30);
  assert.equal(sp.minFreeBytes, 100e6);
  assert.deepEqual([sp.mode, sp.whenFull, sp.fsync], ['always', 'reject', 'never']);
});

test('every problem of a map is reported at once, each with its line', () => {
  const m = good();
  m.streams[0].port = 0;
  m.servers[0].colour = 'red';
  delete m.servers[1].host;
  const text = stringify(m);
  let err: MapInvalidError | undefined;
  try {
    parseMap(text, 'm.yaml');
  } catch (e) {
    err = e as MapInvalidError;
  }
  assert.ok(err instanceof MapInvalidError);
  const lines = err.problems.map((p) => `${p.path}: ${p.message}`);
  assert.equal(lines.length, 3, lines.join('\n'));
  assert.match(lines.join('\n'), /streams\[0\]\.port: must be >= 1 \(line \d+\)/);
  assert.match(lines.join('\n'), /servers\[0\]\.colour: unknown field \(line \d+\)/);
  assert.match(lines.join('\n'), /servers\[1\]\.host: is required \(line \d+\)/);
});

test('portalctl map check: exit 0 and a summary for a valid map, exit 1 and every problem for a broken one', () => {
  // Servers off loopback need keys (docs/security.md; keys-test.ts checks the refusal).
  const keyed = good();
  for (const s of keyed.servers) s.public_key = generateKeyPair().publicKey;
  const ok = portalctl('map', 'check', write('ok.yaml', keyed));
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /valid; instance test, epoch 1, 3 servers, 1 streams/);

  const m = good();
  m.streams[0].port = 'x';
  m.epoch = -1;
  const bad = portalctl('map', 'check', write('bad.yaml', m));
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /2 problems/);
  assert.match(bad.stderr, /streams\[0\]\.port: must be integer/);
  assert.match(bad.stderr, /epoch: must be >= 1/);

  const json = portalctl('map', 'check', write('bad.yaml', m), '--json');
  assert.equal(json.status, 1);
  const parsed = JSON.parse(json.stdout) as { valid: boolean; problems: { path: string }[] };
  assert.equal(parsed.valid, false);
  assert.deepEqual(parsed.problems.map((p) => p.path).sort(), ['epoch', 'streams[0].port']);

  const missing = portalctl('map', 'check', join(dir, 'nope.yaml'));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /cannot read map .*nope\.yaml/);
});

test('portalctl map lookup names the bucket, server and slot that own a key', () => {
  const file = write('lookup.yaml', good());
  const map = loadMap(file);
  const r = portalctl('map', 'lookup', file, 'clicks', 'user-42', '--json');
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout) as { bucket: number; server: string; slot: number; port: number };
  const bucket = bucketOf('user-42', 512);
  assert.equal(got.bucket, bucket);
  assert.equal(got.server, map.servers[map.streams[0]!.owner[bucket]!]!.name);
  assert.equal(got.slot, bucket % 4);
  assert.equal(got.port, 7401);

  const text = portalctl('map', 'lookup', file, 'clicks', 'user-42');
  assert.match(text.stdout, new RegExp(`bucket ${bucket} -> server ${got.server} \\(10\\.0\\.0\\.\\d:7401\\), slot ${got.slot}`));

  const unknown = portalctl('map', 'lookup', file, 'views', 'k');
  assert.equal(unknown.status, 1);
  assert.match(unknown.stderr, /no stream "views" .*streams: clicks/);
});

test('a server of weight 0 is in the map but owns no bucket', () => {
  const m = good();
  m.servers.push({ name: 'delta', host: '10.0.0.4', weight: 0 });
  const map = parseMap(stringify(m), 'm.yaml');
  assert.ok(!map.streams[0]!.owner.includes(3), 'delta owns nothing');
  assert.deepEqual([...map.streams[0]!.owner], [...parseMap(stringify(good()), 'm.yaml').streams[0]!.owner], 'and takes nothing from the others');
});

test('portalctl map diff: adding a server moves only buckets to it, and exactly the ones whose owner changed', () => {
  const before = good();
  const after = good();
  after.epoch = 2;
  after.servers.push({ name: 'delta', host: '10.0.0.4', weight: 1 });
  const oldFile = write('before.yaml', before);
  const newFile = write('after.yaml', after);
  const r = portalctl('map', 'diff', oldFile, newFile, '--json');
  assert.equal(r.status, 0, r.stderr);
  const d = JSON.parse(r.stdout) as { streams: { stream: string; moved: number; moves: { from: string; to: string; buckets: number }[] }[] };
  const a = loadMap(oldFile).streams[0]!;
  const b = loadMap(newFile).streams[0]!;
  let changed = 0;
  for (let i = 0; i < a.buckets; i++) if (a.owner[i] !== b.owner[i]) changed++;
  assert.ok(changed > 0 && changed < a.buckets / 2, `a quarter-ish of buckets should move, ${changed} did`);
  assert.equal(d.streams[0]!.moved, changed);
  assert.ok(d.streams[0]!.moves.every((m) => m.to === 'delta'), JSON.stringify(d.streams[0]!.moves));
  assert.equal(d.streams[0]!.moves.reduce((n, m) => n + m.buckets, 0), changed);

  const text = portalctl('map', 'diff', oldFile, newFile);
  assert.match(text.stdout, new RegExp(`clicks: ${changed} of 512 buckets move`));

  // The same epoch twice is an edit that forgot to say so.
  const same = portalctl('map', 'diff', oldFile, oldFile);
  assert.equal(same.status, 1);
  assert.match(same.stderr, /epoch must go up on every edit/);
});
