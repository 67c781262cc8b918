/**
 * dropRoots, the portal's filter while a cancellation is in force: a record's root is its first
 * provenance entry when that is a root id, else its own id; records of a cancelled root go, the
 * others stay in order, and a root that only shares its last 32 bits with a cancelled one stays.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import * as avro from 'avsc';
import { decodeBody, EnvelopeWriter } from '../src/protocol/envelope';
import { dropRoots, rootTail } from '../src/protocol/root';

const TYPE = avro.Type.forSchema({ type: 'record', name: 'R', fields: [{ name: 'key', type: 'string' }] });
const id = (hex: string) => Buffer.from(hex, 'hex');

test('dropRoots drops the records of cancelled roots, by root entry or by id, and nothing else', () => {
  const cancelled = 'aa'.repeat(12) + '0000002a'; // a root id, tail 42
  const twin = 'bb'.repeat(12) + '0000002a'; // another root with the same tail
  const w = new EnvelopeWriter();
  const rows: [string, Buffer, string[]][] = [
    ['derived', id('11'.repeat(16)), [cancelled, 'alpha/requests/0']], // root entry: cancelled
    ['twin', id('22'.repeat(16)), [twin, 'alpha/requests/0']], // same tail, other root: kept
    ['itself', id(cancelled), []], // no root entry: its own id is its root: cancelled
    ['outside', id('33'.repeat(16)), []], // its own root: kept
    ['hops', id('44'.repeat(12) + '0000002a'), ['alpha/requests/0']], // no root entry, id tail 42, other root: kept
  ];
  for (const [key, rid, prov] of rows) w.append(key, rid, 1, prov, TYPE, { key });
  const body = w.take();
  const roots = new Set([cancelled]);
  const f = dropRoots(body, rows.length, new Set([rootTail(cancelled)]), (r) => roots.has(r));
  assert.ok(f);
  assert.equal(f.dropped, 2);
  assert.deepEqual(decodeBody<{ key: string }>(f.body, TYPE).map((r) => r.key), ['twin', 'outside', 'hops']);
  // No tail in the set: nothing is looked at further, nothing dropped.
  assert.equal(dropRoots(body, rows.length, new Set([rootTail(twin) + 1]), () => true), null);
});
