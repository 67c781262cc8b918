/**
 * Edits of the map checked against the running system, and an edit written while the agent
 * starts (one server, real agent, portal and files):
 *
 *   - an edit that removes a stream whose spool still holds acknowledged records is refused,
 *     naming how many and what to do; once the spool is empty the same edit is taken;
 *   - an edit written in the moments the agent starts is taken (the file is read again once it
 *     is watched), every time.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { stringify } from 'yaml';
import { Agent } from '../src/agent/agent';
import { agentStatus, localAgent } from '../src/agent/client';
import { createLogger } from '../src/log';
import { Sender } from '../src/sender/sender';
import { portalctl } from './support/cli';
import { deploy, startAgent, waitAgent, stopped, waitFor, type Deployment, withPlainTcp } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';

let d: Deployment | undefined;
after(async () => {
  await d?.stop();
});


test('removing a stream that holds spooled records is refused with their count; taken once they are delivered', async () => {
  const [po, pa] = (await freePorts(2)) as [number, number];
  const spoolDir = mkdtempSync(join(tmpdir(), 'flt-spool-'));
  const orders = { name: 'orders', key: 'key', port: po, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order'), spool: { mode: 'always', dir: spoolDir } };
  const audits = { name: 'audits', key: 'key', port: pa, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Audit'), spool: { dir: spoolDir } };
  const mapAt = (epoch: number, streams: object[]) => ({ instance: 'test', epoch, heartbeat_ms: 200, servers: [{ name: 'solo', host: '127.0.0.1' }], streams });
  const dep = (d = deploy(mapAt(1, [orders, audits])));
  try {
    await removeWithSpooled(dep, mapAt, orders, audits);
  } finally {
    await dep.stop();
    d = undefined;
  }
});

async function removeWithSpooled(dep: Deployment, mapAt: (epoch: number, streams: object[]) => object, orders: object, audits: object): Promise<void> {
  const write = (m: object) => writeFileSync(dep.mapFile, stringify(withPlainTcp({ ...m, run_dir: dep.runDir } as Record<string, unknown>)));
  startAgent(dep);
  dep.startPortal('orders');
  await waitAgent(dep);
  await waitFor('the orders portal', async () => (await dep.stats('orders').catch(() => null)) !== null);

  // No component runs: the records wait in the spool, acknowledged.
  const sender = new Sender({ map: dep.mapFile, lingerMs: 1 });
  for (let i = 0; i < 150; i++) sender.send('orders', { key: `k${i}`, seq: 0 });
  await sender.flush();
  sender.close();
  assert.equal(sender.stats.acked, 150);
  const status = () => agentStatus(localAgent(dep.runDirOf()));
  let spool: unknown;
  await waitFor(
    () => `the beacon to show 150 spooled records: ${JSON.stringify(spool)}`,
    async () => (spool = (await status()).streams.find((s) => s.stream === 'orders')?.beacon?.spool) !== undefined && (spool as { records: number }).records === 150,
  );

  write(mapAt(2, [audits]));
  const r = portalctl('reload', '--map', dep.mapFile, '--run-dir', dep.runDirOf());
  assert.equal(r.status, 1, r.stdout);
  assert.match(r.stderr, /streams: stream orders is removed but 150 acknowledged records wait in its spool \(150 on solo\); resume it and let its slots take them/);
  const st = await status();
  assert.equal(st.epoch, 1);
  assert.equal(st.mapErrors?.code, 'MAP_INVALID');

  // The operator puts the file back, the components come and take the records, and the same
  // edit is then taken.
  write(mapAt(1, [orders, audits]));
  await waitFor('the file put back to clear the rejection', async () => (await status()).mapErrors === null);
  for (let slot = 0; slot < 2; slot++) dep.startRecorder('orders', slot);
  await waitFor('the spool to empty', async () => (await status()).streams.find((s) => s.stream === 'orders')?.beacon?.spool?.records === 0);
  write(mapAt(2, [audits]));
  await waitFor('the edit to be taken', async () => {
    portalctl('reload', '--map', dep.mapFile, '--run-dir', dep.runDirOf());
    return (await status()).mapEpoch === 2;
  });
}

test('an edit written between reading the map and watching it is taken at start', async () => {
  const [port] = (await freePorts(1)) as [number];
  const mapAt = (epoch: number) => ({ instance: 'test', epoch, servers: [{ name: 'solo', host: '127.0.0.1', weight: epoch }], streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order') }] });
  const dir = mkdtempSync(join(tmpdir(), 'flt-start-'));
  const file = join(dir, 'map.yaml');
  writeFileSync(file, stringify(withPlainTcp({ ...mapAt(1), run_dir: join(dir, 'run') })));
  const agent = new Agent({ mapFile: file, server: 'solo', log: createLogger('agent', { server: 'solo' }), watchMs: 50 });
  writeFileSync(file, stringify(withPlainTcp({ ...mapAt(2), run_dir: join(dir, 'run') }))); // read in the constructor, not yet watched
  try {
    await agent.start();
    assert.equal(agent.map.epoch, 2, 'the edit made before the watch began is taken');
  } finally {
    await agent.stop();
  }
});

test('an edit written while the agent starts is taken, every time', async () => {
  const [port] = (await freePorts(1)) as [number];
  const mapAt = (epoch: number) => ({ instance: 'test', epoch, servers: [{ name: 'solo', host: '127.0.0.1', weight: epoch }], streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order') }] });
  const dep = (d = deploy(mapAt(1)));
  const write = (epoch: number) => writeFileSync(dep.mapFile, stringify(withPlainTcp({ ...mapAt(epoch), run_dir: dep.runDir })));
  let epoch = 1;
  for (const delayMs of [100, 200, 250, 300, 350, 400, 500]) {
    const agent = startAgent(dep);
    try {
      await new Promise((r) => setTimeout(r, delayMs)); // the edit lands somewhere in the agent's start
      write(++epoch);
      await waitAgent(dep);
      await waitFor(`the agent to take epoch ${epoch} written ${delayMs} ms after its start`, async () => (await agentStatus(localAgent(dep.runDirOf()))).mapEpoch === epoch, 10_000);
    } finally {
      agent.kill('SIGTERM');
      await stopped(agent);
    }
  }
});

test('an agent and a portal started while the map file is being written wait for it whole', async () => {
  const [port] = (await freePorts(1)) as [number];
  const dep = (d = deploy({ instance: 'test', epoch: 3, servers: [{ name: 'solo', host: '127.0.0.1' }], streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order') }] }));
  const whole = readFileSync(dep.mapFile, 'utf8');
  const waiting = () => dep.logs.join('').split('does not read as a map yet').length - 1;
  try {
    // An editor empties the file first, then writes it: each daemon, started then, finds it
    // empty, then cut short, and waits (2 s at most) for all of it. One daemon at a time, each
    // within its own wait.
    for (const [what, start, answers] of [
      ['the agent', () => startAgent(dep), async () => (await agentStatus(localAgent(dep.runDirOf()))).mapEpoch === 3],
      ['the portal', () => dep.startPortal('orders'), async () => (await dep.stats('orders')).epoch === 3],
    ] as const) {
      const before = waiting();
      writeFileSync(dep.mapFile, '');
      start();
      await waitFor(`${what} to find the file empty`, () => waiting() > before, 20_000);
      writeFileSync(dep.mapFile, whole.slice(0, whole.length >> 1));
      writeFileSync(dep.mapFile, whole);
      await waitFor(`${what} to answer at epoch 3`, () => answers().catch(() => false));
    }
  } finally {
    await dep.stop();
    d = undefined;
  }
});
