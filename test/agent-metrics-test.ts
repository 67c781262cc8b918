/**
 * The agent's HTTP side against a real deployment: Prometheus metrics checked against the
 * traffic the test sent, and the health check (`portalctl status` exit codes, `/healthz`) as
 * the deployment goes missing, dead, refused and healthy again.
 *
 *   Sender --2000 records--> orders portal --> 2 recorder slots
 *   Sender --300 records---> events portal (spool: spill) --> slot 0: no component yet (spooled)
 *   scrape GET /metrics, /healthz <--http-- agent <--beacons (ipc)-- both portals
 */
import { strict as assert } from 'node:assert';
import { type ChildProcess, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { readFileSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { AgentStatus } from '../src/protocol/control';
import { HEALTH_EXIT } from '../src/agent/problems';
import { Sender } from '../src/sender/sender';
import { SERVICE_MS_BOUNDS } from '../src/protocol/beacons';
import { deploy, DIST, portalctlAsync, waitAgent, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';
import { readRecorded } from './support/records';
import { get, samples, scrape, sum, value, type Sample } from './support/scrape';

const HEARTBEAT_MS = 200;
const ORDERS = 2000;
const EVENTS = 300;
let d: Deployment;
let base: string;
let sender: Sender;
const recorders: ChildProcess[] = [];
const metrics = () => scrape(`${base}metrics`);
const status = (...extra: string[]) => portalctlAsync(['status', '--map', d.mapFile, '--run-dir', d.runDirOf(), ...extra]);
const recorded = (slot: number) => readRecorded([d.outOf('orders', slot)]).length;

/** Scrapes until `check` holds of a scrape; fails naming what the last scrape said. */
async function scrapeUntil(what: string, check: (m: Sample[]) => boolean): Promise<Sample[]> {
  let last: Sample[] = [];
  await waitFor(
    () => `${what}; last scrape: ${last.filter((s) => s.name.startsWith('flotilla_portal') || s.name.startsWith('flotilla_spool')).map((s) => `${s.name}${JSON.stringify(s.labels)}=${s.value}`).join(' ')}`,
    async () => check((last = await metrics())),
  );
  return last;
}

before(async () => {
  const [orders, events, agentPort, httpPort] = await freePorts(4);
  // The events spool's floor is two thirds of the free space here: the spool still takes
  // records, and the host sampler must warn that its disk is near the floor.
  const fs = statfsSync(tmpdir());
  const floor = Math.floor((fs.bavail * fs.bsize) / 1.5);
  d = deploy({
    // An instance of its own: its default spool directory (/var/lib/flotilla/<instance>) is no other test's.
    instance: 'metrics',
    epoch: 1,
    heartbeat_ms: HEARTBEAT_MS,
    servers: [{ name: 'solo', host: '127.0.0.1', agent_port: agentPort, http_port: httpPort }],
    streams: [
      { name: 'orders', key: 'key', port: orders, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order') },
      { name: 'events', key: 'key', port: events, buckets: 16, slots: 1, schema: RECORD_SCHEMA('Event'), spool: { mode: 'spill', dir: 'spool', min_free_bytes: floor } },
    ],
  });
  base = `http://127.0.0.1:${httpPort}/`;
  d.startComponent(join(DIST, 'agent', 'main.js'), ['--map', d.mapFile, '--server', 'solo', '--run-dir', d.runDirOf(), '--host-sample-ms', '200']);
  d.startPortal('orders');
  d.startPortal('events');
  for (let slot = 0; slot < 2; slot++) recorders.push(d.startRecorder('orders', slot));
  await waitAgent(d);
  await d.waitSlotsConnected('orders', 2);
  sender = new Sender({ map: d.mapFile, lingerMs: 1 });
});

after(async () => {
  await sender?.close();
  for (const r of recorders) r.kill('SIGCONT');
  await d?.stop();
});

test('/metrics counts the records sent, per stream and per slot, with processing times, spool and host', async () => {
  for (let i = 0; i < ORDERS; i++) sender.send('orders', { key: `k${i}`, seq: 0 });
  for (let i = 0; i < EVENTS; i++) sender.send('events', { key: `e${i}`, seq: 0 });
  await sender.flush();
  const m = await scrapeUntil(`orders to count ${ORDERS} records in and out, and ${EVENTS} events spooled`, (m) =>
    samples(m, 'flotilla_portal_records_out_total', { stream: 'orders' })[0]?.value === ORDERS &&
    samples(m, 'flotilla_spool_records', { stream: 'events' })[0]?.value === EVENTS &&
    samples(m, 'flotilla_portal_state', { stream: 'orders', state: 'idle' })[0]?.value === 1 &&
    samples(m, 'flotilla_host_warnings', { code: 'SPOOL_DISK_LOW' })[0]?.value === 1 &&
    samples(m, 'flotilla_host_process_rss_bytes', { role: 'portal' }).length === 2, // sampled once both portals beaconed
  );
  const orders = { stream: 'orders' };
  assert.equal(value(m, 'flotilla_portal_records_in_total', orders), ORDERS);
  assert.equal(value(m, 'flotilla_portal_records_in_total', { stream: 'events' }), EVENTS);
  assert.equal(value(m, 'flotilla_portal_records_out_total', { stream: 'events' }), 0, 'no component serves events yet');
  for (const slot of [0, 1]) {
    const out = value(m, 'flotilla_slot_records_out_total', { stream: 'orders', slot });
    assert.equal(out, recorded(slot), `slot ${slot}: the metric says ${out} records done, its component recorded ${recorded(slot)}`);
    assert.ok(out > 0, `slot ${slot} got records`);
    assert.equal(value(m, 'flotilla_slot_records_in_total', { stream: 'orders', slot }), out);
    // The histogram: cumulative buckets, +Inf equal to the count, a positive sum.
    const buckets = samples(m, 'flotilla_slot_processing_seconds_bucket', { stream: 'orders', slot });
    assert.equal(buckets.length, SERVICE_MS_BOUNDS.length + 1);
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, 'buckets are cumulative');
    const count = value(m, 'flotilla_slot_processing_seconds_count', { stream: 'orders', slot });
    assert.equal(buckets.at(-1)!.labels.le, '+Inf');
    assert.equal(buckets.at(-1)!.value, count);
    assert.ok(count > 0 && count <= out, `${count} deliveries for ${out} records`);
    assert.ok(value(m, 'flotilla_slot_processing_seconds_sum', { stream: 'orders', slot }) > 0);
    assert.equal(value(m, 'flotilla_slot_state', { stream: 'orders', slot, state: 'idle' }), 1);
  }
  assert.equal(sum(m, 'flotilla_slot_records_out_total', orders), ORDERS);
  assert.equal(value(m, 'flotilla_portal_queued_records', orders), 0);
  assert.equal(value(m, 'flotilla_portal_inflight_records', orders), 0);
  assert.equal(value(m, 'flotilla_portal_state', { stream: 'orders', state: 'idle' }), 1);
  assert.equal(value(m, 'flotilla_portal_paused', orders), 0);
  assert.equal(value(m, 'flotilla_portal_epoch', orders), 1);
  assert.equal(value(m, 'flotilla_map_epoch'), 1);
  assert.equal(value(m, 'flotilla_map_edit_refused'), 0);
  assert.equal(value(m, 'flotilla_epoch_switch_running'), 0);
  assert.equal(samples(m, 'flotilla_handovers_waiting').length, 0);
  // The spool holds what no slot takes; its slot is missing.
  assert.ok(value(m, 'flotilla_spool_bytes', { stream: 'events' }) > 0);
  assert.equal(value(m, 'flotilla_spool_taking_records', { stream: 'events' }), 1);
  assert.equal(value(m, 'flotilla_slots', { stream: 'events', state: 'missing' }), 1);
  assert.equal(value(m, 'flotilla_health_status'), HEALTH_EXIT.missing);
  // Host health, and the default process metrics.
  assert.ok(value(m, 'flotilla_host_memory_bytes', { kind: 'total' }) > value(m, 'flotilla_host_memory_bytes', { kind: 'available' }));
  assert.ok(samples(m, 'flotilla_host_disk_free_bytes', { use: 'spool of events' })[0]!.value > 0);
  assert.ok(samples(m, 'flotilla_host_disk_free_bytes', { use: 'run dir' })[0]!.value > 0);
  assert.equal(samples(m, 'flotilla_host_process_rss_bytes', { role: 'portal' }).length, 2, 'both portals measured');
  assert.equal(samples(m, 'flotilla_host_process_rss_bytes', { role: 'component' }).length, 2, 'both orders components measured');
  assert.ok(samples(m, 'flotilla_host_process_rss_bytes', { role: 'agent' })[0]!.value > 10 << 20);
  assert.ok(samples(m, 'flotilla_host_load', { window: '1m' }).length === 1);
  assert.ok(value(m, 'process_resident_memory_bytes') > 0, 'prom-client default process metrics');
  assert.ok(samples(m, 'nodejs_eventloop_lag_seconds').length === 1);
  assert.ok(m.every((s) => s.labels.server === 'solo' && s.labels.flotilla_instance === 'metrics'), 'every sample names its server and instance');
});

test('status and /healthz: a missing slot exits 4, and records waiting in the spool are not "idle"', async () => {
  const r = await status();
  assert.equal(r.status, HEALTH_EXIT.missing, r.stderr + r.stdout);
  assert.match(r.stdout, /^ {2}PROBLEM: events slot 0 is missing: no component has registered for it$/m);
  assert.match(r.stdout, /^ {2}warning: events: 300 records spooled, waiting for slots$/m);
  assert.match(r.stdout, /^ {2}warning: spool of events near its floor: \d+ MiB free on .*; the spool stops taking records under min_free_bytes \d+ MiB$/m);
  assert.match(r.stdout, /^ {2}events\s+spooled, waiting for slots\s+no\s+1\s/m);
  assert.match(r.stdout, /^ {2}host: memory .* free of .*, load .* \(\d+ cpus\), run dir .* free, spool of events .* free; rss agent/m);
  const h = await get(`${base}healthz`);
  assert.equal(h.status, 503);
  const body = JSON.parse(h.body) as { ok: boolean; health: number; problems: { kind: string; message: string }[] };
  assert.equal(body.ok, false);
  assert.equal(body.health, HEALTH_EXIT.missing);
  assert.deepEqual(body.problems.filter((p) => p.kind === 'missing').map((p) => p.message), ['events slot 0 is missing: no component has registered for it']);
  const json = JSON.parse((await status('--json')).stdout) as AgentStatus;
  assert.ok(json.host && json.host.intervalMs === 200 && json.host.warnings.some((w) => w.code === 'SPOOL_DISK_LOW'), 'status --json carries the host sample');
});

test('refusals are counted by code: batches sent to a paused stream are PAUSED', async () => {
  assert.equal((await portalctlAsync(['pause', 'orders', '--map', d.mapFile, '--run-dir', d.runDirOf()])).status, 0);
  await scrapeUntil('orders paused', (m) => value(m, 'flotilla_portal_paused', { stream: 'orders' }) === 1 && value(m, 'flotilla_portal_state', { stream: 'orders', state: 'paused' }) === 1);
  for (let i = 0; i < 50; i++) sender.send('orders', { key: `k${i}`, seq: 1 });
  await scrapeUntil('a PAUSED refusal counted', (m) => sum(m, 'flotilla_portal_refusals_total', { stream: 'orders', code: 'PAUSED' }) >= 1);
  assert.equal((await portalctlAsync(['resume', 'orders', '--map', d.mapFile, '--run-dir', d.runDirOf()])).status, 0);
  await sender.flush();
  await scrapeUntil(`${ORDERS + 50} orders in and out after resume`, (m) => value(m, 'flotilla_portal_records_out_total', { stream: 'orders' }) === ORDERS + 50);
  const m = await metrics();
  assert.equal(value(m, 'flotilla_portal_records_in_total', { stream: 'orders' }), ORDERS + 50, 'a refused batch is not counted in, its resend is');
});

test('when a component comes, the spool drains and the server is healthy: exit 0, /healthz 200', async () => {
  recorders.push(d.startRecorder('events', 0));
  await scrapeUntil(`the ${EVENTS} spooled events processed`, (m) =>
    value(m, 'flotilla_portal_records_out_total', { stream: 'events' }) === EVENTS && value(m, 'flotilla_spool_records', { stream: 'events' }) === 0 && value(m, 'flotilla_health_status') === 0,
  );
  assert.equal(readRecorded([d.outOf('events', 0)]).length, EVENTS);
  const r = await status();
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.doesNotMatch(r.stdout, /PROBLEM/);
  assert.match(r.stdout, /warning: spool of events near its floor/, 'a warning is shown but does not fail the check');
  const h = await get(`${base}healthz`);
  assert.equal(h.status, 200, h.body);
  assert.equal((JSON.parse(h.body) as { ok: boolean }).ok, true);
});

test('a dead slot exits 3 and shows in the metrics; a refused map edit exits 6', async () => {
  const victim = recorders[1]!;
  victim.kill('SIGSTOP');
  try {
    await waitFor('slot 1 dead in the agent', async () => (await status()).status === HEALTH_EXIT.dead);
    const r = await status();
    assert.match(r.stdout, new RegExp(`PROBLEM: orders slot 1 is dead: its component \\(pid ${victim.pid}\\) is silent for \\d+\\.\\d s`));
    const m = await metrics();
    assert.equal(value(m, 'flotilla_slot_state', { stream: 'orders', slot: 1, state: 'dead' }), 1);
    assert.equal(value(m, 'flotilla_slots', { stream: 'orders', state: 'dead' }), 1);
    assert.equal(value(m, 'flotilla_problems', { kind: 'dead', severity: 'error' }), 1);
    assert.equal((await get(`${base}healthz`)).status, 503);
  } finally {
    victim.kill('SIGCONT');
  }
  await waitFor('slot 1 heard from again', async () => (await status()).status === 0);

  const good = readFileSync(d.mapFile, 'utf8');
  writeFileSync(d.mapFile, good.replace('epoch: 1', 'epoch: 2').replace('heartbeat_ms: 200', 'heartbeat_ms: 5'));
  try {
    await waitFor('the edit refused', async () => (await status()).status === HEALTH_EXIT.map);
    const m = await metrics();
    assert.equal(value(m, 'flotilla_map_edit_refused'), 1);
    assert.equal(value(m, 'flotilla_health_status'), HEALTH_EXIT.map);
    const h = JSON.parse((await get(`${base}healthz`)).body) as { health: number; problems: { kind: string; message: string }[] };
    assert.equal(h.health, HEALTH_EXIT.map);
    assert.match(h.problems.find((p) => p.kind === 'map')!.message, /^the edit of .*map\.yaml was refused \(1 problem: heartbeat_ms: must be >= 50.*\); epoch 1 stays in force$/);
  } finally {
    writeFileSync(d.mapFile, good);
  }
  await waitFor('the map file in force again', async () => (await status()).status === 0);
});

test('status --slots lists every slot; top shows rates per server, stream and slot', async () => {
  const r = await status('--slots');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /STREAM\s+SLOT\s+PID\s+STATE\s+QUEUED\s+INFLIGHT\s+PROCESSED\s+MS\/DELIVERY\s+SILENT/);
  assert.match(r.stdout, /^ {2}orders\s+1\s+\d+\s+idle\s+0\s+0\s+\d+\s/m);
  assert.match(r.stdout, /^ {2}events\s+0\s+\d+\s+idle\s+0\s+0\s+300\s/m);
  const top = await portalctlAsync(['top', '--count', '2', '--interval', '0.3', '--map', d.mapFile, '--run-dir', d.runDirOf()]);
  assert.equal(top.status, 0, top.stderr);
  const frames = top.stdout.trim().split(/\n\n(?=flotilla top)/);
  assert.equal(frames.length, 2, top.stdout);
  assert.match(frames[1]!, /^SERVER\s+EPOCH\s+IN\/S\s+OUT\/S\s+QUEUED\s+INFLIGHT\s+PROBLEMS\nsolo\s+1\s+\d+\s+\d+\s+0\s+0\s+-$/m);
  assert.match(frames[1]!, /^solo\s+orders\s+idle\s/m);
  assert.match(frames[1]!, /^solo\s+events\s+idle\s.*0:idle$/m);
  assert.match(frames[1]!, /^solo\s+orders\s+0\s+idle\s+0\s+0\s+0\s/m, 'slot rates from the second frame on');
  const notFound = await get(`${base}nothing`);
  assert.equal(notFound.status, 404);
  assert.match(notFound.body, /try \/, \/metrics, \/healthz/);
});

test('a component that heartbeats but finishes nothing is reported stalled: a warning, in status and metrics', async () => {
  const fast = recorders[2]!;
  const gone = new Promise((resolve) => fast.once('exit', resolve));
  fast.kill('SIGTERM');
  await gone;
  // Each delivery takes 6 s; the stall warning comes after 5 heartbeats (1 s) without a DONE.
  recorders.push(d.startRecorder('events', 0, { delayMs: 6000 }));
  await waitFor('the slow events component registered', async () => (await d.stats('events')).slots[0]!.pid === recorders.at(-1)!.pid);
  for (let i = 0; i < 5; i++) sender.send('events', { key: `s${i}`, seq: 1 });
  let r = await status();
  await waitFor('status to warn that events slot 0 is stalled', async () => /warning: events slot 0 has finished nothing for \d+\.\d s with \d+ records in flight/.test((r = await status()).stdout));
  const m = await metrics();
  assert.equal(r.status, 0, 'a stall is a warning: the health check still passes');
  assert.ok(value(m, 'flotilla_slot_stuck_seconds', { stream: 'events', slot: 0 }) > 1);
  assert.equal(value(m, 'flotilla_problems', { kind: 'stalled', severity: 'warning' }), 1);
  await sender.flush();
  await waitFor('the stall to clear once the slow delivery is done', async () => !/stalled|finished nothing/.test((await status()).stdout));
});

test('an HTTP port already taken stops the agent with an error that names the address', async () => {
  const [port, taken] = await freePorts(2);
  const squatter = createServer().listen(taken, '127.0.0.1');
  await once(squatter, 'listening');
  try {
    const other = deploy({
      instance: 'metrics',
      epoch: 1,
      servers: [{ name: 'solo', host: '127.0.0.1', http_port: taken }],
      streams: [{ name: 'orders', key: 'key', port, schema: RECORD_SCHEMA('Order') }],
    });
    const r = spawnSync(process.execPath, [join(DIST, 'agent', 'main.js'), '--map', other.mapFile, '--server', 'solo', '--run-dir', other.runDirOf()], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`the agent's HTTP server cannot listen on 127\\.0\\.0\\.1:${taken} \\(http_host:http_port of solo\\): EADDRINUSE \\[CONFIG_INVALID\\]`));
  } finally {
    squatter.close();
  }
});
