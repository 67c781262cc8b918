/**
 * The hash is specified in docs/map.md and shipped as vectors (config/vectors.json, computed from
 * config/vectors.yaml). Checked two ways: Flotilla's own code reproduces every vector, and so
 * does a second implementation written here from docs/map.md alone (BigInt FNV-1a over UTF-8
 * bytes, a ketama ring rebuilt with node:crypto md5, a plain lower-bound lookup), for every
 * vector and for every bucket of every stream.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import HashRing from 'hashring';
import { parse } from 'yaml';
import { bucketOf, fnv1a32String, slotOf } from '../src/map/bucket';
import { loadMap } from '../src/map/load';
import { slotCount, streamOf } from '../src/map/lookup';

const ROOT = join(__dirname, '..', '..');
const MAP_FILE = join(ROOT, 'config', 'vectors.yaml');
const VECTORS_FILE = join(ROOT, 'config', 'vectors.json');

interface Vector {
  stream: string;
  key: string;
  fnv1a32: number;
  bucket: number;
  slot: number;
  server: string;
}

const vectors = JSON.parse(readFileSync(VECTORS_FILE, 'utf8')) as Vector[];

// ---- the independent implementation, from docs/map.md ---------------------------------------

/** docs/map.md step 2, in BigInt so that nothing is shared with src/bucket.ts's Math.imul. */
function docFnv1a32(bytes: Uint8Array): number {
  let h = 0x811c9dc5n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 0x01000193n) % 0x100000000n;
  return Number(h);
}

const utf8 = new TextEncoder();

function docBucket(key: string, buckets: number): number {
  return docFnv1a32(utf8.encode(key)) % buckets;
}

interface RawServer {
  name: string;
  weight?: number;
  slots?: Record<string, number>;
}
interface RawStream {
  name: string;
  buckets?: number;
  slots?: number;
}
/** The map as written, read with a plain YAML parser: defaults applied as docs/map.md states. */
const raw = parse(readFileSync(MAP_FILE, 'utf8')) as { servers: RawServer[]; streams: RawStream[] };
const docServers = raw.servers.map((s) => ({ name: s.name, weight: s.weight ?? 1, slots: s.slots ?? {} }));
const docStreams = raw.streams.map((s) => ({ name: s.name, buckets: s.buckets ?? 1024, slots: s.slots ?? 4 }));

interface Point {
  value: number;
  server: string;
}

const u32le = (d: Buffer, at: number) => (d[at]! | (d[at + 1]! << 8) | (d[at + 2]! << 16) | (d[at + 3]! << 24)) >>> 0;
const md5 = (s: string) => createHash('md5').update(Buffer.from(s, 'utf8')).digest();

/** docs/map.md step 4, items 1-3. */
function docRing(servers: { name: string; weight: number }[]): Point[] {
  const points: Point[] = [];
  for (const s of servers) {
    const n = Math.max(1, Math.round(40 * s.weight));
    for (let i = 0; i < n; i++) {
      const d = md5(`${s.name}-${i}`);
      for (let j = 0; j < 4; j++) points.push({ value: u32le(d, 4 * j), server: s.name });
    }
  }
  // Array.prototype.sort is stable: equal values keep insertion (map) order.
  return points.sort((a, b) => a.value - b.value);
}

/** Index of the first value >= k, or values.length: a plain lower bound. */
function lowerBound(values: ArrayLike<number>, k: number): number {
  let lo = 0;
  let hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (values[mid]! < k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** docs/map.md step 4, items 4-5. */
function docOwner(ring: Point[], values: number[], stream: string, bucket: number): string {
  const k = u32le(md5(`${stream}/${bucket}`), 0);
  const i = lowerBound(values, k);
  return ring[i === values.length ? 0 : i]!.server;
}

const ring = docRing(docServers);
const ringValues = ring.map((p) => p.value);

// ---- the checks --------------------------------------------------------------------------------

test('the vectors are a real test: hundreds, both streams, every server, the awkward keys', () => {
  assert.ok(vectors.length >= 200, `only ${vectors.length} vectors`);
  for (const s of docStreams) {
    const mine = vectors.filter((v) => v.stream === s.name);
    assert.ok(mine.length >= 50, `stream ${s.name}: ${mine.length} vectors`);
    for (const server of docServers) {
      assert.ok(mine.some((v) => v.server === server.name), `no vector of ${s.name} is owned by ${server.name}`);
    }
    assert.ok(new Set(mine.map((v) => v.slot)).size > 1, `stream ${s.name}: every vector in one slot`);
  }
  const keys = new Set(vectors.map((v) => v.key));
  for (const k of ['', 'a', '0', '007', '-42', 'caf\u00e9', 'cafe\u0301', '\u{1f600}', '\u0000']) {
    assert.ok(keys.has(k), `no vector for key ${JSON.stringify(k)}`);
  }
  assert.ok([...keys].some((k) => Buffer.byteLength(k) > k.length), 'no non-ASCII key');
  // The sample map weighs its servers differently, so placement must follow the weights.
  assert.deepEqual(
    docServers.map((s) => Math.max(1, Math.round(40 * s.weight))),
    [40, 100, 24],
  );
});

test("Flotilla's code reproduces every vector: bucketOf, the map's owner table, slotOf", () => {
  const map = loadMap(MAP_FILE);
  const problems: string[] = [];
  for (const v of vectors) {
    const stream = streamOf(map, v.stream);
    const bucket = bucketOf(v.key, stream.buckets);
    const server = map.servers[stream.owner[bucket]!]!;
    const slot = slotOf(bucket, slotCount(server, stream));
    const got = { fnv1a32: fnv1a32String(v.key), bucket, server: server.name, slot };
    const want = { fnv1a32: v.fnv1a32, bucket: v.bucket, server: v.server, slot: v.slot };
    if (JSON.stringify(got) !== JSON.stringify(want)) problems.push(`${v.stream} ${JSON.stringify(v.key)}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
  assert.deepEqual(problems.slice(0, 20), []);
});

test('an implementation written from docs/map.md reproduces every vector', () => {
  const problems: string[] = [];
  for (const v of vectors) {
    const s = docStreams.find((x) => x.name === v.stream);
    if (!s) {
      problems.push(`vector for unknown stream ${v.stream}`);
      continue;
    }
    const h = docFnv1a32(utf8.encode(v.key));
    const bucket = docBucket(v.key, s.buckets);
    const server = docOwner(ring, ringValues, s.name, bucket);
    const slots = docServers.find((x) => x.name === server)!.slots[s.name] ?? s.slots;
    const got = { fnv1a32: h, bucket, server, slot: bucket % slots };
    const want = { fnv1a32: v.fnv1a32, bucket: v.bucket, server: v.server, slot: v.slot };
    if (JSON.stringify(got) !== JSON.stringify(want)) problems.push(`${v.stream} ${JSON.stringify(v.key)}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
  assert.deepEqual(problems.slice(0, 20), []);
});

test("the docs' ring gives the map's owner for every bucket of every stream", () => {
  const map = loadMap(MAP_FILE);
  for (const s of docStreams) {
    const owner = streamOf(map, s.name).owner;
    assert.equal(owner.length, s.buckets);
    const problems: string[] = [];
    const share = new Map<string, number>();
    for (let b = 0; b < s.buckets; b++) {
      const want = map.servers[owner[b]!]!.name;
      const got = docOwner(ring, ringValues, s.name, b);
      share.set(got, (share.get(got) ?? 0) + 1);
      if (got !== want) problems.push(`${s.name} bucket ${b}: docs say ${got}, map says ${want}`);
    }
    assert.deepEqual(problems.slice(0, 20), []);
    for (const server of docServers) assert.ok((share.get(server.name) ?? 0) > 0, `${server.name} owns no bucket of ${s.name}`);
  }
});

test("hashring's find is the docs' lookup: first point >= key, wrapping, on every edge", () => {
  // Small rings over a small value range, so that equal points, a key equal to a point, a key of
  // zero and keys past the last point all occur often. Deterministic (xorshift32).
  let seed = 0x2545f491;
  const rand = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const find = (HashRing.prototype as unknown as { find(this: unknown, k: number): number }).find;
  const problems: string[] = [];
  for (let t = 0; t < 20_000; t++) {
    const n = 1 + rand(t % 2 === 0 ? 6 : 200);
    const range = t % 3 === 0 ? 8 : 400;
    const values = Array.from({ length: n }, () => rand(range)).sort((a, b) => a - b);
    const k = rand(range + 2);
    const lb = lowerBound(values, k);
    const want = lb === n ? 0 : lb;
    const got = find.call({ ring: values.map((value) => ({ value })), size: n }, k);
    if (got !== want && problems.length < 10) problems.push(`ring ${JSON.stringify(values)} key ${k}: hashring ${got}, docs ${want}`);
  }
  // And at the real ring's own extremes.
  const real = new HashRing(
    Object.fromEntries(docServers.map((s) => [s.name, { vnodes: Math.max(1, Math.round(40 * s.weight)) }])),
    'md5',
    { 'vnode count': 0 },
  ) as unknown as { ring: { value: number; server: string }[]; find(k: number): number };
  assert.deepEqual(
    real.ring.map((p) => `${p.value} ${p.server}`),
    ring.map((p) => `${p.value} ${p.server}`),
    "hashring's ring differs from the docs' ring",
  );
  const last = ringValues[ringValues.length - 1]!;
  for (const k of [0, 1, ringValues[0]!, ringValues[0]! + 1, ringValues[7]!, ringValues[7]! - 1, last, last + 1, 0xffffffff]) {
    const lb = lowerBound(ringValues, k);
    assert.equal(real.find(k), lb === ringValues.length ? 0 : lb, `key ${k}`);
  }
  assert.deepEqual(problems, []);
});
