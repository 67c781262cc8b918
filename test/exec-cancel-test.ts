/**
 * Cancellation through portal-exec (docs/components.md, "Records: the program's stdin"):
 *
 *   portalctl cancel orders A --> agent --> orders portal --CANCEL--> 4 x portal-exec --{"cancel"} line--> python3
 *   Sender --orders (roots A, B)--> portal-exec --python3 relay--> audits recorders
 *
 * With --cancel-lines each program gets the cancellation as a documented JSON line, out of band
 * between record lines; records of the cancelled root sent later never reach a program, and the
 * others are relayed once, in order per key.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Sender } from '../src/sender/sender';
import { deploy, DIST, portalctlAsync, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { twoStreamMap } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';

const EXEC = join(DIST, 'portal', 'exec.js');
const RELAY = join(DIST, '..', 'test', 'fixtures', 'exec-relay.py');
const SLOTS = [0, 1, 2, 3];
const KEYS = 20;
let d: Deployment | undefined;

after(async () => {
  await d?.stop();
});

test('portal-exec --cancel-lines gives the program the cancellation as a JSON line; later records of the root never reach it', async () => {
  const dep = (d = deploy(twoStreamMap(await freePorts(2), { heartbeat_ms: 200 })));
  startAgent(dep);
  dep.startPortal('orders');
  dep.startPortal('audits');
  await waitAgent(dep);
  for (const slot of SLOTS) dep.startRecorder('audits', slot);
  const cancels = (slot: number) => join(dep.dir, `cancels-${slot}.jsonl`);
  for (const slot of SLOTS) {
    const args = ['--map', dep.mapFile, '--server', 'solo', '--stream', 'orders', '--slot', String(slot), '--run-dir', dep.runDirOf(), '--cancel-lines'];
    dep.startComponent(EXEC, [...args, '--', 'python3', RELAY, '--emit', 'audits', '--cancels', cancels(slot)]);
  }
  await dep.waitSlotsConnected('orders', 4);
  await dep.waitSlotsConnected('audits', 4);

  const A = 'a'.repeat(32);
  const B = 'b'.repeat(32);
  const r = await portalctlAsync(['cancel', 'orders', A, '--map', dep.mapFile, '--run-dir', dep.runDirOf()]);
  assert.equal(r.status, 0, r.stderr);
  // portal-exec wrote the line before the cancel returned; the program reads it in its own time.
  const lines = (slot: number) => (existsSync(cancels(slot)) ? readFileSync(cancels(slot), 'utf8').split('\n').filter(Boolean) : []);
  await waitFor('every program to get the cancellation line', () => SLOTS.every((slot) => lines(slot).length > 0));
  for (const slot of SLOTS) assert.deepEqual(lines(slot).map((l) => JSON.parse(l) as unknown), [{ cancel: { roots: [A] } }], `slot ${slot}'s program got the cancellation line`);

  const sender = new Sender({ map: dep.mapFile, lingerMs: 2 });
  try {
    for (let q = 0; q < 3; q++) {
      for (let k = 0; k < KEYS; k++) {
        sender.send('orders', { key: `a-k${k}`, seq: q }, [A, 'test/gen/0']);
        sender.send('orders', { key: `b-k${k}`, seq: q }, [B, 'test/gen/0']);
      }
    }
    await sender.flush();
    assert.equal(sender.stats.cancelled, 3 * KEYS, 'the records of A acknowledged as cancelled');
  } finally {
    sender.close();
  }
  const files = SLOTS.map((s) => dep.outOf('audits', s));
  await waitFor('every B record relayed', () => readRecorded(files, (key) => key.startsWith('b-')).length >= 3 * KEYS);
  assertExactlyOnceInOrder(dep.map, 'audits', files, sentRounds(KEYS, 3, 'b-k'), { only: (key) => key.startsWith('b-') });
  assert.equal(readRecorded(files, (key) => key.startsWith('a-')).length, 0, 'no record of A reached a program');
});
