/**
 * Map changes that cannot break, across two servers on hosts of their own (network namespaces
 * when the test runs as root), each with its own copy of the map file, under load:
 *
 *   1. the two files state one epoch with different content: both agents refuse to move anything
 *      and each names the other; the portals stay where they are, traffic flows;
 *   2. an edit reaches alpha only: alpha waits for beta (named, with how long, in status and in
 *      `portalctl reload`), nothing moves, traffic to both keeps flowing; once beta has it, the
 *      buckets move;
 *   3. the new owner's portal is killed (-9) and started again while the old owner drains: it
 *      comes back holding the buckets it took over (its handover file) and processes none of them
 *      before the old owner has drained them;
 *   4. beta's agent is down during an edit: alpha waits for it; started again, it carries its
 *      portals to the new epoch and the handover completes;
 *   5. beta is removed from the map in one edit: alpha holds beta's buckets, shows the hold as
 *      stuck past the hold limit with the command that ends it; the command ends it.
 *
 * Checked from the per-record processing logs: every record acknowledged was processed once, in
 * order per key; no bucket was processed by both servers at once (a bucket changes server no more
 * often than its owner changed in the maps the servers switched to).
 */
import { strict as assert } from 'node:assert';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { agentStatus, localAgent } from '../src/agent/client';
import { parseMap } from '../src/map/load';
import type { FlotillaMap } from '../src/map/types';
import { portalRequest } from '../src/portal/client';
import type { AgentStatus } from '../src/protocol/control';
import { Sender } from '../src/sender/sender';
import { DIST, deploy, portalctlAsync, stopped, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA, RoundLoad } from './support/flows';
import { serverHosts, type ServerHosts } from './support/netns';
import { freePorts } from './support/ports';
import { assertNoBucketOnTwoServers } from './support/ownership';
import { assertExactlyOnceInOrder, sentRounds } from './support/records';

const BUCKETS = 64;
const SERVERS = ['alpha', 'beta'] as const;
type Name = (typeof SERVERS)[number];

let d: Deployment;
let hosts: ServerHosts;
let mapOf: (epoch: number, weights: Record<string, number>, drop?: Name) => Record<string, unknown>;
const agents = new Map<Name, ChildProcess>();
const portals = new Map<Name, ChildProcess>();
const recorders = new Map<Name, ChildProcess[]>();
/** The maps the servers switched to, in order: how often each bucket may change server. */
const switched: FlotillaMap[] = [];
let sender: Sender;
let load: RoundLoad;
/** A sender that starts after a switch (it knows nothing of what came before): keys x0..x199. */
let late: Sender | undefined;
const LATE_KEYS = 200;

const fileOf = (s: Name) => join(d.dir, `map-${s}.yaml`);
const write = (s: Name, m: Record<string, unknown>) => writeFileSync(fileOf(s), stringify({ ...d.withKeys(m), run_dir: d.runDir }));
const status = (s: Name): Promise<AgentStatus> => agentStatus(localAgent(d.runDirOf(s)));
const portalEpoch = async (s: Name) => (await portalRequest(d.runDirOf(s), 'orders', { cmd: 'beacon' }, 2000)).epoch;
const outs = () => SERVERS.flatMap((s) => [0, 1].map((slot) => d.outOf('orders', slot, s)));

function startAgent(s: Name): void {
  agents.set(s, d.startComponent(join(DIST, 'agent', 'main.js'), ['--map', fileOf(s), '--server', s, '--run-dir', d.runDirOf(s), '--hold-limit', '2', ...d.keyArgs(s)], s));
}
function startPortal(s: Name): void {
  portals.set(s, d.startComponent(join(DIST, 'portal', 'main.js'), ['--map', fileOf(s), '--server', s, '--stream', 'orders', '--run-dir', d.runDirOf(s), '--spool-dir', join(d.dir, 'spool'), ...d.keyArgs(s)], s));
}
function startRecorders(s: Name): void {
  const args = (slot: number) => ['--map', fileOf(s), '--server', s, '--stream', 'orders', '--slot', String(slot), '--run-dir', d.runDirOf(s), '--out', d.outOf('orders', slot, s), '--delay-ms', '5'];
  recorders.set(s, [0, 1].map((slot) => d.startComponent(join(DIST, 'test', 'fixtures', 'recorder.js'), args(slot), s)));
}

/** Writes `m` to the servers' files and records it as switched to once both portals run it. */
async function switchBoth(m: Record<string, unknown>, what: string): Promise<void> {
  for (const s of SERVERS) write(s, m);
  const epoch = m.epoch as number;
  let seen: unknown[] = [];
  await waitFor(
    () => `${what}: ${JSON.stringify(seen)}`,
    async () => {
      try {
        seen = await Promise.all(SERVERS.map(async (s) => ({ switch: (await status(s)).epochSwitch, holds: (await status(s)).handovers, portal: await portalEpoch(s) })));
      } catch (err) {
        seen = [String(err)]; // an agent or portal (re)starting: ask again
        return false;
      }
      return (seen as { switch: AgentStatus['epochSwitch']; portal: number }[]).every((x) => x.switch?.done === true && x.portal === epoch);
    },
    30_000,
  );
  switched.push(parseMap(stringify({ ...d.withKeys(m), run_dir: d.runDir })));
}

/** Waits until the sender has had `n` more records acknowledged (traffic flows). */
async function flows(n: number, what: string): Promise<void> {
  const from = sender.stats.acked;
  await waitFor(() => `${what} (acked ${sender.stats.acked - from} of ${n})`, () => sender.stats.acked >= from + n, 20_000);
}

before(async () => {
  const ports = await freePorts(4);
  hosts = serverHosts(SERVERS);
  mapOf = (epoch, weights, drop) => ({
    instance: 'test',
    epoch,
    heartbeat_ms: 200,
    servers: SERVERS.filter((s) => s !== drop).map((s, i) => ({ name: s, host: hosts.address(s), weight: weights[s] ?? 1, ports: { orders: ports[i]! }, agent_port: ports[2 + i]! })),
    streams: [{ name: 'orders', key: 'key', port: ports[0]!, buckets: BUCKETS, slots: 2, schema: RECORD_SCHEMA('Order') }],
  });
  d = deploy(mapOf(1, {}), { prefixOf: hosts.prefixOf });
  for (const s of SERVERS) {
    write(s, mapOf(1, {}));
    startAgent(s);
    startPortal(s);
    startRecorders(s);
  }
  for (const s of SERVERS) await d.waitSlotsConnected('orders', 2, s);
  switched.push(parseMap(stringify({ ...d.withKeys(mapOf(1, {})), run_dir: d.runDir })));
  sender = new Sender({ map: fileOf('alpha'), lingerMs: 1 });
  load = new RoundLoad(sender, 'orders', 200, 5);
  await flows(2000, 'records flowing to both servers');
});

after(async () => {
  sender?.close();
  late?.close();
  await load?.stop().catch(() => undefined);
  for (const p of recorders.get('alpha') ?? []) p.kill('SIGCONT');
  await d?.stop();
  hosts?.remove();
  if (process.env.FLOTILLA_TEST_LOGS) process.stderr.write(d?.logs.join('') ?? '');
});

test('two files with one epoch and different content: nothing moves, each server names the other', async () => {
  write('alpha', mapOf(2, { beta: 2 }));
  write('beta', mapOf(2, { beta: 3 }));
  await waitFor('both agents to see the conflict', async () => {
    const st = await Promise.all(SERVERS.map(status));
    return st.every((x, i) => x.epochSwitch?.conflicts.some((c) => c.server === SERVERS[1 - i]) === true);
  });
  await flows(2000, 'traffic to keep flowing during the conflict');
  for (const s of SERVERS) {
    assert.equal(await portalEpoch(s), 1, `${s}'s portal stays at epoch 1`);
    const st = await status(s);
    assert.equal(st.epoch, 1, `${s} runs epoch 1`);
    assert.equal(st.mapEpoch, 2);
    const r = await portalctlAsync(['status', '--map', fileOf(s), '--run-dir', d.runDirOf(s)]);
    assert.match(r.stdout, new RegExp(`CONFLICT: ${SERVERS[SERVERS.indexOf(s) === 0 ? 1 : 0]} has map [0-9a-f]{12} at epoch 2`));
  }
  await switchBoth(mapOf(3, { beta: 2 }), 'the fixed file (epoch 3) switched to on both');
});

test('an edit that reaches one server only holds the switch, names the server it waits for, and stalls no traffic', async () => {
  write('alpha', mapOf(4, { beta: 1 }));
  await waitFor('alpha to wait for beta', async () => (await status('alpha')).epochSwitch?.waitingFor.some((w) => w.server === 'beta' && /has epoch 3/.test(w.reason)) === true);
  const r = await portalctlAsync(['reload', '--map', fileOf('alpha'), '--run-dir', d.runDirOf('alpha')]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /waiting for beta for \d+ s: has epoch 3/);
  // A pause (and resume) on alpha names it too.
  const paused = await portalctlAsync(['pause', '--map', fileOf('alpha'), '--run-dir', d.runDirOf('alpha')]);
  const resumed = await portalctlAsync(['resume', '--map', fileOf('alpha'), '--run-dir', d.runDirOf('alpha')]);
  assert.equal(paused.status, 0, paused.stderr);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(paused.stdout, /alpha: +waiting for beta for \d+ s: has epoch 3/);
  await flows(3000, 'traffic to both servers to keep flowing while alpha waits');
  for (const s of SERVERS) assert.equal(await portalEpoch(s), 3, `${s}'s portal stays at epoch 3 while they disagree`);
  assert.deepEqual((await status('alpha')).handovers, [], 'nothing is held');
  await switchBoth(mapOf(4, { beta: 1 }), 'epoch 4 on both once beta has it');
  await flows(2000, 'traffic under epoch 4');
});

test("the new owner's portal killed (-9) during the handover comes back holding what it took over", async () => {
  // alpha's components stop (SIGSTOP): alpha cannot drain what it gives up until they go on.
  for (const p of recorders.get('alpha')!) p.kill('SIGSTOP');
  try {
    await takeOverWhileBetaRestarts();
  } finally {
    for (const p of recorders.get('alpha')!) p.kill('SIGCONT');
  }
  await switchBoth(mapOf(5, { beta: 3 }), 'the handover to finish');
  await waitFor('beta to release every hold', async () => (await status('beta')).handovers.length === 0);
  await flows(2000, 'traffic under epoch 5');
});

async function takeOverWhileBetaRestarts(): Promise<void> {
  for (const s of SERVERS) write(s, mapOf(5, { beta: 3 }));
  await waitFor('beta to hold the buckets it takes from alpha', async () => (await portalRequest(d.runDirOf('beta'), 'orders', { cmd: 'beacon' })).holds.some((h) => h.from === 'alpha'));
  const held = (await portalRequest(d.runDirOf('beta'), 'orders', { cmd: 'beacon' })).holds.find((h) => h.from === 'alpha')!.buckets;
  const killed = portals.get('beta')!;
  killed.kill('SIGKILL');
  await stopped(killed);
  startPortal('beta');
  await waitFor('the restarted portal to answer', async () => {
    try {
      return (await portalRequest(d.runDirOf('beta'), 'orders', { cmd: 'beacon' })).epoch === 5;
    } catch {
      return false;
    }
  });
  // A sender new to the flow sends to the buckets' new owner at once: beta must hold them.
  late = new Sender({ map: fileOf('beta'), lingerMs: 1 });
  for (let k = 0; k < LATE_KEYS; k++) late.send('orders', { key: `x${k}`, seq: 0 });
  void late.flush();
  const again = (await portalRequest(d.runDirOf('beta'), 'orders', { cmd: 'beacon' })).holds.find((h) => h.from === 'alpha');
  assert.deepEqual(again?.buckets, held, 'the restarted portal holds the same buckets for alpha');
  let handovers: AgentStatus['handovers'] = [];
  await waitFor(
    () => `beta's agent to show the hold waiting for alpha: ${JSON.stringify(handovers)}`,
    async () => (handovers = (await status('beta')).handovers).some((h) => h.from === 'alpha' && /alpha: its orders portal is still draining/.test(h.reason)),
  );
}

test('an agent down during an edit: the switch waits for it, and it completes the switch once started again', async () => {
  const agent = agents.get('beta')!;
  agent.kill('SIGKILL');
  await stopped(agent);
  for (const s of SERVERS) write(s, mapOf(6, { beta: 1 }));
  await waitFor('alpha to wait for beta, which does not answer', async () => (await status('alpha')).epochSwitch?.waitingFor.some((w) => w.server === 'beta' && /does not answer/.test(w.reason)) === true);
  for (const s of SERVERS) assert.equal(await portalEpoch(s), 5, `${s}'s portal stays at epoch 5 while beta's agent is down`);
  startAgent('beta');
  await switchBoth(mapOf(6, { beta: 1 }), 'epoch 6 once beta is back');
  await flows(2000, 'traffic under epoch 6');
});

test('every acknowledged record was processed once, in order per key, and no bucket by two servers at once', async () => {
  await load.stop();
  void sender.flush();
  await waitFor(() => `every record acknowledged (${sender.stats.acked} of ${load.sent})`, () => sender.stats.acked === load.sent && late?.stats.acked === LATE_KEYS, 30_000);
  assertExactlyOnceInOrder(d.map, 'orders', outs(), sentRounds(LATE_KEYS, 1, 'x', sentRounds(load.keys, load.rounds)), { order: 'time' });
  const moved = assertNoBucketOnTwoServers(outs(), SERVERS.flatMap((s) => [s, s]), BUCKETS, switched);
  assert.ok(moved > 0, 'some buckets moved');
});

test('a server removed in one edit: its buckets are held, shown stuck past the limit with the command that ends it', async () => {
  for (const s of SERVERS) write(s, mapOf(7, {}, 'beta'));
  await waitFor('alpha to hold beta\'s buckets, stuck', async () => (await status('alpha')).handovers.some((h) => h.from === 'beta' && h.stuck));
  const st = await status('alpha');
  const hold = st.handovers.find((h) => h.from === 'beta')!;
  assert.equal(hold.command, 'portalctl release orders --from beta --server alpha');
  assert.match(hold.reason, /beta: its orders portal runs epoch 6, not yet 7/);
  const shown = await portalctlAsync(['status', '--map', fileOf('alpha'), '--run-dir', d.runDirOf('alpha')]);
  assert.match(shown.stdout, /STUCK hold: orders, \d+ buckets \(0 records\) from beta, \d+ s: .*; to end it: portalctl release orders --from beta --server alpha/);
  // The operator stops beta's portal, then ends the hold as the status says.
  const beta = portals.get('beta')!;
  beta.kill('SIGTERM');
  await stopped(beta);
  const r = await portalctlAsync(['release', 'orders', '--from', 'beta', '--map', fileOf('alpha'), '--run-dir', d.runDirOf('alpha')]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /alpha: released the orders buckets held for beta/);
  await waitFor('no hold left on alpha', async () => (await status('alpha')).handovers.length === 0);
  const again = await portalctlAsync(['release', 'orders', '--from', 'beta', '--map', fileOf('alpha'), '--run-dir', d.runDirOf('alpha')]);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /the orders portal holds nothing for beta \[BAD_REQUEST\]/);
});
