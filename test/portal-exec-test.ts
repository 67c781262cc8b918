/**
 * portal-exec end to end: a Python program (test/fixtures/exec-relay.py) as the component of
 * every slot of `orders`, relaying each record onto `audits`, where recorder components take it.
 *
 *   sender --tcp--> orders portal --ipc--> 4 x portal-exec <--stdin/stdout--> python3
 *                                                  \--emit--> audits portal --ipc--> 4 recorders
 */
import { strict as assert } from 'node:assert';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, test } from 'node:test';
import { Sender } from '../src/sender/sender';
import { deploy, DIST, type Deployment, waitFor } from './support/deploy';
import { twoStreamMap } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, sentRounds } from './support/records';

const EXEC = join(DIST, 'portal', 'exec.js');
const RELAY = join(DIST, '..', 'test', 'fixtures', 'exec-relay.py');
const SLOTS = [0, 1, 2, 3];

let d: Deployment | undefined;

afterEach(async () => {
  await d?.stop();
  if (process.env.FLOTILLA_TEST_LOGS && d) process.stderr.write(d.logs.join(''));
  d = undefined;
});

/** A running portal-exec and everything it (and its program) wrote to stderr. */
interface Exec {
  proc: ChildProcess;
  stderr: string[];
}

function startExec(dep: Deployment, slot: number, relayArgs: string[]): Exec {
  const args = ['--map', dep.mapFile, '--server', 'solo', '--stream', 'orders', '--slot', String(slot), '--run-dir', dep.runDirOf()];
  const proc = dep.startComponent(EXEC, [...args, '--', 'python3', RELAY, '--emit', 'audits', ...relayArgs]);
  const stderr: string[] = [];
  proc.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
  return { proc, stderr };
}

/** Starts both portals, the recorders of `audits`, and portal-exec on every slot of `orders`. */
async function relayDeployment(relayArgs: (slot: number) => string[]): Promise<{ dep: Deployment; execs: Exec[] }> {
  const dep = (d = deploy(twoStreamMap(await freePorts(2))));
  dep.startPortal('orders');
  dep.startPortal('audits');
  for (const slot of SLOTS) dep.startRecorder('audits', slot);
  const execs = SLOTS.map((slot) => startExec(dep, slot, relayArgs(slot)));
  await dep.waitSlotsConnected('orders', 4);
  await dep.waitSlotsConnected('audits', 4);
  return { dep, execs };
}

/** Sends `perKey` records to each of `keys` keys on `orders`, key by key in seq order. */
function sendAll(sender: Sender, keys: number, perKey: number): Promise<void> {
  return (async () => {
    for (let q = 0; q < perKey; q++) {
      for (let k = 0; k < keys; k++) {
        if (!sender.send('orders', { key: `k${k}`, seq: q })) await sender.writable();
      }
    }
  })();
}

const exited = (p: ChildProcess) => p.exitCode !== null || p.signalCode !== null;

/** The JSON log lines of a process's stderr (pino), skipping anything else. */
function logLines(stderr: string[]): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of stderr.join('').split('\n')) {
    try {
      const v: unknown = JSON.parse(line);
      if (typeof v === 'object' && v !== null) out.push(v as Record<string, unknown>);
    } catch {
      // the program's own stderr, passed through
    }
  }
  return out;
}

test('a Python component on every slot: each record relayed once, by the owning slot, in order per key', async () => {
  const KEYS = 300;
  const PER_KEY = 10;
  const outOf = (slot: number) => join(d!.dir, `exec-orders-${slot}.log`);
  const { dep } = await relayDeployment((slot) => ['--out', outOf(slot)]);
  const sender = new Sender({ map: dep.mapFile });
  await sendAll(sender, KEYS, PER_KEY);
  await sender.flush();
  sender.close();
  assert.equal(sender.stats.acked, KEYS * PER_KEY);
  assert.equal(sender.stats.refused, 0);
  // portal-exec acknowledges a delivery only once the program acked it and its emits were
  // acknowledged by the audits portal, so both hops are complete here.
  assertExactlyOnceInOrder(dep.map, 'orders', SLOTS.map(outOf), sentRounds(KEYS, PER_KEY));
  const audits = SLOTS.map((slot) => dep.outOf('audits', slot));
  assertExactlyOnceInOrder(dep.map, 'audits', audits, sentRounds(KEYS, PER_KEY));
});

test('lines that are not protocol messages are counted and logged; the records still flow', async () => {
  const KEYS = 50;
  const PER_KEY = 10;
  const { dep, execs } = await relayDeployment(() => ['--junk', '--ack-each']);
  const sender = new Sender({ map: dep.mapFile });
  await sendAll(sender, KEYS, PER_KEY);
  await sender.flush();
  sender.close();
  assert.equal(sender.stats.acked, KEYS * PER_KEY);
  const audits = SLOTS.map((slot) => dep.outOf('audits', slot));
  assertExactlyOnceInOrder(dep.map, 'audits', audits, sentRounds(KEYS, PER_KEY));

  // SIGTERM: a clean stop, exit 0, with the totals in the last log line.
  for (const e of execs) e.proc.kill('SIGTERM');
  // Output can still be in the pipe when 'exit' fires: wait for the closing line too.
  await waitFor('every portal-exec to exit and log its totals', () => execs.every((e) => exited(e.proc) && e.stderr.join('').includes('stopped after')), 10_000);
  let notJson = 0;
  let notMessage = 0;
  for (const e of execs) {
    assert.equal(e.proc.exitCode, 0, `portal-exec exit code; its log:\n${e.stderr.join('')}`);
    const logs = logLines(e.stderr);
    assert.ok(logs.some((l) => l.cause === 'NOT_JSON'), 'the first junk line is logged at once');
    const totals = logs.find((l) => typeof l.msg === 'string' && l.msg.includes('stopped after'));
    assert.ok(totals, `a closing line with totals; log:\n${e.stderr.join('')}`);
    const ignored = totals.ignored as Record<string, number>;
    notJson += ignored.NOT_JSON ?? 0;
    notMessage += ignored.NOT_A_MESSAGE ?? 0;
  }
  assert.equal(notJson, KEYS * PER_KEY, 'one non-JSON line per record, all counted');
  assert.equal(notMessage, KEYS * PER_KEY, 'one JSON line that is no message per record, all counted');
});

test('a program that exits takes portal-exec down with its exit code logged; a restart gets the records again', async () => {
  const KEYS = 40;
  const PER_KEY = 5;
  const { dep, execs } = await relayDeployment(() => ['--exit-code', '7']);
  const sender = new Sender({ map: dep.mapFile });
  const sending = sendAll(sender, KEYS, PER_KEY);
  await waitFor('every portal-exec to exit and log why', () => execs.every((e) => exited(e.proc) && e.stderr.join('').includes('exit code 7')), 15_000);
  for (const e of execs) {
    assert.notEqual(e.proc.exitCode, 0, 'portal-exec exits non-zero');
    const died = logLines(e.stderr).find((l) => l.code === 7);
    assert.ok(died, `the program's exit code is logged; log:\n${e.stderr.join('')}`);
    assert.match(String(died.msg), /exit code 7/);
  }

  // What the dead programs had been given is still the portal's: new ones get it all.
  for (const slot of SLOTS) startExec(dep, slot, []);
  await sending;
  await sender.flush();
  sender.close();
  assert.equal(sender.stats.acked, KEYS * PER_KEY);
  const audits = SLOTS.map((slot) => dep.outOf('audits', slot));
  assertExactlyOnceInOrder(dep.map, 'audits', audits, sentRounds(KEYS, PER_KEY));
});
