/**
 * The agent's judgements, without processes around them: a portal's state from its last beacon
 * and the time, who keeps a pause from idle, and which map edits the agent takes.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { describeNotIdle, notIdle } from '../agent/status-view';
import { streamStatus } from '../src/agent/beacons';
import type { AgentStatus } from '../src/protocol/control';
import { MapKeeper } from '../src/map/keeper';
import type { PortalBeacon, SlotBeacon } from '../src/protocol/beacons';
import { RECORD_SCHEMA } from './support/flows';
import { withPlainTcp } from './support/deploy';

const HB = 200;

function slot(n: number, state: SlotBeacon['state'], inflight = 0, queued = 0): SlotBeacon {
  return { slot: n, pid: 100 + n, state, queued, inflight, received: 0, silentMs: 10, processed: 0, serviceMs: 0, routed: 0, serviceCounts: [], serviceMsSum: 0, stuckMs: 0 };
}

function beacon(over: Partial<PortalBeacon> = {}): PortalBeacon {
  return {
    type: 'portal',
    server: 'alpha',
    stream: 'orders',
    pid: 42,
    port: 7401,
    epoch: 1,
    digest: 'a'.repeat(64),
    holds: [],
    paused: false,
    received: 0,
    recordsIn: 0,
    recordsOut: 0,
    inflight: 0,
    queued: 0,
    idle: true,
    rates: { inPerSec: 0, outPerSec: 0 },
    errors: {},
    flowRefusals: {},
    slots: [slot(0, 'idle'), slot(1, 'idle')],
    at: 0,
    ...over,
  };
}

test('a portal is missing until its first beacon, dead after 3 silent heartbeats, else running, idle or paused', () => {
  assert.equal(streamStatus('orders', undefined, 1000, HB).state, 'missing');
  const at = (b: PortalBeacon, age: number) => streamStatus('orders', { beacon: b, receivedAt: 1000 }, 1000 + age, HB);
  assert.equal(at(beacon(), 3 * HB).state, 'idle');
  const dead = at(beacon(), 3 * HB + 1);
  assert.equal(dead.state, 'dead');
  assert.equal(dead.idle, false, 'a dead portal is never idle, whatever it said last');
  assert.equal(at(beacon({ idle: false, received: 10 }), 0).state, 'running');
  const paused = at(beacon({ paused: true, idle: false, inflight: 3 }), 0);
  assert.deepEqual([paused.state, paused.paused, paused.idle], ['paused', true, false]);
});

test('notIdle names the slots that hold records, missing and dead portals, and portals not paused yet', () => {
  const status = (streams: AgentStatus['streams']): AgentStatus => ({
    server: 'alpha',
    pid: 1,
    mapFile: 'm.yaml',
    instance: 'test',
    epoch: 1,
    mapEpoch: 1,
    digest: 'a'.repeat(64),
    heartbeatMs: HB,
    runDir: '/run',
    uptimeMs: 0,
    mapErrors: null,
    epochSwitch: null,
    handovers: [],
    idle: false,
    streams,
  });
  const s = (b: PortalBeacon | null, age = 0) => streamStatus(b?.stream ?? 'audits', b ? { beacon: b, receivedAt: 0 } : undefined, age, HB);
  const busy = beacon({ paused: true, idle: false, inflight: 5, slots: [slot(0, 'idle'), slot(1, 'dead', 5), slot(2, 'missing')] });
  const list = notIdle(status([s(busy), s(null), s(beacon({ stream: 'views' })), s(beacon({ stream: 'logs', paused: true }), 5 * HB)]));
  assert.deepEqual(list.map(describeNotIdle), [
    'alpha/orders slot 1 (pid 101) dead, inflight 5',
    'alpha/audits portal missing',
    'alpha/views portal (pid 42) not paused',
    'alpha/logs portal (pid 42) dead',
  ]);
  assert.deepEqual(notIdle(status([s(busy), s(beacon({ stream: 'views' }))]), ['views']).map((n) => n.state), ['not paused']);
  assert.deepEqual(notIdle(status([s(beacon({ paused: true }))])), [], 'paused and idle: nothing to wait for');
});

test('the agent takes a valid edit that raises the epoch, and rejects what would break the map in force', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flt-keeper-'));
  const file = join(dir, 'map.yaml');
  const map = (epoch: number, edit: (m: Record<string, any>) => void = () => undefined) => {
    const m: Record<string, any> = {
      instance: 'test',
      epoch,
      servers: [{ name: 'alpha', host: '10.0.0.1' }, { name: 'beta', host: '10.0.0.2' }],
      streams: [{ name: 'orders', key: 'key', port: 7401, buckets: 64, schema: RECORD_SCHEMA('Order') }],
    };
    edit(m);
    writeFileSync(file, stringify(withPlainTcp(m)));
  };
  map(1);
  const keeper = new MapKeeper(file, 'alpha', 'agent');
  const problems = () => keeper.rejection?.problems.map((p) => `${p.path}: ${p.message}`) ?? [];

  writeFileSync(file, '# a comment only\n' + readFileSync(file, 'utf8'));
  assert.deepEqual(keeper.reload(), { type: 'unchanged', epoch: 1 }, 'a comment is no change');

  map(2, (m) => (m.streams[0].buckets = 128));
  assert.equal(keeper.reload().type, 'rejected');
  assert.deepEqual(problems(), ["streams[0].buckets: bucket count changed from 64 to 128; a stream's bucket count never changes once it exists"]);

  map(2, (m) => m.servers.shift());
  assert.equal(keeper.reload().type, 'rejected');
  assert.match(problems()[0]!, /^servers: no server named "alpha" \(the server this agent runs on\); servers: beta$/);

  map(0);
  assert.equal(keeper.reload().type, 'rejected');
  assert.match(problems()[0]!, /^epoch: must be >= 1/);

  map(2, (m) => (m.servers[1].weight = 3));
  assert.deepEqual(keeper.reload(), { type: 'applied', from: 1, epoch: 2 });
  assert.equal(keeper.rejection, null);
  assert.equal(keeper.map.servers[1]!.weight, 3);

  map(1);
  assert.equal(keeper.reload().type, 'rejected');
  assert.match(problems()[0]!, /^epoch: is 1, lower than the epoch in force \(2\)/);
  assert.equal(keeper.map.epoch, 2);
});
