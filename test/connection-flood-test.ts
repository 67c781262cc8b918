/**
 * A flood of idle connections does not take a portal or an agent down. Both run with a
 * descriptor limit of 1024 (as a unit's LimitNOFILE would set it), and 3,000 idle TCP connections
 * are opened to each; without the cap, libzmq 4.3.5 runs out of descriptors and aborts the
 * process at its next ipc accept. With it:
 *
 *   3,000 idle connections --> portal port, agent port: refused past the cap (CONNECTION_CAP),
 *                              the rest dropped after the handshake interval
 *   Sender (connected before) --> portal --> 2 recorders: keeps flowing, every record once
 *   portalctl status --cluster (tcp) answers once the flood has drained
 */
import { strict as assert } from 'node:assert';
import { connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import * as zmq from 'zeromq';
import { agentStatus, localAgent } from '../src/agent/client';
import { Sender } from '../src/sender/sender';
import { deploy, portalctlAsync, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';

const FLOOD = 3000;
const CAP = 16;
const LIMIT = 1024;
let d: Deployment;
let sender: Sender;
const flood: Socket[] = [];
const files = () => [0, 1].map((s) => d.outOf('orders', s));

before(async () => {
  const [port, agentPort] = await freePorts(2);
  d = deploy(
    {
      instance: 'test',
      epoch: 1,
      heartbeat_ms: 200,
      security: { plain_tcp: true, max_connections: CAP },
      servers: [{ name: 'solo', host: '127.0.0.1', agent_port: agentPort }],
      streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order') }],
    },
    { prefixOf: () => ['prlimit', `--nofile=${LIMIT}:${LIMIT}`] },
  );
  startAgent(d);
  d.startPortal('orders');
  for (const slot of [0, 1]) d.startRecorder('orders', slot);
  await waitAgent(d);
  await d.waitSlotsConnected('orders', 2);
  sender = new Sender({ map: d.mapFile, lingerMs: 1 });
});

after(async () => {
  for (const s of flood) s.destroy();
  sender?.close();
  await d?.stop();
});

/** Opens `n` TCP connections to `port` that never send a byte; refused ones are simply closed. */
async function idleConnections(port: number, n: number): Promise<void> {
  for (let i = 0; i < n; i += 1000) {
    await Promise.all(
      Array.from({ length: Math.min(1000, n - i) }, () => new Promise<void>((resolve) => {
        const s = connect({ host: '127.0.0.1', port });
        // A connection the kernel neither takes nor refuses (a full backlog) is left pending.
        const timer = setTimeout(resolve, 1000);
        const done = () => {
          clearTimeout(timer);
          resolve();
        };
        s.on('connect', done);
        s.on('error', done);
        flood.push(s);
      })),
    );
  }
}

test(`past max_connections (${CAP}) a handshake is refused and counted; the clients already connected are served`, async () => {
  const sent = sentRounds(50, 2, 'c');
  for (let k = 0; k < 50; k++) sender.send('orders', { key: `c${k}`, seq: 0 });
  await sender.flush();
  const port = d.map.streams[0]!.port;
  const extra = Array.from({ length: CAP + 10 }, () => {
    const s = new zmq.Dealer({ linger: 0 });
    s.connect(`tcp://127.0.0.1:${port}`);
    return s;
  });
  try {
    await waitFor('handshakes refused past the cap', async () => ((await d.stats('orders')).security?.capReached ?? 0) >= 5);
    for (let k = 0; k < 50; k++) sender.send('orders', { key: `c${k}`, seq: 1 });
    await sender.flush();
    await waitFor('the records recorded', () => readRecorded(files(), (key) => key.startsWith('c')).length >= 100);
    assertExactlyOnceInOrder(d.map, 'orders', files(), sent, { only: (key) => key.startsWith('c') });
    assert.ok(((await d.stats('orders')).errors.CONNECTION_CAP ?? 0) >= 1);
  } finally {
    for (const s of extra) s.close();
  }
});

test(`${FLOOD} idle connections to a portal and to an agent under a descriptor limit of ${LIMIT}: both stay up and keep serving`, async () => {
  const sent = sentRounds(50, 10);
  for (let k = 0; k < 50; k++) sender.send('orders', { key: `k${k}`, seq: 0 });
  await sender.flush();

  const portalPort = d.map.streams[0]!.port;
  const agentPort = d.map.servers[0]!.agentPort!;
  await Promise.all([idleConnections(portalPort, FLOOD), idleConnections(agentPort, FLOOD)]);
  const stats = await d.stats('orders');
  assert.ok((stats.security?.floods ?? 0) >= 1, JSON.stringify(stats.security));
  assert.ok((stats.errors.CONNECTION_FLOOD ?? 0) >= 1);
  const agent = await agentStatus(localAgent(d.runDirOf()));
  assert.ok((agent.security?.floods ?? 0) >= 1, JSON.stringify(agent.security));

  // The sender is served again once the port listens again (it resends what was not acknowledged).
  for (let round = 1; round < 10; round++) for (let k = 0; k < 50; k++) sender.send('orders', { key: `k${k}`, seq: round });
  await sender.flush();
  await waitFor('every record recorded', () => readRecorded(files(), (key) => key.startsWith('k')).length >= 500, 30_000);
  assertExactlyOnceInOrder(d.map, 'orders', files(), sent, { only: (key) => key.startsWith('k') });

  await waitFor('the portal to listen again', async () => (await d.stats('orders')).security?.listening === true, 30_000, 200);
  const status = await portalctlAsync(['status', '--cluster', '--map', d.mapFile, '--json']);
  assert.equal(status.status, 0, status.stderr);
  for (const p of d.procs.slice(0, 2)) assert.ok(p.exitCode === null && p.signalCode === null, `the agent and the portal are still running (exit ${p.exitCode}, signal ${p.signalCode})`);
});
