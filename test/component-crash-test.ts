/**
 * Components crash in the middle of a delivery, one with process.exit (a crash it saw coming),
 * one killed with SIGKILL (one it did not), under a steady load, and are restarted:
 *
 *   Sender --> portal "orders" --> slot 0: faulty, never fails
 *                              --> slot 1: faulty, SIGKILL mid-delivery --> restarted
 *                              --> slot 2: faulty, exit(3) mid-delivery --> restarted
 *                              --> slot 3: faulty, never fails
 *
 * Until the restart, the agent and `portalctl status` report both slots dead, holding their
 * records, and the logs say so. Afterwards every acknowledged record was processed, in order per
 * key once repeated copies are dropped; only the crashed slots processed records again, and only
 * those of the deliveries their dead process had not answered DONE for (docs/delivery.md,
 * "Duplicates").
 */
import { strict as assert } from 'node:assert';
import { type ChildProcess } from 'node:child_process';
import { after, test } from 'node:test';
import { agentStatus, localAgent } from '../src/agent/client';
import { Sender } from '../src/sender/sender';
import { portalctlAsync, waitAgent, waitFor } from './support/deploy';
import {
  assertAllUp,
  exited,
  expectedDead,
  HEARTBEAT_MS,
  logText,
  oneStream,
  portalctlStatus,
  portalLog,
  readMarker,
  slotFiles,
  SLOTS,
  slotTroubleLogged,
  startFaulty,
  stopDeployments,
} from './support/failures';
import { RoundLoad } from './support/flows';
import { assertRepeatsWithinSlotWindow, checkRecords, sentRounds } from './support/records';

after(stopDeployments);

test('components crash mid-delivery (exit, SIGKILL) and restart: every acked record processed, in order per key, duplicates within the slot window', async (t) => {
  const d = await oneStream({ agent: true });
  const CRASH = { 1: 'kill', 2: 'exit' } as const;
  const crashers = new Map<number, ChildProcess>();
  for (let slot = 0; slot < SLOTS; slot++) {
    const fault = CRASH[slot as 1 | 2];
    const p = startFaulty(d, slot, fault ? { fault, after: 1500 + 100 * slot } : undefined);
    if (fault) crashers.set(slot, p);
  }
  await d.waitSlotsConnected('orders', SLOTS);
  await waitAgent(d);

  const KEYS = 300;
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const load = new RoundLoad(sender, 'orders', KEYS, 2);
  const restarted = new Map<number, ChildProcess>();
  try {
    for (const [slot, p] of crashers) {
      await waitFor(`slot ${slot}'s component to crash`, () => exited(p));
      expectedDead.add(p);
      const m = readMarker(d, slot);
      assert.equal(m.pid, p.pid);
      assert.ok(m.processed > 0 && m.processed < m.records, 'it crashed mid-delivery');
      if (CRASH[slot as 1 | 2] === 'kill') assert.equal(p.signalCode, 'SIGKILL');
      else assert.equal(p.exitCode, 3);
    }
    // Before the restart, status says so: both slots dead (silent for 3 heartbeats), holding
    // their records; the portal and the other slots carry on.
    await waitFor('the agent to report slots 1 and 2 dead', async () => {
      const st = await agentStatus(localAgent(d.runDirOf()));
      const slots = st.streams[0]!.beacon?.slots ?? [];
      return slots[1]?.state === 'dead' && slots[2]?.state === 'dead';
    }, 10 * HEARTBEAT_MS);
    const st = await portalctlStatus(d);
    const slots = st.streams[0]!.beacon!.slots;
    assert.deepEqual(slots.map((s) => s.state === 'dead'), [false, true, true, false], JSON.stringify(slots));
    for (const s of [1, 2]) {
      assert.equal(slots[s]!.pid, crashers.get(s)!.pid, 'status names the pid that died');
      assert.ok(slots[s]!.queued + slots[s]!.inflight > 0, `slot ${s} holds records for its component`);
      assert.ok(slots[s]!.silentMs > 3 * HEARTBEAT_MS);
    }
    const text = await portalctlAsync(['status', '--map', d.mapFile, '--run-dir', d.runDirOf()]);
    assert.match(text.stdout, /orders\s+running\s+.*\s0:\S+ 1:dead 2:dead 3:\S+$/m);
    await t.test('the portal or agent logs that slots 1 and 2 lost their components', async () => {
      await waitFor('a log line about the dead slots', () => [1, 2].every((s) => slotTroubleLogged(d, s, crashers.get(s)!.pid!)), 1000);
    });

    // systemd would restart them: here the test does.
    for (const slot of crashers.keys()) restarted.set(slot, startFaulty(d, slot));
    await waitFor('the restarted components to register', async () => {
      const s = await d.stats('orders');
      return [1, 2].every((i) => s.slots[i]!.registrations === 2 && s.slots[i]!.pid === restarted.get(i)!.pid);
    });
    const roundsAtRestart = load.rounds;
    await waitFor('records flowing after the restart', () => load.rounds > roundsAtRestart + 20);
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.acked, load.sent, 'every record acknowledged');
  assert.equal(sender.stats.refused, 0);

  const a = checkRecords(d.map, 'orders', slotFiles(d), sentRounds(KEYS, load.rounds));
  assert.deepEqual(a.missing, [], 'every acknowledged record processed');
  assert.deepEqual(a.unexpected, [], 'each at the slot that owns its key; nothing that was not sent');
  assert.deepEqual(a.outOfOrder, [], 'in order per key, once repeated copies are dropped');
  assert.equal(a.duplicatesByFile[0], 0, 'slot 0 never failed: no duplicates');
  assert.equal(a.duplicatesByFile[3], 0, 'slot 3 never failed: no duplicates');
  for (const [slot, p] of crashers) {
    const m = readMarker(d, slot);
    assertRepeatsWithinSlotWindow(a, slot, p.pid!, m.delivery);
    // At least the part of the delivery it crashed in comes again.
    assert.ok(a.duplicatesByFile[slot]! >= m.processed, `slot ${slot}: ${a.duplicatesByFile[slot]} duplicates, its crash left ${m.processed} processed without DONE`);
  }
  process.stderr.write(`# crash: ${load.sent} records, duplicates per slot ${JSON.stringify(a.duplicatesByFile)}\n`);

  const stats = await assertAllUp(d);
  assert.deepEqual(stats.slots.map((s) => s.registrations), [1, 2, 2, 1], 'registrations show the restarts');
  assert.equal(stats.queuedRecords, 0);
  assert.equal(stats.recordsOut, stats.recordsIn);
  // The log: the crashes themselves (the component's last words, on its stderr) and the portal
  // taking each slot over for the new process.
  for (const [slot, p] of crashers) assert.match(logText(d), new RegExp(`faulty: slot ${slot} pid ${p.pid}: ${CRASH[slot as 1 | 2]} in delivery`));
  for (const [slot, p] of restarted) {
    await waitFor(`the portal log to show slot ${slot} registering again`, () =>
      portalLog(d).some((l) => l.includes(`slot ${slot} ready (pid ${p.pid})`)),
    );
  }
});
