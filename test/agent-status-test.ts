/**
 * `portalctl status` against a real agent, portal and components:
 *
 *   orders portal --beacon (ipc PUSH)--> agent <--status (ipc | tcp agent_port)-- portalctl
 *   2 recorder slots --HEARTBEAT--> orders portal          (audits: no portal, "missing")
 *
 * It shows each portal and its slots, --json parses, --cluster reaches the agent over TCP, a
 * portal that stops beaconing is reported dead, and with no agent running portalctl says so and
 * exits 1. The agent answers bad requests with a code and stays up.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as zmq from 'zeromq';
import type { AgentStatus } from '../src/protocol/control';
import { agentStatus, askAgent, localAgent } from '../src/agent/client';
import type { AgentRequest } from '../src/protocol/control';
import { FlotillaError } from '../src/errors';
import { HEALTH_EXIT } from '../src/agent/problems';
import { agentBeaconEndpoint, agentControlEndpoint } from '../src/protocol/endpoints';
import { portalctl } from './support/cli';
import { deploy, DIST, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';

const HEARTBEAT_MS = 200;
let d: Deployment;
const args = (...extra: string[]) => [...extra, '--map', d.mapFile, '--run-dir', d.runDirOf()];
const status = () => agentStatus(localAgent(d.runDirOf()));

before(async () => {
  const [orders, audits, agentPort] = await freePorts(3);
  const stream = (name: string, port: number) => ({ name, key: 'key', port, buckets: 64, slots: 2, schema: RECORD_SCHEMA(name) });
  d = deploy({
    instance: 'test',
    epoch: 1,
    heartbeat_ms: HEARTBEAT_MS,
    servers: [{ name: 'solo', host: '127.0.0.1', agent_port: agentPort }],
    streams: [stream('orders', orders!), stream('audits', audits!)],
  });
  startAgent(d);
  d.startPortal('orders');
  for (let slot = 0; slot < 2; slot++) d.startRecorder('orders', slot);
  await waitAgent(d);
  await waitFor('the agent to see the orders portal with both slots idle', async () => {
    const o = (await status()).streams.find((s) => s.stream === 'orders')!;
    return o.state === 'idle' && o.beacon!.slots.every((x) => x.state === 'idle');
  });
});

after(async () => {
  await d?.stop();
});

test('portalctl status shows each portal, its state and its slots; --json is the raw status', () => {
  const r = portalctl('status', ...args());
  assert.equal(r.status, HEALTH_EXIT.missing, `audits has no portal: exit ${HEALTH_EXIT.missing}; ${r.stderr}`);
  assert.match(r.stdout, /^ {2}PROBLEM: the audits portal is missing: its agent has never heard from it \(is flotilla-portal@audits running\?\)$/m);
  assert.match(r.stdout, /^solo: agent pid \d+, map .*map\.yaml, epoch 1, heartbeat 200 ms, not all idle$/m);
  assert.match(r.stdout, /STREAM\s+STATE\s+IDLE\s+EPOCH\s+IN\/S\s+OUT\/S\s+QUEUED\s+INFLIGHT\s+SPOOL\s+SLOTS/);
  assert.match(r.stdout, /orders\s+idle\s+yes\s+1\s+0\s+0\s+0\s+0\s+-\s+0:idle 1:idle$/m);
  assert.match(r.stdout, /audits\s+missing\s+no\s+.*no beacon yet$/m);

  const j = portalctl('status', ...args('--json'));
  assert.equal(j.status, HEALTH_EXIT.missing, j.stderr);
  const st = JSON.parse(j.stdout) as AgentStatus;
  assert.equal(st.server, 'solo');
  assert.equal(st.epoch, 1);
  assert.equal(st.idle, false, 'audits has no portal, so not everything is idle');
  assert.equal(st.mapErrors, null);
  const orders = st.streams.find((s) => s.stream === 'orders')!;
  assert.equal(orders.beacon!.slots.length, 2);
  assert.ok(orders.beacon!.slots.every((x) => x.pid > 0));
  assert.deepEqual(st.streams.map((s) => [s.stream, s.state]), [['orders', 'idle'], ['audits', 'missing']]);
});

test('portalctl status --cluster asks every agent of the map over TCP', () => {
  const r = portalctl('status', '--cluster', '--json', '--map', d.mapFile);
  assert.equal(r.status, HEALTH_EXIT.missing, r.stderr);
  const all = JSON.parse(r.stdout) as AgentStatus[];
  assert.deepEqual(all.map((s) => s.server), ['solo']);
  assert.equal(all[0]!.streams[0]!.state, 'idle');
});

test('the agent sockets are open to user and group only, and a second agent on the run dir refuses to start', () => {
  const ctl = agentControlEndpoint(d.runDirOf()).slice('ipc://'.length);
  assert.equal(statSync(ctl).mode & 0o777, 0o660);
  const again = spawnSync(process.execPath, [join(DIST, 'agent', 'main.js'), '--map', d.mapFile, '--server', 'solo', '--run-dir', d.runDirOf()], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  assert.equal(again.status, 1);
  assert.match(again.stderr, /an agent already serves .*agent\.ctl\.ipc \[AGENT_ALREADY_RUNNING\]/);
});

test('bad requests get an error with a code, and the agent stays up', async () => {
  const agent = localAgent(d.runDirOf());
  const rejects = (request: object, code: string, message: RegExp) =>
    assert.rejects(askAgent(agent, request as AgentRequest), (err: unknown) => err instanceof FlotillaError && err.code === code && message.test(err.message));
  await rejects({ cmd: 'explode' }, 'BAD_REQUEST', /unknown command "explode"; commands: ping, status, pause, resume, reload/);
  await rejects({ nothing: true }, 'BAD_REQUEST', /unknown command/);
  await rejects({ cmd: 'pause', streams: 'orders' }, 'BAD_REQUEST', /"streams" must be a list of stream names/);
  await rejects({ cmd: 'pause', streams: ['views'] }, 'UNKNOWN_STREAM', /no stream "views" in the map in force \(streams: orders, audits\)/);
  await rejects([1, 2], 'BAD_REQUEST', /not a JSON object/);
  // Garbage on the beacon socket is counted and logged, not fatal.
  const push = new zmq.Push({ linger: 2000 }); // deliver before closing
  push.connect(agentBeaconEndpoint(d.runDirOf()));
  await push.send('garbage');
  await push.send('{"type":"portal"}');
  push.close();
  await waitFor('the agent to log the bad beacons', () => d.logs.join('').includes('BAD_BEACON'));
  assert.equal((await status()).server, 'solo', 'still answering');
});

test('a portal that stops beaconing is reported dead', async () => {
  const portal = d.procs.find((p) => p.spawnargs.some((a) => a.endsWith(join('portal', 'main.js'))))!;
  portal.kill('SIGKILL');
  await waitFor('the agent to report the orders portal dead', async () => (await status()).streams[0]!.state === 'dead');
  const r = portalctl('status', ...args());
  assert.equal(r.status, HEALTH_EXIT.dead, `a dead portal outranks a missing one; ${r.stderr}`);
  assert.match(r.stdout, /^ {2}PROBLEM: the orders portal is dead: no beacon for \d+\.\d s \(last from pid \d+\)$/m);
  assert.match(r.stdout, /orders\s+dead\s+no\s+1\s+.*no beacon for \d+\.\d s \(last from pid \d+\)$/m);
});

test('with no agent running, portalctl says so and exits 1', async () => {
  const [port, agentPort] = await freePorts(2);
  const empty = deploy({
    instance: 'test',
    epoch: 1,
    servers: [{ name: 'solo', host: '127.0.0.1', agent_port: agentPort }],
    streams: [{ name: 'orders', key: 'key', port, schema: RECORD_SCHEMA('orders') }],
  });
  const local = portalctl('status', '--map', empty.mapFile);
  assert.equal(local.status, 1);
  assert.match(local.stderr, /^error: no agent at ipc:\/\/.*agent\.ctl\.ipc: the socket does not exist; is flotilla-agent running, with this run directory\? \[AGENT_UNREACHABLE\]$/m);
  assert.equal(local.stdout, '');

  const cluster = portalctl('status', '--cluster', '--map', empty.mapFile);
  assert.equal(cluster.status, 1);
  assert.match(cluster.stderr, /error: no answer from the agent of solo at tcp:\/\/127\.0\.0\.1:\d+ within 2000 ms; is flotilla-agent running\? \[AGENT_UNREACHABLE\]/);

  const usage = portalctl('status', '--cluster', '--server', 'solo', '--map', empty.mapFile);
  assert.equal(usage.status, 2, 'usage error');
  assert.match(usage.stderr, /option '--cluster' cannot be used with option '--server/);
  assert.equal(portalctl('pause', '--wait', '--timeout', 'soon', '--map', empty.mapFile).status, 2);
});

test('the agent stops cleanly on SIGTERM', async () => {
  const agent = d.procs.find((p) => p.spawnargs.some((a) => a.endsWith(join('agent', 'main.js'))))!;
  const exited = new Promise<number | null>((resolve) => agent.once('exit', (code) => resolve(code)));
  agent.kill('SIGTERM');
  assert.equal(await exited, 0);
  const r = portalctl('status', ...args());
  assert.equal(r.status, 1);
  assert.match(r.stderr, /AGENT_UNREACHABLE/);
});
