/**
 * The sender's map-change barrier, without processes: plain objects stand in for channels (the
 * barrier reads only `nextOrder` and `lowestUnsettled()`), and maps are parsed from text.
 *
 *   map 1: servers a, b  --edit-->  map 2: a, b, c (some buckets of a and b move to c)
 *
 * A record of a key waits while the channel its key went to under map 1 has batches from before
 * the change unsettled; its parked records go, in order, once they have all settled.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { parseMap } from '../src/map/load';
import { ownerOfKey } from '../src/map/route';
import type { FlotillaMap, MapStream } from '../src/map/types';
import { decodeBody } from '../src/protocol/envelope';
import { Barrier, type BarrierChannel } from '../src/sender/barrier';
import { RECORD_SCHEMA } from './support/flows';

function mapText(epoch: number, servers: string[], streams: { name: string; buckets: number }[]): FlotillaMap {
  const text = stringify({
    instance: 'test',
    epoch,
    servers: servers.map((name, i) => ({ name, host: `10.0.0.${i + 1}` })), // never contacted
    streams: streams.map((s, i) => ({ name: s.name, key: 'key', port: 7100 + i, buckets: s.buckets, schema: RECORD_SCHEMA(`R${i}`) })),
  });
  return parseMap(text, `map-${epoch}.yaml`);
}

const MAP1 = mapText(1, ['a', 'b'], [{ name: 'orders', buckets: 64 }]);
const MAP2 = mapText(2, ['a', 'b', 'c'], [{ name: 'orders', buckets: 64 }]);
const MAP3 = mapText(3, ['a', 'b', 'c', 'd'], [{ name: 'orders', buckets: 64 }]);

const ordersOf = (map: FlotillaMap): MapStream => map.streams.find((s) => s.name === 'orders')!;
const ownerIn = (map: FlotillaMap, key: string): string => map.servers[ownerOfKey(ordersOf(map), key)]!.name;

/** A key owned by `from` under `before` and by `to` under `after`. */
function keyMoving(before: FlotillaMap, after: FlotillaMap, from: string, to: string, skip = 0): string {
  for (let k = 0, found = 0; k < 100_000; k++) {
    const key = `k${k}`;
    if (ownerIn(before, key) === from && ownerIn(after, key) === to && found++ === skip) return key;
  }
  throw new Error(`no key moves from ${from} to ${to}`);
}

/** A stand-in for a channel: the order of its next batch and of its oldest unsettled one. */
class FakeChannel implements BarrierChannel {
  constructor(
    readonly name: string,
    public nextOrder: number,
    public lowest = Infinity,
  ) {}
  lowestUnsettled(): number {
    return this.lowest;
  }
}

/** Channels of stream orders by server name, and the lookup the barrier is given. */
function channelsOf(...chs: FakeChannel[]): { all: FakeChannel[]; lookup: (stream: string, server: string) => FakeChannel | undefined } {
  const byName = new Map(chs.map((c) => [`orders/${c.name}`, c]));
  return { all: chs, lookup: (stream, server) => byName.get(`${stream}/${server}`) };
}

/** Parks records `key#seq` for `ch` in the given order. */
function park(b: Barrier<FakeChannel>, ch: FakeChannel, records: [string, number][]): void {
  const type = ordersOf(MAP2).type;
  const id = Buffer.alloc(16);
  for (const [key, seq] of records) b.park(ch).append(key, id, 0, [], type, { key, seq });
}

/** What `release` handed over: per channel, the records in the order they are in the body. */
function releaseAll(b: Barrier<FakeChannel>): { done: boolean; sent: { ch: string; count: number; records: string[] }[] } {
  const sent: { ch: string; count: number; records: string[] }[] = [];
  const done = b.release((ch, body, count) => {
    const records = decodeBody<{ key: string; seq: number }>(body, ordersOf(MAP2).type).map((r) => `${r.value.key}#${r.value.seq}`);
    sent.push({ ch: ch.name, count, records });
  });
  return { done, sent };
}

test('a channel that closed no batch before the change is not waited for: nothing waits, and the barrier is over at once', () => {
  const a = new FakeChannel('a', 0);
  const b = new FakeChannel('b', 0);
  const { all, lookup } = channelsOf(a, b);
  const barrier = Barrier.raise(null, MAP1, all, lookup);
  assert.equal(barrier.waiting, 0);
  for (let k = 0; k < 200; k++) assert.equal(barrier.waitOn(ordersOf(MAP2), `k${k}`), null, `k${k} waits`);
  const { done, sent } = releaseAll(barrier);
  assert.equal(done, true, 'the barrier is over');
  assert.deepEqual(sent, []);
});

test('a record whose key moved waits for the channel of its old owner while that channel has unsettled batches from before the change', () => {
  const a = new FakeChannel('a', 5, 2); // batches 0..4 before the change, 2..4 unsettled
  const b = new FakeChannel('b', 3, Infinity); // all settled, but not yet released
  const { all, lookup } = channelsOf(a, b);
  const barrier = Barrier.raise(null, MAP1, all, lookup);
  const movedFromA = keyMoving(MAP1, MAP2, 'a', 'c');
  const movedFromB = keyMoving(MAP1, MAP2, 'b', 'c');
  assert.equal(barrier.waitOn(ordersOf(MAP2), movedFromA), a, 'waits for a, its owner under map 1');
  assert.equal(barrier.waitOn(ordersOf(MAP2), movedFromB), b, 'waits for b until b is released');

  // b has settled everything from before the change: the next release lets its keys go.
  const { done } = releaseAll(barrier);
  assert.equal(done, false, 'a is still waited for');
  assert.equal(barrier.waitOn(ordersOf(MAP2), movedFromB), null, "b's keys go at once now");
  assert.equal(barrier.waitOn(ordersOf(MAP2), movedFromA), a, "a's keys still wait");

  // Only batches after the change are unsettled on a: its keys go too.
  a.lowest = 5;
  a.nextOrder = 7;
  assert.equal(releaseAll(barrier).done, true);
  assert.equal(barrier.waitOn(ordersOf(MAP2), movedFromA), null);
});

test('a record whose key did not move waits only while its own channel is marked (a redirected batch of it would be routed again behind it otherwise)', () => {
  const a = new FakeChannel('a', 4, 1);
  const b = new FakeChannel('b', 0); // no batch before the change
  const { all, lookup } = channelsOf(a, b);
  const barrier = Barrier.raise(null, MAP1, all, lookup);
  const stayOnA = keyMoving(MAP1, MAP2, 'a', 'a');
  const stayOnB = keyMoving(MAP1, MAP2, 'b', 'b');
  assert.equal(barrier.waitOn(ordersOf(MAP2), stayOnA), a);
  assert.equal(barrier.waitOn(ordersOf(MAP2), stayOnB), null, 'b had nothing in flight: no wait');
  a.lowest = Infinity;
  releaseAll(barrier);
  assert.equal(barrier.waitOn(ordersOf(MAP2), stayOnA), null);
});

test('a key whose old owner has no channel at all does not wait', () => {
  const a = new FakeChannel('a', 4, 0);
  const { all, lookup } = channelsOf(a); // the sender never opened a channel to b
  const barrier = Barrier.raise(null, MAP1, all, lookup);
  assert.equal(barrier.waitOn(ordersOf(MAP2), keyMoving(MAP1, MAP2, 'b', 'c')), null);
});

test('parked records are released once, in order, only when every batch of their channel up to the change is settled', () => {
  const a = new FakeChannel('a', 5, 3); // last batch before the change: 4
  const { all, lookup } = channelsOf(a);
  const barrier = Barrier.raise(null, MAP1, all, lookup);
  const k1 = keyMoving(MAP1, MAP2, 'a', 'c', 0);
  const k2 = keyMoving(MAP1, MAP2, 'a', 'c', 1);
  const k3 = keyMoving(MAP1, MAP2, 'a', 'a', 0);
  park(barrier, a, [
    [k1, 0],
    [k2, 0],
    [k1, 1],
    [k3, 0],
    [k1, 2],
  ]);

  let r = releaseAll(barrier);
  assert.deepEqual(r, { done: false, sent: [] }, 'batches 3 and 4 are unsettled');
  a.lowest = 4;
  r = releaseAll(barrier);
  assert.deepEqual(r, { done: false, sent: [] }, 'batch 4, the last before the change, is unsettled');

  // Batches closed after the change may still be out: they do not hold the parked records.
  a.nextOrder = 9;
  a.lowest = 5;
  r = releaseAll(barrier);
  assert.equal(r.done, true);
  assert.deepEqual(r.sent, [{ ch: 'a', count: 5, records: [`${k1}#0`, `${k2}#0`, `${k1}#1`, `${k3}#0`, `${k1}#2`] }]);
  assert.deepEqual(releaseAll(barrier).sent, [], 'released once');
});

test('the barrier ends only when no marked channel is left', () => {
  const a = new FakeChannel('a', 2, 0);
  const b = new FakeChannel('b', 6, 5);
  const { all, lookup } = channelsOf(a, b);
  const barrier = Barrier.raise(null, MAP1, all, lookup);
  assert.equal(barrier.waiting, 2);
  a.lowest = Infinity;
  assert.equal(releaseAll(barrier).done, false);
  assert.equal(barrier.waiting, 1);
  b.lowest = 6;
  assert.equal(releaseAll(barrier).done, true);
  assert.equal(barrier.waiting, 0);
});

test('a second map change while the barrier is up keeps the first map as "before" and moves each mark to the newest batch', () => {
  const a = new FakeChannel('a', 3, 1);
  const b = new FakeChannel('b', 2, 0);
  const { all, lookup } = channelsOf(a, b);
  const first = Barrier.raise(null, MAP1, all, lookup);
  // More batches were routed under map 2 before map 3 came.
  a.nextOrder = 6;
  const second = Barrier.raise(first, MAP2, all, lookup);
  assert.equal(second, first, 'the barrier already up stays');
  assert.equal(second.before, MAP1);

  // A key that went to a under map 1 and to c under map 2: it waits for a (map 1's owner).
  const key = keyMoving(MAP1, MAP2, 'a', 'c');
  assert.equal(second.waitOn(ordersOf(MAP3), key), a);

  // a's mark is now batch 5, the last routed under map 2.
  a.lowest = 4;
  b.lowest = Infinity;
  assert.equal(releaseAll(second).done, false, 'batch 4 of a, routed under map 2, is unsettled');
  a.lowest = 6;
  assert.equal(releaseAll(second).done, true);
});

test('a stream that is new, or whose bucket count changed, has no old owner to wait for', () => {
  const before = mapText(1, ['a', 'b'], [{ name: 'orders', buckets: 64 }]);
  const after = mapText(2, ['a', 'b'], [
    { name: 'orders', buckets: 128 },
    { name: 'audits', buckets: 64 },
  ]);
  const a = new FakeChannel('a', 3, 0);
  const b = new FakeChannel('b', 3, 0);
  const { all, lookup } = channelsOf(a, b);
  const barrier = Barrier.raise(null, before, all, lookup);
  const audits = after.streams.find((s) => s.name === 'audits')!;
  const orders = after.streams.find((s) => s.name === 'orders')!;
  for (let k = 0; k < 50; k++) {
    assert.equal(barrier.waitOn(orders, `k${k}`), null, 'orders changed its bucket count');
    assert.equal(barrier.waitOn(audits, `k${k}`), null, 'audits is new');
  }
});

test('parkedOver says when the records parked for one channel pass a size', () => {
  const a = new FakeChannel('a', 1, 0);
  const b = new FakeChannel('b', 1, 0);
  const { all, lookup } = channelsOf(a, b);
  const barrier = Barrier.raise(null, MAP1, all, lookup);
  assert.equal(barrier.parkedOver(0), false, 'nothing parked');
  park(barrier, a, [['x', 1]]);
  park(barrier, b, [['y', 1]]);
  const one = barrier.park(a).size;
  assert.equal(barrier.parkedOver(one), false, 'each channel holds one record');
  park(barrier, a, [['x', 2]]);
  assert.equal(barrier.parkedOver(one), true);
});
