/**
 * Two instances of Flotilla on one host, prod and dev, each started exactly as its units would
 * start it: the unit set of systemd/ installed for both, each process run with the unit's
 * ExecStart, its EnvironmentFile (/etc/flotilla/<instance>.env, under a temp root) and its
 * Environment=, the run directory where RuntimeDirectory= puts it. Both serve a stream named
 * `clicks` on this host, on their own ports and run directories:
 *
 *   sender --> prod clicks portal --ipc--> 2 x portal-exec (FLOTILLA_UNIT_SLOT=clicks.N) --> sink.py
 *   sender --> dev  clicks portal --ipc--> 2 x portal-exec                               --> sink.py
 *
 * Pausing one instance (portalctl with that instance's env file) leaves the other running and
 * taking records; resuming it brings it back; then the other way round. No process logs a key
 * twice on a line.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { stopChildren } from '../daemon/children';
import { Sender } from '../src/sender/sender';
import { DIST, waitFor } from './support/deploy';
import { topLevelKeys } from './support/json-keys';
import { freePorts } from './support/ports';
import { clicksMap } from './support/flows';
import { installUnits, readEnvFile, unitSettings } from './support/units';

const ROOT = join(DIST, '..');
const BINS = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin;
const root = mkdtempSync(join(tmpdir(), 'flt-2inst-'));
const unitDir = join(root, 'etc', 'systemd', 'system');
const INSTANCES = ['prod', 'dev'] as const;
type Instance = (typeof INSTANCES)[number];
const SLOTS = 2;
const procs: ChildProcess[] = [];
const logs: string[] = [];
const senders: Partial<Record<Instance, Sender>> = {};

const SINK = `import json, os, sys
pending = b""
while True:
    data = os.read(0, 1 << 16)
    if not data:
        break
    pending += data
    *lines, pending = pending.split(b"\\n")
    if lines:
        sys.stdout.write(json.dumps({"ack": len(lines)}) + "\\n")
        sys.stdout.flush()
`;

/** Starts unit `name` as systemd would: ExecStart with its env file and Environment=. */
function startUnit(name: string, instance: Instance): ChildProcess {
  const s = unitSettings(unitDir, name);
  const env: Record<string, string> = { ...(process.env as Record<string, string>), FLOTILLA_LOG_FORMAT: 'json' };
  for (const f of s.environmentFiles) Object.assign(env, readEnvFile(join(root, f)));
  Object.assign(env, s.environment);
  const [envBin, command, ...args] = s.exec;
  assert.equal(envBin, '/usr/bin/env');
  const child = spawn(process.execPath, [join(ROOT, BINS[command!]!), ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (d: Buffer) => logs.push(...d.toString().split('\n').filter((l) => l !== '').map((l) => `${instance} ${name}: ${l}`)));
  procs.push(child);
  return child;
}

/** portalctl as an operator runs it for one instance: with that instance's env file. */
function portalctl(instance: Instance, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env, ...readEnvFile(join(root, 'etc', 'flotilla', `${instance}.env`)) };
  return spawnSync(process.execPath, [join(ROOT, BINS.portalctl!), ...args], { env, encoding: 'utf8', timeout: 30_000 });
}

function pausedOf(instance: Instance): boolean | undefined {
  const r = portalctl(instance, 'status', '--json');
  const m = /"stream": "clicks",\s*"state": "(\w+)",\s*"paused": (true|false)/.exec(r.stdout);
  return m ? m[2] === 'true' : undefined;
}

/** Sends `n` records to an instance and waits until all are acknowledged (so processed). */
async function sendAcked(instance: Instance, n: number): Promise<void> {
  const sender = senders[instance]!;
  const before = sender.stats.acked;
  for (let i = 0; i < n; i++) sender.send('clicks', { user: `${instance}-${i}` });
  await waitFor(() => `${n} records acknowledged by ${instance} (acked ${sender.stats.acked - before})`, () => sender.stats.acked - before === n, 20_000);
}

before(async () => {
  mkdirSync(unitDir, { recursive: true });
  mkdirSync(join(root, 'etc', 'flotilla'), { recursive: true });
  for (const instance of INSTANCES) installUnits(join(ROOT, 'systemd'), unitDir, instance);
  writeFileSync(join(root, 'sink.py'), SINK);
  for (const instance of INSTANCES) {
    const [agentPort, port] = await freePorts(2);
    // Where RuntimeDirectory=flotilla/<instance> puts the run directory (the map's default, under /run).
    const runDir = join(root, 'run', 'flotilla', instance);
    mkdirSync(runDir, { recursive: true });
    chmodSync(runDir, 0o770);
    const map = join(root, 'etc', 'flotilla', `${instance}.yaml`);
    writeFileSync(
      map,
      stringify(clicksMap({ instance, runDir, agentPort: agentPort!, port: port!, slots: SLOTS })),
    );
    writeFileSync(join(root, 'etc', 'flotilla', `${instance}.env`), `FLOTILLA_MAP=${map}\nFLOTILLA_SERVER=local\nFLOTILLA_COMPONENT_CLICKS=python3 ${join(root, 'sink.py')}\n`);
    startUnit(`flotilla-agent@${instance}.service`, instance);
    startUnit(`flotilla-portal-${instance}@clicks.service`, instance);
    for (let slot = 0; slot < SLOTS; slot++) startUnit(`flotilla-component-${instance}@clicks.${slot}.service`, instance);
    senders[instance] = new Sender({ map });
  }
  for (const instance of INSTANCES) {
    await waitFor(() => `${instance} up (logs:\n${logs.join('\n')})`, () => pausedOf(instance) === false, 30_000, 300);
    await sendAcked(instance, 100);
  }
});

after(async () => {
  for (const s of Object.values(senders)) s.close();
  await stopChildren(procs);
});

for (const [target, other] of [['prod', 'dev'], ['dev', 'prod']] as const) {
  test(`pausing ${target} leaves ${other} running and taking records; resuming ${target} brings it back`, async () => {
    const p = portalctl(target, 'pause', '--wait', '--timeout', '20');
    assert.equal(p.status, 0, p.stderr);
    assert.equal(pausedOf(target), true);
    assert.equal(pausedOf(other), false);
    await sendAcked(other, 200);

    // A record sent to the paused instance waits; it is acknowledged once resumed.
    const sender = senders[target]!;
    const before = sender.stats.acked;
    sender.send('clicks', { user: `${target}-held` });
    const r = portalctl(target, 'resume');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(pausedOf(target), false);
    await waitFor('the held record acknowledged after resume', () => sender.stats.acked === before + 1, 20_000);
    await sendAcked(target, 100);
    assert.equal(pausedOf(other), false);
  });
}

test('every process of both instances ran from its unit and logged each key once per line', () => {
  assert.ok(procs.every((p) => p.exitCode === null), 'all still running');
  const json = logs.map((l) => l.slice(l.indexOf('{'))).filter((l) => l.startsWith('{'));
  assert.ok(json.some((l) => l.includes('slot 1 ready')), 'the portals saw their slots');
  for (const l of json) {
    const keys = topLevelKeys(l);
    assert.deepEqual(keys, [...new Set(keys)], `a key twice in ${l}`);
  }
});
