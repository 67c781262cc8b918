/**
 * `portalctl --cluster` and `--server` across two servers' agents, over TCP at their agent_port:
 *
 *   portalctl --cluster --tcp--> agent of alpha --ipc--> alpha's orders portal --> 1 slot
 *                       \--tcp--> agent of beta  --ipc--> beta's orders portal  --> 1 slot
 *
 * Pause and wait, status and resume reach every server in parallel; when one agent does not
 * answer, the others are still served and portalctl exits 1 naming the one that did not (and a
 * pause that did not reach every server does not wait).
 */
import { strict as assert } from 'node:assert';
import type { ChildProcess } from 'node:child_process';
import { after, before, test } from 'node:test';
import type { AgentStatus } from '../src/protocol/control';
import { deploy, portalctlAsync, startAgent, waitAgent, type Deployment } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';

let d: Deployment;
let betaAgentPort: number;
const agents: Record<string, ChildProcess> = {};
const cluster = (...args: string[]) => portalctlAsync([...args, '--cluster', '--map', d.mapFile]);

before(async () => {
  const [alphaPort, betaPort, alphaAgent, betaAgent] = (await freePorts(4)) as [number, number, number, number];
  betaAgentPort = betaAgent;
  d = deploy({
    instance: 'test',
    epoch: 1,
    heartbeat_ms: 200,
    servers: [
      { name: 'alpha', host: '127.0.0.1', agent_port: alphaAgent },
      { name: 'beta', host: '127.0.0.1', agent_port: betaAgent, ports: { orders: betaPort } },
    ],
    streams: [{ name: 'orders', key: 'key', port: alphaPort, buckets: 64, slots: 1, schema: RECORD_SCHEMA('Order') }],
  });
  for (const server of ['alpha', 'beta']) {
    agents[server] = startAgent(d, server);
    d.startPortal('orders', server);
    d.startRecorder('orders', 0, { server });
  }
  for (const server of ['alpha', 'beta']) {
    await waitAgent(d, server);
    await d.waitSlotsConnected('orders', 1, server);
  }
});

after(async () => {
  await d?.stop();
});

test('pause --cluster --wait pauses every server and waits for all of them; status and resume reach them all', async () => {
  const pause = await cluster('pause', '--wait', '--timeout', '10');
  assert.equal(pause.status, 0, pause.stderr);
  assert.match(pause.stdout, /^alpha: paused orders$/m);
  assert.match(pause.stdout, /^beta: paused orders$/m);
  assert.match(pause.stdout, /every process of alpha, beta is paused and idle$/m);

  const st = await cluster('status');
  assert.equal(st.status, 0, st.stderr);
  assert.match(st.stdout, /^alpha: agent pid \d+.*\n.*\n {2}orders\s+paused\s+yes\s+1\s+0\s+0\s+0\s+0\s+-\s+0:idle$/m);
  assert.match(st.stdout, /^beta: agent pid \d+.*\n.*\n {2}orders\s+paused\s+yes\s+1\s+0\s+0\s+0\s+0\s+-\s+0:idle$/m);

  const one = await portalctlAsync(['status', '--server', 'beta', '--json', '--map', d.mapFile]);
  assert.equal(one.status, 0, one.stderr);
  assert.equal((JSON.parse(one.stdout) as AgentStatus).server, 'beta');

  const resume = await cluster('resume', '--json');
  assert.equal(resume.status, 0, resume.stderr);
  const replies = JSON.parse(resume.stdout) as { server: string; ok: boolean }[];
  assert.deepEqual(replies.map((r) => [r.server, r.ok]), [['alpha', true], ['beta', true]]);
});

test('with one agent down, --cluster serves the others and exits 1 naming the one that did not answer', async () => {
  const beta = agents.beta!;
  const exited = new Promise((resolve) => beta.once('exit', resolve));
  beta.kill('SIGTERM');
  await exited;

  const st = await cluster('status');
  assert.equal(st.status, 1);
  assert.match(st.stdout, /^alpha: agent pid \d+/m);
  assert.doesNotMatch(st.stdout, /^beta:/m);
  assert.match(st.stderr, new RegExp(`^error: no answer from the agent of beta at tcp://127\\.0\\.0\\.1:${betaAgentPort} within 2000 ms; is flotilla-agent running\\? \\[AGENT_UNREACHABLE\\]$`, 'm'));

  const pause = await cluster('pause', '--wait');
  assert.equal(pause.status, 1, 'a pause that did not reach every server does not wait');
  assert.match(pause.stdout, /^alpha: paused orders$/m);
  assert.match(pause.stderr, /the agent of beta .*\[AGENT_UNREACHABLE\]/);
});
