/**
 * Writes config/vectors.json: for each stream of config/vectors.yaml and a fixed list of keys,
 * the bucket, owning server and slot that Flotilla computes. Other implementations of the hash
 * (docs/map.md) check themselves against the file; test/hash-vectors-test.ts checks Flotilla and
 * an independent implementation written from the docs against it.
 *
 *   npx tsc -p . && node dist/test/support/make-vectors.js [map.yaml] [out.json]
 */
import { writeFileSync } from 'node:fs';
import type avro from 'avsc';
import { join } from 'node:path';
import { bucketOf, fnv1a32String, slotOf } from '../../src/map/bucket';
import { type FlotillaMap } from '../../src/map/types';
import { loadMap } from '../../src/map/load';
import { slotCount } from '../../src/map/lookup';

/** The repository root (this file runs from dist/test/support/). */
export const ROOT = join(__dirname, '..', '..', '..');
export const VECTORS_MAP = join(ROOT, 'config', 'vectors.yaml');
export const VECTORS_JSON = join(ROOT, 'config', 'vectors.json');

export interface Vector {
  stream: string;
  /** The key as text: for int and long key fields, the decimal form of the number. */
  key: string;
  /** FNV-1a 32 of the key's UTF-8 bytes, unsigned; given to help debug an implementation. */
  fnv1a32: number;
  bucket: number;
  slot: number;
  server: string;
}

/** Keys that exercise the hash: short and empty, numeric-looking, every UTF-8 length, long. */
export function stringKeys(): string[] {
  const keys = [
    '', ' ', 'a', 'b', 'z', 'A', 'Z', '0', '1', '9', '-', '_', '/', '.', 'aa', 'ab', 'ba',
    // numeric-looking: hashed as text, so "7", "07" and "007" are three keys
    '00', '007', '07', '7', '42', '-42', '+42', '3.14', '1e3', '0x1f', '2147483647', '-2147483648',
    '4294967295', '4294967296', '9007199254740991', '18446744073709551615',
    // whitespace and control characters are key bytes like any other
    '\t', '\n', 'a b', ' a', 'a ', '\u0000', 'a\u0000b',
    // UTF-8 boundaries: 1, 2, 3 and 4 bytes per code point
    '\u007f', '\u0080', '\u00e9', '\u00ff', '\u07ff', '\u0800', '\u20ac', '\ufffd', '\uffff',
    '\u{10000}', '\u{1f600}', '\u{1f680}\u{1f680}', '\u{10ffff}',
    // no Unicode normalization: precomposed and combining forms are different keys
    'caf\u00e9', 'cafe\u0301', '\u00fc', 'u\u0308', 'stra\u00dfe', 'STRASSE', '\u03a9',
    '\u65e5\u672c', '\u6771\u4eac\u90fd', '\ud55c\uad6d\uc5b4', '\u043f\u0440\u0438\u0432\u0435\u0442',
    '\u0645\u0631\u062d\u0628\u0627', '\u00dcn\u00efc\u00f6d\u00e9-\u043a\u043b\u044e\u0447-42',
    'user-\u00e9\u{1f600}', '\u{1f468}\u200d\u{1f469}\u200d\u{1f467}',
    // long keys
    'x'.repeat(100), 'k'.repeat(1000), 'https://example.com/a/very/long/path?with=query&and=more#fragment',
  ];
  for (let i = 0; i < 80; i++) keys.push(`user-${i}`);
  for (let i = 0; i < 30; i++) keys.push(`k${i * 37}`);
  for (let i = 0; i < 12; i++) keys.push(`session:${(i * 2654435761) % 4294967296}`);
  return keys;
}

/** Decimal keys, as a long key field's values are hashed. */
export function numberKeys(): string[] {
  const n: number[] = [0, 1, -1, 2, 7, 10, 42, -42, 99, 100, 255, 256, 1000, 65535, 65536, 1_000_000];
  n.push(2147483647, -2147483648, 2147483648, 4294967295, 4294967296, 9007199254740991, -9007199254740991);
  for (let i = 0; i < 60; i++) n.push(i * 7919 + 3);
  for (let i = 1; i <= 20; i++) n.push(-i * 1_000_003);
  for (let i = 0; i < 20; i++) n.push(1_700_000_000_000 + i * 86_400_000);
  return n.map((x) => String(x));
}

/** The vectors, computed with Flotilla's own code. */
export function makeVectors(map: FlotillaMap): Vector[] {
  const out: Vector[] = [];
  for (const stream of map.streams) {
    const isString = (stream.type as avro.types.RecordType).field(stream.keyField)!.type.typeName === 'string';
    for (const key of isString ? stringKeys() : numberKeys()) {
      const bucket = bucketOf(key, stream.buckets);
      const server = map.servers[stream.owner[bucket]!]!;
      out.push({ stream: stream.name, key, fnv1a32: fnv1a32String(key), bucket, slot: slotOf(bucket, slotCount(server, stream)), server: server.name });
    }
  }
  return out;
}

/** One vector per line: easy to diff, easy to read from any language. */
export function formatVectors(vectors: Vector[]): string {
  return '[\n' + vectors.map((v) => '  ' + JSON.stringify(v)).join(',\n') + '\n]\n';
}

if (require.main === module) {
  const mapFile = process.argv[2] ?? VECTORS_MAP;
  const outFile = process.argv[3] ?? VECTORS_JSON;
  const vectors = makeVectors(loadMap(mapFile));
  writeFileSync(outFile, formatVectors(vectors));
  process.stdout.write(`${outFile}: ${vectors.length} vectors from ${mapFile}\n`);
}
