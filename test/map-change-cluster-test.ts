/**
 * A map edit under load, across servers (four hosts in network namespaces, when the test runs as
 * root), driven by the agents watching the map file:
 *
 *   epoch 1: alpha, beta, gamma (agents, portals, 2 slow slots each)      sender --> portals
 *   epoch 2: delta joins with weight 0 (owns nothing); its agent, portal and slots start
 *   epoch 3: delta's weight becomes 1: buckets move to delta, and only those `map diff` names
 *
 * Checked from the per-record processing logs: every record processed once, in order per key;
 * a bucket that did not move never changed server; a moved bucket was finished by its old owner
 * before delta processed any of it; delta processed exactly the buckets the diff predicted.
 */
import { strict as assert } from 'node:assert';
import { writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { stringify } from 'yaml';
import { agentStatus, localAgent } from '../src/agent/client';
import { bucketOf } from '../src/map/bucket';
import { loadMap, parseMap } from '../src/map/load';
import { diffMaps } from '../src/map/diff';
import { Sender } from '../src/sender/sender';
import { deploy, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA, RoundLoad } from './support/flows';
import { type ServerHosts, serverHosts } from './support/netns';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';

const BUCKETS = 64;
let d: Deployment | undefined;
let hosts: ServerHosts | undefined;
after(async () => {
  await d?.stop();
  hosts?.remove();
  if (process.env.FLOTILLA_TEST_LOGS) process.stderr.write(d?.logs.join('') ?? '');
});

test('adding a server moves exactly the predicted buckets, one owner at a time, and loses nothing', async () => {
  const ports = await freePorts(8);
  const h = (hosts = serverHosts(['alpha', 'beta', 'gamma', 'delta']));
  const server = (name: string, i: number, weight?: number) => ({
    name,
    host: h.address(name),
    ...(weight === undefined ? {} : { weight }),
    ports: { orders: ports[i]! },
    agent_port: ports[4 + i]!,
  });
  const stream = { name: 'orders', key: 'key', port: ports[0]!, buckets: BUCKETS, slots: 2, schema: RECORD_SCHEMA('Order') };
  const three = [server('alpha', 0), server('beta', 1), server('gamma', 2)];
  const v1 = { instance: 'test', epoch: 1, heartbeat_ms: 200, servers: three, streams: [stream] };
  const v2 = { ...v1, epoch: 2, servers: [...three, server('delta', 3, 0)] };
  const v3 = { ...v1, epoch: 3, servers: [...three, server('delta', 3, 1)] };
  d = deploy(v1, { prefixOf: h.prefixOf });
  const dep = d;
  const write = (m: object) => writeFileSync(dep.mapFile, stringify({ ...dep.withKeys(m as Record<string, unknown>), run_dir: dep.runDir }));
  const start = (name: string) => {
    startAgent(dep, name);
    dep.startPortal('orders', name);
    for (let slot = 0; slot < 2; slot++) dep.startRecorder('orders', slot, { server: name, delayMs: 5 });
  };
  for (const s of ['alpha', 'beta', 'gamma']) start(s);
  for (const s of ['alpha', 'beta', 'gamma']) {
    await waitAgent(dep, s);
    await dep.waitSlotsConnected('orders', 2, s);
  }
  const epochs = async (names: string[]) => Promise.all(names.map(async (n) => (await agentStatus(localAgent(dep.runDirOf(n)))).epoch));

  const sender = new Sender({ map: dep.mapFile, lingerMs: 1 });
  const KEYS = 1000;
  const load = new RoundLoad(sender, 'orders', KEYS, 10);

  const servers = ['alpha', 'beta', 'gamma', 'delta'];
  const files = servers.flatMap((s) => [0, 1].map((slot) => dep.outOf('orders', slot, s)));
  const m2 = parseMap(stringify(v2), 'v2');
  const m3 = parseMap(stringify(v3), 'v3');
  const predicted = diffMaps(m2, m3).streams[0]!;
  assert.ok(predicted.moved > 0 && predicted.moves.every((m) => m.to === 'delta'), JSON.stringify(predicted.moves));
  try {
    await waitFor('records flowing on three servers', () => new Set(readRecorded(files).map((r) => r.pid)).size === 6);

    // An invalid edit: every agent keeps epoch 1, says why, and traffic keeps flowing.
    write({ ...v2, streams: [{ ...stream, port: 70000 }] });
    await waitFor('every agent to reject the edit', async () => {
      const st = await Promise.all(['alpha', 'beta', 'gamma'].map((n) => agentStatus(localAgent(dep.runDirOf(n)))));
      return st.every((x) => x.epoch === 1 && x.mapErrors?.problems.some((p) => p.path === 'streams[0].port') === true);
    });
    const ackedAtReject = sender.stats.acked;
    await waitFor('traffic to keep flowing after the rejected edit', () => sender.stats.acked > ackedAtReject + 5 * KEYS);

    // Epoch 2: delta joins, owning nothing.
    write(v2);
    await waitFor('every agent at epoch 2', async () => (await epochs(['alpha', 'beta', 'gamma'])).every((e) => e === 2));
    start('delta');
    await waitAgent(dep, 'delta');
    await dep.waitSlotsConnected('orders', 2, 'delta');

    // Epoch 3: delta takes its share.
    const roundsBefore = load.rounds;
    write(v3);
    await waitFor(
      'every agent to finish switching to epoch 3',
      async () => {
        const st = await Promise.all(servers.map((n) => agentStatus(localAgent(dep.runDirOf(n)))));
        for (const s of st) for (const x of s.epochSwitch?.streams ?? []) assert.equal(x.error, undefined, `${s.server}: ${x.error}`);
        return st.every((s) => s.epoch === 3 && s.epochSwitch?.epoch === 3 && s.epochSwitch.done);
      },
      20_000,
    );
    await waitFor('traffic under epoch 3', () => load.rounds > roundsBefore + 10);
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.acked, KEYS * load.rounds, 'every record acknowledged');
  assert.equal(loadMap(dep.mapFile).epoch, 3);

  // Which server processed each record: by the recorder files it came from.
  const rows = servers.flatMap((s) => readRecorded([0, 1].map((slot) => dep.outOf('orders', slot, s))).map((r) => ({ ...r, server: s })));
  assert.equal(rows.length, KEYS * load.rounds, 'each record processed once');
  assertExactlyOnceInOrder(dep.map, 'orders', files, sentRounds(KEYS, load.rounds), { order: 'time', message: 'each record once, in order per key across the servers (lost, doubled or out of order)' });

  const owner2 = (b: number) => m2.servers[m2.streams[0]!.owner[b]!]!.name;
  const owner3 = (b: number) => m3.servers[m3.streams[0]!.owner[b]!]!.name;
  const movedToDelta = new Set<number>();
  const oldLast = new Map<number, number>();
  const deltaFirst = new Map<number, number>();
  for (const r of rows) {
    const b = bucketOf(r.key, BUCKETS);
    if (owner2(b) === owner3(b)) {
      assert.equal(r.server, owner2(b), `bucket ${b} did not move, yet ${r.key} was processed on ${r.server}`);
    } else if (r.server === 'delta') {
      movedToDelta.add(b);
      deltaFirst.set(b, Math.min(deltaFirst.get(b) ?? Infinity, r.at));
    } else {
      assert.equal(r.server, owner2(b), `bucket ${b} was processed on ${r.server}, which never owned it`);
      oldLast.set(b, Math.max(oldLast.get(b) ?? 0, r.at));
    }
  }
  assert.equal(movedToDelta.size, predicted.moved, 'delta processed exactly the buckets map diff predicted');
  for (const b of movedToDelta) {
    assert.ok((oldLast.get(b) ?? 0) < deltaFirst.get(b)!, `bucket ${b}: ${owner2(b)} processed it until ${oldLast.get(b)}, delta from ${deltaFirst.get(b)}`);
  }
});
