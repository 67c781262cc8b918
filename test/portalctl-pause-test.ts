/**
 * `portalctl pause --wait` and `resume` under load, end to end through the agent:
 *
 *   portalctl --cluster (tcp agent_port)--> agent --pause (ipc)--> orders portal --> 3 recorder slots
 *   Sender --batches--> orders portal (PAUSED: the sender holds them until resume)
 *
 * pause --wait returns once everything is idle, nothing is processed while paused, and after
 * resume every record is processed exactly once, in order per key. A component stopped with
 * SIGSTOP is named, as dead and holding records, by status and by a pause --wait that times out.
 */
import { strict as assert } from 'node:assert';
import { HEALTH_EXIT } from '../src/agent/problems';
import type { ChildProcess } from 'node:child_process';
import { after, before, test } from 'node:test';
import type { AgentStatus } from '../src/protocol/control';
import { agentStatus, localAgent } from '../src/agent/client';
import { bucketOf, slotOf } from '../src/map/bucket';
import { Sender } from '../src/sender/sender';
import { deploy, portalctlAsync, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA, RoundLoad } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';

const HEARTBEAT_MS = 200;
const SLOTS = 3;
let d: Deployment;
const recorders: ChildProcess[] = [];
const files = () => Array.from({ length: SLOTS }, (_, s) => d.outOf('orders', s));
const processed = () => readRecorded(files()).length;
const status = () => agentStatus(localAgent(d.runDirOf()));
const local = (...args: string[]) => portalctlAsync([...args, '--map', d.mapFile, '--run-dir', d.runDirOf()]);
const cluster = (...args: string[]) => portalctlAsync([...args, '--cluster', '--map', d.mapFile]);

before(async () => {
  const [port, agentPort] = await freePorts(2);
  d = deploy({
    instance: 'test',
    epoch: 1,
    heartbeat_ms: HEARTBEAT_MS,
    servers: [{ name: 'solo', host: '127.0.0.1', agent_port: agentPort }],
    streams: [{ name: 'orders', key: 'key', port, buckets: 256, slots: SLOTS, schema: RECORD_SCHEMA('Order') }],
  });
  startAgent(d);
  d.startPortal('orders');
  for (let slot = 0; slot < SLOTS; slot++) recorders.push(d.startRecorder('orders', slot));
  await waitAgent(d);
  await d.waitSlotsConnected('orders', SLOTS);
});

after(async () => {
  for (const r of recorders) r.kill('SIGCONT');
  await d?.stop();
});

test('pause --wait under load returns once idle, nothing is processed while paused, resume loses nothing', async () => {
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const KEYS = 150;
  const load = new RoundLoad(sender, 'orders', KEYS, 2);
  try {
    await waitFor('records flowing', () => processed() > 2000);
    const pause = await cluster('pause', '--wait', '--timeout', '10');
    const returnedAt = Date.now();
    assert.equal(pause.status, 0, pause.stderr);
    assert.match(pause.stdout, /^solo: paused orders$/m);
    assert.match(pause.stdout, /^idle after \d+\.\d s: every process of solo is paused and idle$/m);
    // Processing stopped within one heartbeat interval of the portal pausing, and pause --wait
    // returned within two intervals of the last record processed (plus the exit of the
    // portalctl process, which the margin covers).
    const lastProcessed = Math.max(...readRecorded(files()).map((r) => r.at));
    await waitFor('the portal to log its pause', () => d.logs.join('').includes('portal orders: paused'));
    const pausedLine = d.logs.join('').split('\n').find((l) => l.includes('portal orders: paused'))!;
    const pausedAt = (JSON.parse(pausedLine) as { time: number }).time;
    assert.ok(lastProcessed - pausedAt < HEARTBEAT_MS, `records processed until ${lastProcessed - pausedAt} ms after the pause`);
    assert.ok(returnedAt - lastProcessed < 2 * HEARTBEAT_MS + 250, `pause --wait returned ${returnedAt - lastProcessed} ms after the last record`);

    const atIdle = processed();
    await new Promise((r) => setTimeout(r, 2 * HEARTBEAT_MS)); // an interval to observe, not a wait for a condition
    assert.equal(processed(), atIdle, 'no record processed while paused');
    assert.ok(sender.pending > 0, 'the sender holds records');
    const st = JSON.parse((await local('status', '--json')).stdout) as AgentStatus;
    assert.equal(st.streams[0]!.state, 'paused');
    assert.equal(st.idle, true);

    const resume = await cluster('resume');
    assert.equal(resume.status, 0, resume.stderr);
    assert.equal(resume.stdout, 'solo: resumed orders\n');
    await waitFor('records flowing again', () => processed() > atIdle);
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.acked, load.rounds * KEYS);
  assertExactlyOnceInOrder(d.map, 'orders', files(), sentRounds(KEYS, load.rounds));
});

test('a component stopped with SIGSTOP is reported dead by name, and keeps pause --wait from idle', async () => {
  const stream = d.map.streams[0]!;
  const STOPPED = 1;
  const stopped = recorders[STOPPED]!;
  const before = processed();
  stopped.kill('SIGSTOP');
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const KEYS = 60;
  try {
    for (let k = 0; k < KEYS; k++) sender.send('orders', { key: `s${k}`, seq: 0 });
    const heldByStopped = Array.from({ length: KEYS }, (_, k) => `s${k}`).filter((key) => slotOf(bucketOf(key, stream.buckets), SLOTS) === STOPPED).length;
    assert.ok(heldByStopped > 0);
    await waitFor('the other slots to process their records', () => processed() === before + KEYS - heldByStopped);
    await waitFor('the portal to report the stopped slot dead', async () => (await status()).streams[0]!.beacon!.slots[STOPPED]!.state === 'dead');

    const st = await local('status');
    assert.equal(st.status, HEALTH_EXIT.dead, `a dead slot fails the health check; ${st.stderr}`);
    assert.match(st.stdout, /orders\s+running\s+no\s+.*0:idle 1:dead 2:idle$/m);

    const pause = await local('pause', '--wait', '--timeout', '1');
    assert.equal(pause.status, 1, pause.stdout);
    // Not a terminal: a progress line when the set of processes not idle changes.
    assert.match(pause.stderr, new RegExp(`^not idle \\(\\d+\\.\\d s\\): solo/orders slot ${STOPPED} \\(pid ${stopped.pid}\\) dead`, 'm'));
    assert.match(pause.stderr, new RegExp(`error: not idle after 1 s: solo/orders slot ${STOPPED} \\(pid ${stopped.pid}\\) dead, inflight \\d+(, queued \\d+)? \\[NOT_IDLE\\]`));

    stopped.kill('SIGCONT');
    const resume = await local('resume');
    assert.equal(resume.status, 0, resume.stderr);
    await sender.flush();
  } finally {
    stopped.kill('SIGCONT');
    sender.close();
  }
  const seen = readRecorded(files()).filter((r) => r.key.startsWith('s'));
  assert.equal(seen.length, KEYS, 'every record processed once after SIGCONT');
  assert.equal(new Set(seen.map((r) => r.key)).size, KEYS);
  assertExactlyOnceInOrder(d.map, 'orders', files(), sentRounds(KEYS, 1, 's'), { only: (k) => /^s\d+$/.test(k) });
});
