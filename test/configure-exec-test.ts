/**
 * The management bus through portal-exec: a Python program on each slot gets a configuration as
 * one JSON line on stdin, between its records, and answers it on stdout (docs/components.md,
 * "Configuration lines").
 *
 *   portalctl configure --> agent --> portal --CONFIGURE--> portal-exec --{"configure": ..., "version": v}--> python3
 *                                          <--CONFIGURED--             <--{"configured": v[, "error": why]}--
 */
import { strict as assert } from 'node:assert';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Sender } from '../src/sender/sender';
import { deploy, DIST, type Deployment, portalctlAsync, startAgent, waitAgent } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readJsonLines, sentRounds } from './support/records';

const EXEC = join(DIST, 'portal', 'exec.js');
const PROGRAM = join(DIST, '..', 'test', 'fixtures', 'exec-configurable.py');
const SLOTS = [0, 1];

let d: Deployment;
const configsOf = (slot: number) => join(d.dir, `exec-configs-${slot}.jsonl`);
const readConfigs = (slot: number) => readJsonLines<{ version: number; config: Record<string, unknown> }>(configsOf(slot));
const portalctl = (args: string[]) => portalctlAsync([...args, '--map', d.mapFile, '--run-dir', d.runDirOf()]);

before(async () => {
  const [port, agentPort] = await freePorts(2);
  d = deploy({
    instance: 'test',
    epoch: 1,
    heartbeat_ms: 500,
    servers: [{ name: 'solo', host: '127.0.0.1', agent_port: agentPort }],
    streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: SLOTS.length, schema: RECORD_SCHEMA('Order') }],
  });
  startAgent(d);
  d.startPortal('orders');
  for (const slot of SLOTS) {
    const args = ['--map', d.mapFile, '--server', 'solo', '--stream', 'orders', '--slot', String(slot), '--run-dir', d.runDirOf()];
    d.startComponent(EXEC, [...args, '--', 'python3', PROGRAM, '--out', d.outOf('orders', slot), '--configs', configsOf(slot)]);
  }
  await waitAgent(d);
  await d.waitSlotsConnected('orders', SLOTS.length);
});

after(async () => {
  await d.stop();
  if (process.env.FLOTILLA_TEST_LOGS) process.stderr.write(d.logs.join(''));
});

test('the program gets the configuration line between its records and takes it; every record still once', async () => {
  const sender = new Sender({ map: d.mapFile });
  const sending = (async () => {
    for (let q = 0; q < 20; q++) {
      for (let k = 0; k < 50; k++) if (!sender.send('orders', { key: `k${k}`, seq: q })) await sender.writable();
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const r = await portalctl(['configure', 'orders', '--set', 'cache=false', '--set', 'chunk=64', '--set', 'label=fast lane']);
  assert.equal(r.status, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assert.match(r.stdout, /taken by slots 0 1/);
  for (const slot of SLOTS) assert.deepEqual(readConfigs(slot).map((c) => [c.version, c.config]), [[1, { cache: false, chunk: 64, label: 'fast lane' }]]);
  await sending;
  await sender.flush();
  sender.close();
  assertExactlyOnceInOrder(d.map, 'orders', SLOTS.map((s) => d.outOf('orders', s)), sentRounds(50, 20));
  const stats = await d.stats('orders');
  assert.deepEqual(stats.slots.map((s) => s.config?.running), [1, 1], 'each slot runs version 1, as its beacon says');
});

test("the program's rejection reaches the operator with its reason", async () => {
  const r = await portalctl(['configure', 'orders', '--slot', '1', '--set', 'reject=cache needs a size']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /solo: orders slot 1 \(pid \d+\) rejected version 2: cache needs a size; it runs version 1 \[CONFIG_REJECTED\]/);
  assert.equal(readConfigs(1).length, 1, 'nothing taken');
});
