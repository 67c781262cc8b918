/**
 * The portal's router, holds and epoch plan on their own, no processes: a batch's plan (each record's bucket
 * and lane, each lane's records and bytes), a redirect for a key another server owns, held
 * buckets in lanes of their own, and the bodies cut per lane, records in order.
 *
 *   batch body --Routing.route--> BatchPlan --cutLanes--> one body per lane
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { bucketOf, slotOf } from '../src/map/bucket';
import { parseMap } from '../src/map/load';
import { routeKey } from '../src/map/route';
import type { FlotillaMap } from '../src/map/types';
import { EnvelopeWriter, RecordIndex } from '../src/protocol/envelope';
import type { Delivery } from '../src/portal/slot';
import { planSwitch } from '../src/portal/switch-plan';
import { Holds } from '../src/portal/holds';
import { diffMaps } from '../src/map/diff';
import { FlotillaError } from '../src/errors';
import { cutLanes, LANE_BOTH, LANE_SPOOL, Routing } from '../src/portal/router';
import { RECORD_SCHEMA } from './support/flows';

const BUCKETS = 64;
const D = 'a'.repeat(64);
const SLOTS = 4;

function twoServers(epoch = 1, betaWeight = 1): FlotillaMap {
  return parseMap(
    stringify({
      instance: 'test',
      epoch,
      servers: [
        { name: 'alpha', host: '127.0.0.1' },
        { name: 'beta', host: '127.0.0.2', weight: betaWeight },
      ],
      streams: [{ name: 'orders', key: 'key', port: 7401, buckets: BUCKETS, slots: SLOTS, schema: RECORD_SCHEMA('Order') }],
    }),
  );
}

/** A body of envelopes for `keys`, each payload the text `key#i`, and its scan. */
function batch(keys: string[]): { body: Buffer; index: RecordIndex } {
  const w = new EnvelopeWriter();
  keys.forEach((k, i) => w.appendEncoded(k, Buffer.alloc(16), 0, [], Buffer.from(`${k}#${i}`)));
  const body = w.take();
  const index = new RecordIndex();
  assert.ok(index.scan(body, keys.length), index.error);
  return { body, index };
}

/** The payload texts of a cut body, in order. */
function payloads(body: Buffer): string[] {
  const index = new RecordIndex();
  assert.ok(index.scan(body, -1), index.error);
  const out: string[] = [];
  for (let i = 0; i < index.count; i++) out.push(/[a-z0-9-]+#\d+$/.exec(body.toString('latin1', index.starts[i], index.starts[i + 1]))![0]);
  return out;
}

/** Keys owned by `server` (an index) in `map`, `n` of them. */
function keysOf(map: FlotillaMap, server: number, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) if (routeKey(map, map.streams[0]!, `k${i}`).serverIndex === server) out.push(`k${i}`);
  return out;
}

test('a batch of keys this server owns: each record gets its bucket and its slot as lane; lane counts and bytes add up', () => {
  const map = twoServers();
  const routing = new Routing(map, map.streams[0]!, 0, SLOTS);
  const keys = keysOf(map, 0, 50);
  const { body, index } = batch(keys);
  const plan = routing.route(body, index)!;
  assert.ok(plan, 'alpha owns every key');
  assert.equal(plan.count, keys.length);
  keys.forEach((k, i) => {
    assert.equal(plan.bucket[i], bucketOf(k, BUCKETS), `bucket of ${k}`);
    assert.equal(plan.lane[i], slotOf(bucketOf(k, BUCKETS), SLOTS), `lane of ${k}`);
  });
  assert.equal(plan.laneCount.length, SLOTS, 'one lane per slot while nothing is held');
  assert.equal(plan.laneCount.reduce((a, b) => a + b, 0), keys.length);
  assert.equal(plan.laneBytes.reduce((a, b) => a + b, 0), body.length);
  for (const k of new Set(keys.map((x) => bucketOf(x, BUCKETS)))) {
    assert.equal(routing.bucketRecords[k], keys.filter((x) => bucketOf(x, BUCKETS) === k).length, `records counted for bucket ${k}`);
  }
});

test("one key another server owns makes the whole batch a redirect (null plan)", () => {
  const map = twoServers();
  const routing = new Routing(map, map.streams[0]!, 0, SLOTS);
  const { body, index } = batch([...keysOf(map, 0, 10), keysOf(map, 1, 1)[0]!]);
  assert.equal(routing.route(body, index), null);
  assert.equal(routing.bucketRecords.reduce((a, b) => a + b, 0), 0, 'a redirected batch is not counted as load');
});

test('cut bodies hold each lane\'s records in arrival order; a lane with every record gets the body itself', () => {
  const map = twoServers();
  const routing = new Routing(map, map.streams[0]!, 0, SLOTS);
  const keys = keysOf(map, 0, 40);
  const { body, index } = batch(keys);
  const plan = routing.route(body, index)!;
  const bodies = cutLanes(body, index, plan, null);
  for (let lane = 0; lane < SLOTS; lane++) {
    const want = keys.map((k, i) => [k, i] as const).filter(([k]) => slotOf(bucketOf(k, BUCKETS), SLOTS) === lane).map(([k, i]) => `${k}#${i}`);
    assert.deepEqual(bodies[lane] ? payloads(bodies[lane]!) : [], want, `lane ${lane}`);
  }
  // Lanes the spool took whole get no body; a lane also on disk still gets its records.
  const modes = new Uint8Array(SLOTS).fill(LANE_SPOOL);
  modes[0] = LANE_BOTH;
  const cut = cutLanes(body, index, plan, modes);
  assert.deepEqual(cut.slice(1).filter((b) => b !== undefined), []);
  assert.deepEqual(payloads(cut[0]!), payloads(bodies[0]!));
  // One slot's keys only: no copy.
  const lane0 = keys.filter((k) => slotOf(bucketOf(k, BUCKETS), SLOTS) === 0);
  const one = batch(lane0);
  assert.equal(cutLanes(one.body, one.index, routing.route(one.body, one.index)!, null)[0], one.body);
});

test('buckets taken over are held per old owner in lanes of their own, until that owner releases them', () => {
  const before = twoServers(1, 1);
  const after = twoServers(2, 3); // beta takes buckets from alpha
  const routing = new Routing(before, before.streams[0]!, 1, SLOTS); // beta's portal
  const moved: number[] = [];
  for (let b = 0; b < BUCKETS; b++) if (before.streams[0]!.owner[b] === 0 && after.streams[0]!.owner[b] === 1) moved.push(b);
  assert.ok(moved.length > 0);
  routing.map = after;
  routing.stream = after.streams[0]!;
  routing.holds.begin(2, after.digest, new Map([['alpha', moved]]));
  assert.equal(routing.lanes, 2 * SLOTS, 'slots, and again for the hold group');
  const keys = keysOf(after, 1, 200);
  const { body, index } = batch(keys);
  const plan = routing.route(body, index)!;
  keys.forEach((k, i) => {
    const b = bucketOf(k, BUCKETS);
    assert.equal(plan.lane[i], (moved.includes(b) ? SLOTS : 0) + slotOf(b, SLOTS), `lane of ${k} (bucket ${b}${moved.includes(b) ? ', held' : ''})`);
  });
  assert.ok(plan.lane.some((l) => l >= SLOTS) && plan.lane.some((l) => l < SLOTS), 'both held and free keys in the batch');
  // Release: the group's buckets are free again, and the lanes go back to one per slot.
  const group = routing.holds.release('alpha')!;
  assert.deepEqual(group.buckets, moved);
  assert.equal(routing.holds.holding, false);
  assert.equal(routing.lanes, SLOTS);
  const again = routing.route(body, index)!;
  assert.ok(again.lane.every((l) => l < SLOTS));
});

test('holds: deliveries kept in order per group; a group released leaves the other groups\' lanes in place; early releases are remembered', () => {
  const holds = new Holds(16);
  holds.begin(2, D, new Map([['alpha', [1, 5]], ['gamma', [2, 9]]]));
  assert.deepEqual([holds.of[1], holds.of[5], holds.of[2], holds.of[9], holds.of[0]], [1, 1, 2, 2, 0]);
  assert.deepEqual(holds.from, ['alpha', 'gamma']);
  const d = (id: number) => ({ id }) as unknown as Delivery;
  holds.keep(d(1), SLOTS + 1, SLOTS); // group 1 (alpha)
  holds.keep(d(2), 2 * SLOTS + 3, SLOTS); // group 2 (gamma)
  holds.keep(d(3), SLOTS + 0, SLOTS);
  assert.throws(() => holds.begin(3, D, new Map()), /still held/, 'no new switch while something is held');
  const alpha = holds.release('alpha')!;
  assert.deepEqual(alpha.deliveries.map((x) => x.id), [1, 3], 'in arrival order');
  assert.equal(holds.groups, 2, "gamma keeps its lanes: alpha's group stays, emptied");
  assert.equal(holds.of[2], 2);
  assert.equal(holds.release('alpha'), null, 'released once');
  assert.deepEqual(holds.release('gamma')!.deliveries.map((x) => x.id), [2]);
  assert.equal(holds.groups, 0);
  // A release that comes before the switch to its epoch: that owner's buckets are not held.
  holds.releaseEarly({ from: 'alpha', epoch: 3, digest: D, buckets: [4] });
  holds.releaseEarly({ from: 'gamma', epoch: 3, digest: D, buckets: [7, 8] }); // not the buckets the switch takes
  holds.begin(3, D, new Map([['alpha', [4]], ['gamma', [7]]]));
  assert.deepEqual(holds.from, ['gamma']);
  assert.equal(holds.of[4], 0);
  // An early release for another map with the same epoch frees nothing.
  holds.release('gamma');
  holds.releaseEarly({ from: 'alpha', epoch: 4, digest: 'b'.repeat(64), buckets: [4] });
  holds.begin(4, D, new Map([['alpha', [4]]]));
  assert.deepEqual(holds.from, ['alpha'], 'a release for other map content is not taken');
  // What is held survives a restart: held() and restore() give the same groups.
  const again = new Holds(16);
  again.restore(holds.held(), holds.earlyReleases());
  assert.deepEqual(again.held(), holds.held());
  assert.equal(again.of[4], 1);
});

test("an epoch switch's plan: what this server gives up and takes over, per old owner, as the map diff says; a slot count change is refused", () => {
  const before = twoServers(1, 1);
  const after = twoServers(2, 3);
  const moves = diffMaps(before, after).streams[0]!.moves;
  const atBeta = planSwitch(before, before.streams[0]!, 'beta', SLOTS, after);
  const atAlpha = planSwitch(before, before.streams[0]!, 'alpha', SLOTS, after);
  const alphaToBeta = moves.find((m) => m.from === 'alpha' && m.to === 'beta')?.buckets ?? 0;
  assert.ok(alphaToBeta > 0);
  assert.equal(atAlpha.outgoing, alphaToBeta);
  assert.deepEqual([...atAlpha.incoming.keys()], []);
  assert.equal(atBeta.outgoing, 0);
  assert.equal(atBeta.incoming.get('alpha')!.length, alphaToBeta);
  for (const b of atBeta.incoming.get('alpha')!) assert.deepEqual([before.streams[0]!.owner[b], after.streams[0]!.owner[b]], [0, 1], `bucket ${b}`);
  assert.equal(atBeta.self, 1);
  assert.throws(
    () => planSwitch(before, before.streams[0]!, 'beta', SLOTS + 1, after),
    (err: unknown) => err instanceof FlotillaError && err.code === 'MAP_INVALID' && /changes its slot count on beta/.test(err.message),
  );
  assert.throws(() => planSwitch(before, before.streams[0]!, 'gamma', SLOTS, after), (err: unknown) => err instanceof FlotillaError && err.code === 'UNKNOWN_SERVER');
});
