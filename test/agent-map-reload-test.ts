/**
 * The agent and edits of the map file (a real agent daemon watching a real file):
 *
 *   operator edits map.yaml --(watch | portalctl reload)--> agent: valid and epoch raised? take it
 *                                                                  : else keep the map in force
 *
 * An invalid edit leaves the epoch in force unchanged, status shows every problem as
 * `path: message`, the agent logs it and stays up; an edit that forgets to raise the epoch is
 * rejected too; a later valid edit with a higher epoch is taken.
 */
import { strict as assert } from 'node:assert';
import { HEALTH_EXIT } from '../src/agent/problems';
import { writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import type { AgentStatus } from '../src/protocol/control';
import { agentStatus, localAgent } from '../src/agent/client';
import { portalctl } from './support/cli';
import { deploy, startAgent, waitAgent, waitFor, type Deployment, withPlainTcp } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';

let d: Deployment;
let port: number;
const status = () => agentStatus(localAgent(d.runDirOf()));
const args = (...extra: string[]) => [...extra, '--map', d.mapFile, '--run-dir', d.runDirOf()];

/** The test's map at `epoch`, with `edit` applied to it. */
function mapAt(epoch: number, edit: (m: Record<string, any>) => void = () => undefined): Record<string, any> {
  const m: Record<string, any> = {
    instance: 'test',
    epoch,
    heartbeat_ms: 200,
    run_dir: d?.runDir,
    servers: [{ name: 'solo', host: '127.0.0.1' }],
    streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order') }],
  };
  edit(m);
  return m;
}

const writeMap = (m: Record<string, any> | string) => writeFileSync(d.mapFile, typeof m === 'string' ? m : stringify(withPlainTcp(m)));

before(async () => {
  [port] = (await freePorts(1)) as [number];
  d = deploy(mapAt(1));
  startAgent(d);
  await waitAgent(d);
});

after(async () => {
  await d?.stop();
});

test('an invalid edit leaves the epoch in force, and status shows each problem as path: message', async () => {
  writeMap(mapAt(2, (m) => ((m.streams[0].port = 70000), (m.servers[0].colour = 'red'))));
  let st: AgentStatus | undefined;
  await waitFor('the agent to reject the edit', async () => (st = await status()).mapErrors?.problems.some((p) => p.path === 'streams[0].port') === true);
  assert.equal(st!.epoch, 1, 'epoch 1 stays in force');
  assert.equal(st!.mapErrors!.code, 'MAP_INVALID');
  assert.equal(st!.mapErrors!.epoch, 2);
  const problems = st!.mapErrors!.problems.map((p) => `${p.path}: ${p.message}`);
  assert.ok(problems.some((p) => /^streams\[0\]\.port: must be <= 65535 \(line \d+\)$/.test(p)), problems.join('\n'));
  assert.ok(problems.some((p) => /^servers\[0\]\.colour: unknown field \(line \d+\)$/.test(p)), problems.join('\n'));

  const r = portalctl('status', ...args());
  // No portal runs in this test, so "missing" (4) outranks "map refused" (6).
  assert.equal(r.status, HEALTH_EXIT.missing, `a refused edit fails the health check; ${r.stderr}`);
  assert.match(r.stdout, /epoch 1,/);
  assert.match(r.stdout, /^ {2}PROBLEM: the edit of .*map\.yaml was refused \(\d+ problems: .*\); epoch 1 stays in force$/m);
  assert.match(r.stdout, /map edit rejected \(.*\); epoch 1 stays in force\. .*map\.yaml:/);
  assert.match(r.stdout, /^ {4}streams\[0\]\.port: must be <= 65535 \(line \d+\)$/m);

  // portalctl reload reads the same file: rejected, exit 1, the problems on stderr.
  const reload = portalctl('reload', ...args());
  assert.equal(reload.status, 1);
  assert.match(reload.stderr, /error: solo: edit rejected; epoch 1 stays in force\./);
  assert.match(reload.stderr, /streams\[0\]\.port: must be <= 65535/);
  // The log line travels through the agent's stderr pipe: wait for it rather than race it.
  await waitFor('the agent to log the rejection', () => d.logs.join('').includes('edit rejected, epoch 1 stays in force'), 5000);
});

test('a file that is not even YAML, or an edit that does not raise the epoch, is rejected too', async () => {
  writeMap('instance: test\nepoch: 3\nservers: [\n');
  await waitFor('a YAML error', async () => (await status()).mapErrors?.problems[0]?.path.startsWith('line ') === true);
  assert.equal((await status()).epoch, 1);

  writeMap(mapAt(1, (m) => (m.heartbeat_ms = 300)));
  await waitFor('the epoch problem', async () => (await status()).mapErrors?.problems.some((p) => p.path === 'epoch') === true);
  const st = await status();
  assert.equal(st.epoch, 1);
  assert.equal(st.heartbeatMs, 200, 'the map in force is unchanged');
  assert.match(st.mapErrors!.problems[0]!.message, /is still 1 but the map changed; raise the epoch on every edit/);

  // portalctl still finds the agent while the map file is broken.
  writeMap('instance: test\nepoch: 3\nservers: [\n');
  await waitFor('a YAML error again', async () => (await status()).mapErrors?.problems[0]?.path.startsWith('line ') === true);
  const r = portalctl('status', '--map', d.mapFile, '--run-dir', d.runDirOf(), '--json');
  assert.equal(r.status, HEALTH_EXIT.missing, r.stderr);
  assert.equal((JSON.parse(r.stdout) as AgentStatus).epoch, 1);
});

test('an edit no portal can make live (heartbeat, port, slots) is refused, naming the units to restart', async () => {
  writeMap(mapAt(2, (m) => ((m.heartbeat_ms = 250), (m.streams[0].slots = 3))));
  await waitFor('the agent to refuse the edit', async () => (await status()).mapErrors?.epoch === 2);
  const st = await status();
  assert.equal(st.epoch, 1);
  assert.equal(st.heartbeatMs, 200, 'the map in force is unchanged');
  const problems = st.mapErrors!.problems.map((p) => p.message).join('\n');
  assert.match(problems, /heartbeat_ms changes \(200 -> 250\); that needs a restart of every agent, portal and component of instance test/);
  assert.match(problems, /slot count on solo \(2 -> 3\); that needs a restart of flotilla-portal@orders and its components on solo/);
});

test('a later valid edit with a higher epoch is taken, and clears the errors', async () => {
  writeMap(mapAt(2, (m) => (m.servers[0].weight = 2)));
  await waitFor('epoch 2 in force', async () => (await status()).epoch === 2);
  const st = await status();
  assert.equal(st.mapErrors, null);
  assert.equal(st.mapEpoch, 2);
  await waitFor('the agent to log the new epoch', () => d.logs.join('').includes('epoch 2 taken (was 1)'), 5000);

  const same = portalctl('reload', ...args());
  assert.equal(same.status, 0, same.stderr);
  assert.equal(same.stdout, 'solo: no change; epoch 2 in force\n');

  // Taken on `portalctl reload` too, without waiting for the watch.
  writeMap(mapAt(3, (m) => (m.servers[0].weight = 3)));
  const r = portalctl('reload', ...args('--json'));
  assert.equal(r.status, 0, r.stderr);
  const reply = JSON.parse(r.stdout) as { ok: boolean; outcome: string; epoch: number };
  assert.equal(reply.ok, true);
  assert.equal(reply.epoch, 3);
  assert.equal((await status()).epoch, 3);
});
