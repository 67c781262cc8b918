/**
 * Rates guide the map: from what the portals measure (records per bucket, each slot's busy
 * time), `portalctl weights --suggest` proposes weights that move load toward the faster server
 * and lower the spread of utilization, and `portalctl buckets --hot` lists the heaviest buckets.
 *
 *   alpha: 2 slow slots (30 ms a delivery)   beta: 2 fast slots (2 ms)   equal weights, under load
 */
import { strict as assert } from 'node:assert';
import { after, test } from 'node:test';
import { stringify } from 'yaml';
import { parseMap } from '../src/map/load';
import { suggestWeights } from '../src/map/weights';
import type { LoadReport } from '../src/protocol/control';
import { Sender } from '../src/sender/sender';
import { deploy, portalctlAsync, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA, RoundLoad } from './support/flows';
import { serverHosts, type ServerHosts } from './support/netns';
import { freePorts } from './support/ports';

let d: Deployment | undefined;
let hosts: ServerHosts | undefined;
after(async () => {
  await d?.stop();
  hosts?.remove();
});

const twoServers = (ports: number[], address: (s: string) => string) => ({
  instance: 'test',
  epoch: 1,
  heartbeat_ms: 200,
  servers: ['alpha', 'beta'].map((name, i) => ({ name, host: address(name), ports: { orders: ports[i]! }, agent_port: ports[2 + i]! })),
  streams: [{ name: 'orders', key: 'key', port: ports[0]!, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order') }],
});

test('the suggestion gives weight to the server with more capacity, and predicts a lower spread', () => {
  const map = parseMap(stringify(twoServers([7001, 7002, 7003, 7004], () => '127.0.0.1')));
  const s = map.streams[0]!;
  const report = (server: string, perSlotCapacity: number): LoadReport => {
    const i = map.servers.findIndex((x) => x.name === server);
    return {
      server,
      stream: 'orders',
      epoch: 1,
      sinceMs: 10_000,
      buckets: Array.from(s.owner, (o) => (o === i ? 1000 : 0)), // 100 records/s per bucket
      slots: [0, 1].map((slot) => ({ slot, processed: 10_000, busyMs: (10_000 / perSlotCapacity) * 1000 })),
    };
  };
  const out = suggestWeights(map, [report('alpha', 500), report('beta', 1500)]);
  const [alpha, beta] = out.servers;
  assert.equal(alpha!.capacity, 1000);
  assert.equal(beta!.capacity, 3000);
  assert.deepEqual([alpha!.suggested, beta!.suggested], [0.5, 1.5], 'weights by capacity, keeping their sum');
  assert.ok(out.moved > 0 && out.servers.every((x) => x.predictedLoad >= 0));
  assert.ok(beta!.predictedLoad > beta!.load, 'load moves toward beta');
  assert.ok(out.predictedSpread < out.spread, `spread ${out.spread} -> ${out.predictedSpread}`);
});

test('weights --suggest on a running deployment moves load toward the faster server; buckets --hot lists the heaviest', async () => {
  const ports = await freePorts(4);
  hosts = serverHosts(['alpha', 'beta']);
  const h = hosts;
  d = deploy(twoServers(ports, (s) => h.address(s)), { prefixOf: h.prefixOf });
  const dep = d;
  for (const [server, delayMs] of [['alpha', 30], ['beta', 2]] as const) {
    startAgent(dep, server);
    dep.startPortal('orders', server);
    for (let slot = 0; slot < 2; slot++) dep.startRecorder('orders', slot, { server, delayMs });
  }
  for (const s of ['alpha', 'beta']) {
    await waitAgent(dep, s);
    await dep.waitSlotsConnected('orders', 2, s);
  }
  const sender = new Sender({ map: dep.mapFile, lingerMs: 1 });
  const load = new RoundLoad(sender, 'orders', 400, 2);
  try {
    await waitFor('both servers to process a few thousand records', async () => {
      const [a, b] = await Promise.all([dep.stats('orders', 'alpha'), dep.stats('orders', 'beta')]);
      return a.recordsOut > 3000 && b.recordsOut > 3000;
    });
  } finally {
    await load.stop();
    sender.close();
  }
  const r = await portalctlAsync(['weights', '--suggest', '--json', '--map', dep.mapFile]);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout) as ReturnType<typeof suggestWeights>;
  const [alpha, beta] = s.servers;
  assert.ok(beta!.capacity! > alpha!.capacity!, `beta measured faster: ${r.stdout}`);
  assert.ok(beta!.suggested > alpha!.suggested, `more weight to beta: ${r.stdout}`);
  assert.ok(beta!.predictedLoad > beta!.load, `load moves toward beta: ${r.stdout}`);
  assert.ok(s.predictedSpread < s.spread, `utilization spread falls: ${r.stdout}`);
  assert.ok(s.moved > 0);
  const human = await portalctlAsync(['weights', '--suggest', '--map', dep.mapFile]);
  assert.match(human.stdout, /^SERVER +WEIGHT +SUGGESTED/m);
  assert.match(human.stdout, /utilization spread \d+% now, \d+% with the suggested weights; \d+ buckets would move/);

  const hot = await portalctlAsync(['buckets', '--hot', '--top', '5', '--json', '--map', dep.mapFile]);
  assert.equal(hot.status, 0, hot.stderr);
  const list = JSON.parse(hot.stdout) as { stream: string; bucket: number; perSec: number; owner: string }[];
  assert.equal(list.length, 5);
  assert.ok(list.every((b, i) => b.perSec > 0 && (i === 0 || list[i - 1]!.perSec >= b.perSec)), hot.stdout);
  const map = dep.map;
  for (const b of list) assert.equal(b.owner, map.servers[map.streams[0]!.owner[b.bucket]!]!.name, `bucket ${b.bucket}'s owner`);
});
