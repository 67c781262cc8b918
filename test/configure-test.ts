/**
 * The management bus end to end (docs/components.md, "Configuration"): real agent, portal and
 * component processes of one server, configured while records flow.
 *
 *   portalctl configure orders --set k=v --> agent (configs.json) --> portal --CONFIGURE--> 4 components
 *                                                                  <--CONFIGURED (version, ok | reason)--
 *
 * The components (fixtures/configurable.ts) take 400 ms per delivery and the sender keeps their
 * windows full, so a configuration queued behind records would take over a second to arrive:
 * arriving within one heartbeat (1 s) shows it went beside them.
 */
import { strict as assert } from 'node:assert';
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { askAgent, localAgent } from '../src/agent/client';
import type { ConfigureReply } from '../src/protocol/configure';
import { Sender } from '../src/sender/sender';
import { deploy, DIST, type Deployment, portalctlAsync, startAgent, waitAgent, waitFor } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, checkRecords, readJsonLines, type Sent } from './support/records';
import { scrape, value } from './support/scrape';

const HEARTBEAT_MS = 1000;
const SLOTS = 4;
const DELAY_MS = 400;
const FIXTURE = join(DIST, 'test', 'fixtures', 'configurable.js');

let d: Deployment;
/** The component process of each slot now (the supervisor below replaces one that dies). */
const procs: ChildProcess[] = [];
let supervising = true;
let metricsUrl = '';
/** Stop the senders of the tests (run by `after`). */
const halts: (() => void)[] = [];

interface ConfigLine {
  pid: number;
  slot: number;
  version: number;
  config: Record<string, unknown>;
  at: number;
}

const configsOf = (slot: number) => join(d.dir, `configs-${slot}.jsonl`);
const readConfigs = (slot: number) => readJsonLines<ConfigLine>(configsOf(slot));

/** Starts slot `slot`'s component and, like systemd's Restart=always, starts it again whenever it dies. */
function supervise(slot: number): void {
  const args = ['--map', d.mapFile, '--server', 'solo', '--stream', 'orders', '--slot', String(slot), '--run-dir', d.runDirOf()];
  const p = d.startComponent(FIXTURE, [...args, '--out', d.outOf('orders', slot), '--configs', configsOf(slot), '--delay-ms', String(DELAY_MS)]);
  procs[slot] = p;
  p.on('exit', () => supervising && supervise(slot));
}

const portalctl = (args: string[]) => portalctlAsync([...args, '--map', d.mapFile, '--run-dir', d.runDirOf()]);

/** Sends records of `keys` keys (`<prefix>0`, ...) in rounds until stopped; what was sent, for the checker. */
function keepSending(sender: Sender, keys: number, prefix: string): { sent: Sent; stop: () => Promise<void> } {
  const sent: Sent = new Map();
  let running = true;
  // A test that fails midway leaves this to `after`, which must not wait for it.
  halts.push(() => {
    running = false;
    sender.close();
  });
  const loop = (async () => {
    for (let round = 0; running; round++) {
      for (let k = 0; k < keys && running; k++) {
        if (!sender.send('orders', { key: `${prefix}${k}`, seq: round })) await sender.writable();
        sent.set(`${prefix}${k}`, round + 1);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    sent,
    stop: async () => {
      running = false;
      await loop;
      await sender.flush();
    },
  };
}

before(async () => {
  const [port, agentPort, httpPort] = await freePorts(3);
  metricsUrl = `http://127.0.0.1:${httpPort}/metrics`;
  d = deploy({
    instance: 'test',
    epoch: 1,
    heartbeat_ms: HEARTBEAT_MS,
    servers: [{ name: 'solo', host: '127.0.0.1', agent_port: agentPort, http_port: httpPort }],
    streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: SLOTS, schema: RECORD_SCHEMA('Order') }],
  });
  startAgent(d);
  d.startPortal('orders');
  for (let s = 0; s < SLOTS; s++) supervise(s);
  await waitAgent(d);
  await d.waitSlotsConnected('orders', SLOTS);
});

after(async () => {
  for (const halt of halts) halt();
  supervising = false;
  await d.stop();
  if (process.env.FLOTILLA_TEST_LOGS) process.stderr.write(d.logs.join(''));
});

test('a configuration reaches every live component within one heartbeat, beside the records, and every record is still delivered once', async () => {
  const sender = new Sender({ map: d.mapFile });
  const flow = keepSending(sender, 40, 'a');
  // Every slot's window full (records queued in the portal behind it): 4 deliveries sent to each
  // component, so a CONFIGURE behind them would wait for 3 x 400 ms at least.
  await waitFor('every slot to have records waiting behind a full window', async () => (await d.stats('orders')).slots.every((s) => s.queued > 0), 20_000);
  const t0 = Date.now();
  const reply = (await askAgent(localAgent(d.runDirOf()), { cmd: 'configure', stream: 'orders', config: { chunk: 64, mode: 'fast' }, merge: true }, 15_000)) as ConfigureReply;
  assert.equal(reply.ok, true, JSON.stringify(reply));
  assert.deepEqual(reply.slots.map((s) => s.outcome), ['taken', 'taken', 'taken', 'taken']);
  const version = reply.version;
  for (let s = 0; s < SLOTS; s++) {
    const got = readConfigs(s).find((c) => c.version === version);
    assert.ok(got, `slot ${s} recorded version ${version}`);
    assert.deepEqual(got.config, { chunk: 64, mode: 'fast' });
    // The deadline is the heartbeat; a CONFIGURE queued behind the slot's deliveries would take 3 x 400 ms and more.
    assert.ok(got.at - t0 <= HEARTBEAT_MS, `slot ${s} took version ${version} ${got.at - t0} ms after the request; the limit is one heartbeat (${HEARTBEAT_MS} ms)`);
  }
  // The beacons carry the version each component runs, and status shows it.
  await waitFor('every slot to report the version in its beacon', async () => (await d.stats('orders')).slots.every((s) => s.config?.running === version));
  await flow.stop();
  sender.close();
  assertExactlyOnceInOrder(d.map, 'orders', Array.from({ length: SLOTS }, (_, s) => d.outOf('orders', s)), flow.sent, { only: (k) => k.startsWith('a') });
  const status = await portalctl(['status']);
  assert.match(status.stdout, new RegExp(`configuration orders: version ${version}; slots 0 1 2 3 run their version`));
  const m = await scrape(metricsUrl);
  for (let s = 0; s < SLOTS; s++) assert.equal(value(m, 'flotilla_slot_config_version', { stream: 'orders', slot: s }), version);
});

test('a component killed with SIGKILL and restarted gets the current version when it registers, before its first record', async () => {
  const set = await portalctl(['configure', 'orders', '--set', 'stage=before-restart']);
  assert.equal(set.status, 0, set.stderr);
  const version = Number(/configuration version (\d+)/.exec(set.stdout)![1]);
  const sender = new Sender({ map: d.mapFile });
  const flow = keepSending(sender, 40, 'b');
  const old = procs[1]!;
  old.kill('SIGKILL');
  await waitFor('slot 1 to be restarted', () => procs[1] !== old && procs[1]!.pid !== undefined);
  const pid = procs[1]!.pid!;
  await waitFor(`the new component (pid ${pid}) to take version ${version}`, () => readConfigs(1).some((c) => c.pid === pid && c.version === version), 10 * HEARTBEAT_MS);
  const got = readConfigs(1).find((c) => c.pid === pid)!;
  assert.deepEqual(got.config, { chunk: 64, mode: 'fast', stage: 'before-restart' }, '--set merges into the configuration in force');
  await waitFor(`the new component (pid ${pid}) to process records`, () => readFileSync(d.outOf('orders', 1), 'utf8').includes(`\t${pid}\t`), 20_000);
  const first = readFileSync(d.outOf('orders', 1), 'utf8').split('\n').find((l) => l.split('\t')[3] === String(pid))!;
  assert.ok(Number(first.split('\t')[4]) >= got.at, 'the configuration was taken before the first record was processed');
  await flow.stop();
  sender.close();
  // A kill -9 may process the dead component's last deliveries again (at least once); nothing is lost or reordered.
  const c = checkRecords(d.map, 'orders', Array.from({ length: SLOTS }, (_, s) => d.outOf('orders', s)), flow.sent, { only: (k) => k.startsWith('b') });
  assert.deepEqual([c.missing, c.unexpected, c.outOfOrder], [[], [], []]);
});

test('a rejected configuration is reported with its reason and a non-zero exit; the components keep the version they ran', async () => {
  const before = (await d.stats('orders')).slots.map((s) => s.config?.running);
  const r = await portalctl(['configure', 'orders', '--set', 'reject=chunk must be a power of two', '--timeout', '5']);
  assert.equal(r.status, 1, `exit status; stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  for (let s = 0; s < SLOTS; s++) assert.match(r.stderr, new RegExp(`solo: orders slot ${s} \\(pid \\d+\\) rejected version \\d+: chunk must be a power of two; it runs version ${before[s]} \\[CONFIG_REJECTED\\]`));
  const thrown = await portalctl(['configure', 'orders', '--slot', '2', '--file', writeJson({ throw: 'no cache here' }), '--json']);
  assert.equal(thrown.status, 1);
  const [reply] = JSON.parse(thrown.stdout) as ConfigureReply[];
  assert.deepEqual(reply!.slots.map((s) => [s.slot, s.outcome, s.reason]), [[2, 'rejected', 'no cache here']]);
  assert.deepEqual((await d.stats('orders')).slots.map((s) => s.config?.running), before);
  // Status is read from the beacons: the rejection shows within a heartbeat.
  let shown = '';
  await waitFor(
    () => `status to show slot 2's rejection: ${shown}`,
    async () => /slot 2 runs v\d+ \(rejected v\d+: no cache here\)/.test((shown = (await portalctl(['status'])).stdout)),
  );
  // The rejected version is the one kept (the operator's last word) until a good one replaces it.
  const fixed = await portalctl(['configure', 'orders', '--file', writeJson({ chunk: 64 })]);
  assert.equal(fixed.status, 0, fixed.stderr);
  assert.match(fixed.stdout, /taken by slots 0 1 2 3/);
});

test('--slot reaches only that slot', async () => {
  const counts = Array.from({ length: SLOTS }, (_, s) => readConfigs(s).length);
  const r = await portalctl(['configure', 'orders', '--slot', '3', '--set', 'only=3']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /taken by slot 3\n/);
  const version = Number(/configuration version (\d+)/.exec(r.stdout)![1]);
  assert.equal(readConfigs(3).at(-1)!.version, version);
  assert.equal(readConfigs(3).at(-1)!.config.only, 3);
  // Then one for the whole stream: slots 0-2 go straight from what they had to it, never seeing the slot's.
  const all = await portalctl(['configure', 'orders', '--file', writeJson({ mode: 'slow' })]);
  assert.equal(all.status, 0, all.stderr);
  for (let s = 0; s < 3; s++) {
    const seen = readConfigs(s).slice(counts[s]).map((c) => c.version);
    assert.ok(!seen.includes(version), `slot ${s} never got slot 3's version ${version} (saw ${seen.join(', ')})`);
    assert.deepEqual(readConfigs(s).at(-1)!.config, { mode: 'slow' }, '--file replaces the configuration');
  }
});

test('the agent keeps the configuration: agent and portal killed and restarted, a new component still gets it', async () => {
  const agent = d.procs.find((p) => p.spawnargs.some((a) => a.endsWith(join('agent', 'main.js'))))!;
  const portal = d.procs.find((p) => p.spawnargs.some((a) => a.endsWith(join('portal', 'main.js'))))!;
  const kept = JSON.parse(readFileSync(join(d.runDirOf(), 'configs.json'), 'utf8')) as { streams: { stream: string; version: number }[] };
  const version = kept.streams.find((s) => s.stream === 'orders')!.version;
  agent.kill('SIGKILL');
  portal.kill('SIGKILL');
  await waitFor('agent and portal to exit', () => agent.exitCode !== null || agent.signalCode !== null);
  await waitFor('portal to exit', () => portal.exitCode !== null || portal.signalCode !== null);
  startAgent(d);
  d.startPortal('orders');
  await waitAgent(d);
  await d.waitSlotsConnected('orders', SLOTS);
  const old = procs[0]!;
  old.kill('SIGKILL');
  await waitFor('slot 0 to be restarted', () => procs[0] !== old && procs[0]!.pid !== undefined);
  const pid = procs[0]!.pid!;
  // The agent gives the restarted portal the version at its first beacons; the portal gives it to the new component.
  await waitFor(`the new component of slot 0 (pid ${pid}) to take version ${version}`, () => readConfigs(0).some((c) => c.pid === pid && c.version === version), 10 * HEARTBEAT_MS);
  const reply = await askAgent(localAgent(d.runDirOf()), { cmd: 'configs' });
  assert.equal(reply.streams.find((s) => s.stream === 'orders')?.version, version);
});

let files = 0;
/** Writes `v` to a JSON file in the test's directory; its path. */
function writeJson(v: unknown): string {
  const path = join(d.dir, `conf-${++files}.json`);
  writeFileSync(path, JSON.stringify(v));
  return path;
}
