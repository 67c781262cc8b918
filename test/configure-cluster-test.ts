/**
 * `portalctl configure --server` and `--cluster` across two servers' agents (TCP at their
 * agent_port), one slot each:
 *
 *   portalctl configure --cluster --configs--> every agent (the highest version of the stream)
 *                                 --configure {version: highest + 1}--> every agent --> portal --> component
 *
 * With --cluster every server gets the same version, even where the servers had different ones.
 */
import { strict as assert } from 'node:assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { ConfigureReply } from '../src/protocol/configure';
import { deploy, DIST, portalctlAsync, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { readJsonLines } from './support/records';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';

const SERVERS = ['alpha', 'beta'];
const FIXTURE = join(DIST, 'test', 'fixtures', 'configurable.js');
let d: Deployment;
const configsOf = (server: string) => join(d.dir, `configs-${server}.jsonl`);
const versionsOf = (server: string) => readJsonLines<{ version: number }>(configsOf(server)).map((c) => c.version);

before(async () => {
  const [alphaPort, betaPort, alphaAgent, betaAgent] = (await freePorts(4)) as [number, number, number, number];
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
  for (const server of SERVERS) {
    startAgent(d, server);
    d.startPortal('orders', server);
    const args = ['--map', d.mapFile, '--server', server, '--stream', 'orders', '--slot', '0', '--run-dir', d.runDirOf(server)];
    d.startComponent(FIXTURE, [...args, '--out', d.outOf('orders', 0, server), '--configs', configsOf(server)], server);
  }
  for (const server of SERVERS) {
    await waitAgent(d, server);
    await d.waitSlotsConnected('orders', 1, server);
  }
});

after(async () => {
  await d?.stop();
});

test('--server configures that server only; --cluster gives every server one version, above the highest', async () => {
  for (const value of ['1', '2']) {
    const r = await portalctlAsync(['configure', 'orders', '--server', 'beta', '--set', `step=${value}`, '--map', d.mapFile]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^beta: orders configuration version ${value}: \\{"step":${value}\\}$`, 'm'));
  }
  assert.deepEqual(versionsOf('alpha'), []);
  assert.deepEqual(versionsOf('beta'), [1, 2]);

  const all = await portalctlAsync(['configure', 'orders', '--cluster', '--file', writeConf({ mode: 'shared' }), '--json', '--map', d.mapFile]);
  assert.equal(all.status, 0, all.stderr);
  const replies = JSON.parse(all.stdout) as ConfigureReply[];
  assert.deepEqual(
    replies.map((r) => [r.server, r.version, r.ok, r.slots.map((s) => s.outcome)]),
    [
      ['alpha', 3, true, ['taken']],
      ['beta', 3, true, ['taken']],
    ],
  );
  assert.deepEqual(versionsOf('alpha'), [3]);
  assert.deepEqual(versionsOf('beta'), [1, 2, 3]);
});

test('a server whose portal is down is named, exit 1; its portal gets the version when it starts, and its component too', async () => {
  const portal = d.procs.find((p) => p.spawnargs.includes('--stream') && p.spawnargs.includes('beta') && p.spawnargs.some((a) => a.endsWith(join('portal', 'main.js'))))!;
  const gone = new Promise((resolve) => portal.once('exit', resolve));
  portal.kill('SIGTERM');
  await gone;
  const r = await portalctlAsync(['configure', 'orders', '--cluster', '--set', 'mode=partial', '--map', d.mapFile]);
  assert.equal(r.status, 1, r.stdout);
  assert.match(r.stdout, /^alpha: orders taken by slot 0$/m);
  assert.match(r.stderr, /^error: beta: orders configuration version 4 not confirmed: .*orders portal.*; version 4 is kept and given to the portal when it answers \[PORTAL_UNREACHABLE\]$/m);
  d.startPortal('orders', 'beta');
  // The agent sees the new portal's beacons (version 0) and gives it version 4; the portal gives it to its component.
  await waitFor('beta\'s component to take version 4', () => versionsOf('beta').includes(4), 20_000);
  assert.deepEqual(versionsOf('beta'), [1, 2, 3, 4]);
});

function writeConf(v: unknown): string {
  const path = join(d.dir, 'conf.json');
  writeFileSync(path, JSON.stringify(v));
  return path;
}
