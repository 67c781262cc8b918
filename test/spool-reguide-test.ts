/**
 * Re-guiding: the operator's reconfiguration with a spool (mode spill), across two servers (two
 * hosts in network namespaces, when the test runs as root).
 *
 *   epoch 1: alpha and beta (agents, portals, 4 recorder slots each), a sender under load
 *   pause both: records keep coming and wait in each server's spool
 *   epoch 2: alpha's weight becomes 0, so all its buckets move to beta; alpha forwards what
 *            its spool holds of them to beta, whose portal holds the buckets until alpha has
 *   resume: beta processes the forwarded records, then the newer ones, in order per key
 *
 * Checked from the per-record logs: every record processed exactly once, in order per key; after
 * the switch, alpha processed nothing of the buckets it gave up; alpha's spool ends empty.
 */
import { strict as assert } from 'node:assert';
import { writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { stringify } from 'yaml';
import { agentStatus, localAgent } from '../src/agent/client';
import { portalRequest } from '../src/portal/client';
import { Sender } from '../src/sender/sender';
import { deploy, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA, RoundLoad } from './support/flows';
import { type ServerHosts, serverHosts } from './support/netns';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, checkRecords, readRecorded, sentRounds } from './support/records';

let d: Deployment | undefined;
let hosts: ServerHosts | undefined;
after(async () => {
  await d?.stop();
  hosts?.remove();
  if (process.env.FLOTILLA_TEST_LOGS) process.stderr.write(d?.logs.join('') ?? '');
});

test('after a map change, spooled records of buckets that moved are forwarded to their new owner and lose nothing', async () => {
  const ports = await freePorts(4);
  const names = ['alpha', 'beta'];
  const h = (hosts = serverHosts(names));
  const server = (name: string, i: number, weight = 1) => ({ name, host: h.address(name), weight, ports: { orders: ports[i]! }, agent_port: ports[2 + i]! });
  const stream = { name: 'orders', key: 'key', port: ports[0]!, buckets: 64, slots: 4, schema: RECORD_SCHEMA('Order'), spool: { mode: 'spill', dir: 'spool' } };
  const v1 = { instance: 'test', epoch: 1, heartbeat_ms: 200, servers: [server('alpha', 0), server('beta', 1)], streams: [stream] };
  const v2 = { ...v1, epoch: 2, servers: [server('alpha', 0, 0), server('beta', 1)] };
  d = deploy(v1, { prefixOf: h.prefixOf });
  const dep = d;
  for (const name of ['alpha', 'beta']) {
    startAgent(dep, name);
    dep.startPortal('orders', name);
    for (let slot = 0; slot < 4; slot++) dep.startRecorder('orders', slot, { server: name });
  }
  for (const name of ['alpha', 'beta']) {
    await waitAgent(dep, name);
    await dep.waitSlotsConnected('orders', 4, name);
  }
  const stats = (name: string) => dep.stats('orders', name);
  const files = (name: string) => [0, 1, 2, 3].map((slot) => dep.outOf('orders', slot, name));
  const KEYS = 400;
  const sender = new Sender({ map: dep.mapFile, lingerMs: 1, batchRecords: 500 });
  const load = new RoundLoad(sender, 'orders', KEYS, 5);
  let alphaAtSwitch = 0;
  try {
    await waitFor('records flowing on both servers', () => readRecorded(files('alpha')).length > 0 && readRecorded(files('beta')).length > 0);
    for (const name of ['alpha', 'beta']) await portalRequest(dep.runDirOf(name), 'orders', { cmd: 'pause' });
    await waitFor('records waiting in alpha\'s spool', async () => (await stats('alpha')).spool!.records > 2 * KEYS);
    // Records alpha took into memory before the pause are still processed; spooled ones wait.
    await waitFor('alpha to finish what it took before the pause', async () => (await stats('alpha')).queuedRecords === 0);
    alphaAtSwitch = readRecorded(files('alpha')).length;

    writeFileSync(dep.mapFile, stringify({ ...dep.withKeys(v2), run_dir: dep.runDir }));
    await waitFor(
      'both agents to finish switching to epoch 2',
      async () => {
        const st = await Promise.all(['alpha', 'beta'].map((n) => agentStatus(localAgent(dep.runDirOf(n)))));
        for (const s of st) for (const x of s.epochSwitch?.streams ?? []) assert.equal(x.error, undefined, `${s.server}: ${x.error}`);
        return st.every((s) => s.epoch === 2 && s.epochSwitch?.epoch === 2 && s.epochSwitch.done);
      },
      20_000,
    );
    // The switch is done once both portals run epoch 2; the handover (forward, drain, release) follows.
    await waitFor('alpha to forward its spool and beta to release what it held', async () => {
      const a = await stats('alpha');
      const b = await agentStatus(localAgent(dep.runDirOf('beta')));
      return a.spool!.records === 0 && b.handovers.length === 0 && (await stats('beta')).holds.length === 0;
    });
    const alpha = await stats('alpha');
    assert.ok(alpha.recordsForwarded > 2 * KEYS, `alpha forwarded ${alpha.recordsForwarded} spooled records`);
    assert.equal(alpha.spool!.records, 0, 'alpha\'s spool is empty');
    assert.equal(readRecorded(files('alpha')).length, alphaAtSwitch, 'alpha processed nothing while paused');

    for (const name of ['alpha', 'beta']) await portalRequest(dep.runDirOf(name), 'orders', { cmd: 'resume' });
    const rounds = load.rounds;
    await waitFor('traffic under epoch 2', () => load.rounds > rounds + 10);
    await load.stop();
    await sender.flush();
    await waitFor('beta to process everything', () => readRecorded([...files('alpha'), ...files('beta')]).length >= KEYS * load.rounds, 30_000);
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.acked, KEYS * load.rounds, 'every record acknowledged');
  const all = [...files('alpha'), ...files('beta')];
  // One key lives on one server at a time, so per-key order is checked across both logs by time.
  const { rows } = assertExactlyOnceInOrder(dep.map, 'orders', all, sentRounds(KEYS, load.rounds), { order: 'time', message: 'exactly once, in order per key, across the move' });
  assert.equal(rows.length, KEYS * load.rounds, 'each record processed exactly once');
  assert.equal(readRecorded(files('alpha')).length, alphaAtSwitch, 'alpha processed nothing after giving up its buckets');
  const atBeta = checkRecords(dep.map, 'orders', files('beta'), sentRounds(KEYS, load.rounds));
  assert.deepEqual(atBeta.unexpected, [], 'each record at beta went to the slot that owns its key');
});
