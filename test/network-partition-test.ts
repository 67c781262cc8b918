/**
 * Two servers as separate hosts (network namespaces, support/netns.ts), a sender on a third (the
 * test's own namespace), and the network to one server dropping and coming back:
 *
 *   sender --tcp--> alpha (10.x.y.10): agent, portal, 2 recorder slots
 *          --tcp--> beta  (10.x.y.11): agent, portal, 2 recorder slots     <- link cut, then healed
 *
 * While beta is cut off the sender holds its records (nothing is refused or dropped), and
 * `portalctl status --cluster` names beta's agent as unreachable; once the link is back every
 * record is processed exactly once, by the owning server's owning slot, in order per key.
 */
import { strict as assert } from 'node:assert';
import { after, test } from 'node:test';
import { Sender } from '../src/sender/sender';
import { deploy, portalctlAsync, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA, RoundLoad } from './support/flows';
import { canMakeHosts, type Hosts, makeHosts } from './support/netns';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';

let d: Deployment | undefined;
let hosts: Hosts | undefined;
after(async () => {
  await d?.stop();
  hosts?.remove();
  if (process.env.FLOTILLA_TEST_LOGS) process.stderr.write(d?.logs.join('') ?? '');
});

test('the network to a server drops and comes back: its records wait at the sender, then all arrive once, in order', { skip: !canMakeHosts() && 'network namespaces need root and iproute2' }, async () => {
  hosts = makeHosts(2);
  const h = hosts;
  const [port, agentPort] = await freePorts(2);
  const names = ['alpha', 'beta'];
  d = deploy(
    {
      instance: 'test',
      epoch: 1,
      heartbeat_ms: 200,
      servers: names.map((name, i) => ({ name, host: h.address(i), agent_port: agentPort })),
      streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order') }],
    },
    { prefixOf: (server) => h.prefix(names.indexOf(server)) },
  );
  const dep = d;
  for (const name of names) {
    startAgent(dep, name);
    dep.startPortal('orders', name);
    for (let slot = 0; slot < 2; slot++) dep.startRecorder('orders', slot, { server: name });
  }
  for (const name of names) {
    await waitAgent(dep, name);
    await dep.waitSlotsConnected('orders', 2, name);
  }
  const files = names.flatMap((name) => [0, 1].map((slot) => dep.outOf('orders', slot, name)));
  const filesOf = (name: string) => [0, 1].map((slot) => dep.outOf('orders', slot, name));
  const KEYS = 300;
  const sender = new Sender({ map: dep.mapFile, lingerMs: 1, batchRecords: 200 });
  const load = new RoundLoad(sender, 'orders', KEYS, 2);
  try {
    await waitFor('records flowing to both hosts', () => readRecorded(filesOf('alpha')).length > 0 && readRecorded(filesOf('beta')).length > 0);

    h.cut(1);
    const betaAtCut = readRecorded(filesOf('beta')).length;
    await waitFor('the sender to hold records for beta', () => sender.pending > KEYS);
    const status = await portalctlAsync(['status', '--cluster', '--map', dep.mapFile, '--run-dir', dep.runDirOf('alpha')]);
    assert.match(status.stdout + status.stderr, /beta.*(no answer|unreachable|AGENT_UNREACHABLE)/i, status.stdout + status.stderr);
    assert.match(status.stdout, /^alpha: agent pid \d+/m, 'alpha still answers');
    // Beta processes nothing new while it is cut off (at most what was already on the wire).
    assert.ok(readRecorded(filesOf('beta')).length - betaAtCut <= 2 * 200 * 16, 'beta is cut off');

    h.heal(1);
    const rounds = load.rounds;
    await waitFor('traffic to both hosts again', () => load.rounds > rounds + 20, 60_000);
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.refused, 0, 'nothing refused');
  assert.equal(sender.stats.acked, load.sent, 'every record acknowledged');
  assertExactlyOnceInOrder(dep.map, 'orders', files, sentRounds(KEYS, load.rounds));
  assert.ok(dep.procs.every((p) => p.exitCode === null && p.signalCode === null), 'every process still up');
});
