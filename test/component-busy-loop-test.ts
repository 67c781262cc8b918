/**
 * A component busy-loops in the middle of a delivery: its event loop never turns again, so it
 * sends no heartbeat and no DONE, yet its process is alive.
 *
 *   Sender --> portal "orders" --> slots 0-2: faulty, never fail
 *                              --> slot 3:    faulty, spins --> killed (SIGKILL) --> replaced
 *
 * The agent reports the slot dead within 3 heartbeats of the spin (asked for fresh beacons),
 * `portalctl status` within one more, and the logs say so, while the other slots and the portal
 * carry on. Once it is killed and replaced, every acknowledged record was processed; only the
 * spinning slot processed records again, within the slot window (docs/delivery.md, "Duplicates").
 */
import { strict as assert } from 'node:assert';
import { HEALTH_EXIT } from '../src/agent/problems';
import { type ChildProcess } from 'node:child_process';
import { after, test } from 'node:test';
import { agentStatus, localAgent } from '../src/agent/client';
import type { PortalBeacon } from '../src/protocol/beacons';
import { Sender } from '../src/sender/sender';
import { portalctlAsync, waitAgent, waitFor } from './support/deploy';
import {
  alive,
  assertAllUp,
  exited,
  expectedDead,
  HEARTBEAT_MS,
  oneStream,
  portalctlStatus,
  portalLog,
  portalProc,
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

test('a component busy-loops: its slot is reported dead within 3 heartbeats; killed and replaced, every acked record is processed', async (t) => {
  const d = await oneStream({ agent: true });
  const SPIN_SLOT = 3;
  let spinner: ChildProcess | null = null;
  for (let slot = 0; slot < SLOTS; slot++) {
    const p = startFaulty(d, slot, slot === SPIN_SLOT ? { fault: 'spin', after: 2000 } : undefined);
    if (slot === SPIN_SLOT) spinner = p;
  }
  await d.waitSlotsConnected('orders', SLOTS);
  await waitAgent(d);
  const agent = localAgent(d.runDirOf());

  const KEYS = 300;
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const load = new RoundLoad(sender, 'orders', KEYS, 2);
  let replacement: ChildProcess | null = null;
  let spin: ReturnType<typeof readMarker> | undefined;
  try {
    await waitFor('the component to start spinning', () => {
      try {
        spin = readMarker(d, SPIN_SLOT); // written whole just before the spin
        return true;
      } catch {
        return false;
      }
    });
    assert.equal(spin!.pid, spinner!.pid);
    assert.ok(alive(spinner!), 'it is spinning, not dead');
    // The agent asked for fresh beacons: the first report of "dead" comes as soon as the
    // portal judges the slot silent for 3 heartbeats.
    let deadAt = 0;
    let seen: PortalBeacon['slots'][number] | undefined;
    await waitFor('the agent to report the spinning slot dead', async () => {
      const st = await agentStatus(agent, { fresh: true });
      seen = st.streams[0]!.beacon?.slots[SPIN_SLOT];
      deadAt = Date.now();
      return seen?.state === 'dead';
    }, 20 * HEARTBEAT_MS, 10);
    // It went silent when the spin began (or up to a heartbeat before: its last beat), so it
    // is reported dead 3 heartbeats after the spin began, give or take the polling.
    const detectMs = deadAt - spin!.at;
    process.stderr.write(`# busy loop: reported dead ${detectMs} ms after the spin began (silent ${seen!.silentMs} ms)\n`);
    assert.ok(seen!.silentMs > 3 * HEARTBEAT_MS && seen!.silentMs <= 3 * HEARTBEAT_MS + 100, `silent ${seen!.silentMs} ms when first reported dead; heartbeat ${HEARTBEAT_MS} ms`);
    assert.ok(detectMs <= 3 * HEARTBEAT_MS + 150, `reported dead ${detectMs} ms after the spin began; heartbeat ${HEARTBEAT_MS} ms`);
    assert.equal(seen!.pid, spinner!.pid);
    // The other slots are fine; the portal is up; the dead slot's records wait for it.
    // `portalctl status` (the periodic beacons) says so within one more heartbeat.
    let slots: PortalBeacon['slots'] = [];
    await waitFor('portalctl status to show the slot dead', async () => {
      slots = (await portalctlStatus(d)).streams[0]!.beacon!.slots;
      return slots[SPIN_SLOT]!.state === 'dead';
    }, 10 * HEARTBEAT_MS);
    assert.deepEqual(slots.map((s) => s.state === 'dead'), [false, false, false, true], JSON.stringify(slots));
    assert.ok(slots[SPIN_SLOT]!.inflight > 0, 'the delivery it hangs in is still in flight');
    assert.ok(alive(portalProc(d)));
    const text = await portalctlAsync(['status', '--map', d.mapFile, '--run-dir', d.runDirOf()]);
    assert.match(text.stdout, new RegExp(`orders\\s+running\\s+.*\\s${SPIN_SLOT}:dead$`, 'm'));
    assert.match(text.stdout, new RegExp(`PROBLEM: orders slot ${SPIN_SLOT} is dead: its component \\(pid ${spinner!.pid}\\) is silent for`));
    assert.equal(text.status, HEALTH_EXIT.dead, 'a hung component fails the health check');
    await t.test('the portal or agent logs that the busy-looping slot went silent', async () => {
      await waitFor('a log line about the dead slot', () => slotTroubleLogged(d, SPIN_SLOT, spinner!.pid!), 1000);
    });

    // The operator (or a watchdog) kills it; a fresh component takes the slot.
    spinner!.kill('SIGKILL');
    expectedDead.add(spinner!);
    await waitFor('the spinner to die', () => exited(spinner!));
    replacement = startFaulty(d, SPIN_SLOT);
    await waitFor('the replacement to register', async () => {
      const s = (await d.stats('orders')).slots[SPIN_SLOT]!;
      return s.registrations === 2 && s.pid === replacement!.pid;
    });
    await waitFor('the agent to report the slot alive again', async () => {
      const s = (await agentStatus(agent)).streams[0]!.beacon?.slots[SPIN_SLOT];
      return s !== undefined && s.pid === replacement!.pid && s.state !== 'dead';
    });
    const roundsAtRestart = load.rounds;
    await waitFor('records flowing after the replacement', () => load.rounds > roundsAtRestart + 20);
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.acked, load.sent, 'every record acknowledged');
  const a = checkRecords(d.map, 'orders', slotFiles(d), sentRounds(KEYS, load.rounds));
  assert.deepEqual(a.missing, [], 'every acknowledged record processed');
  assert.deepEqual(a.unexpected, [], 'each at the slot that owns its key; nothing that was not sent');
  assert.deepEqual(a.outOfOrder, [], 'in order per key, once repeated copies are dropped');
  assert.deepEqual(a.duplicatesByFile.slice(0, 3), [0, 0, 0], 'slots that never failed: no duplicates');
  assertRepeatsWithinSlotWindow(a, SPIN_SLOT, spin!.pid, spin!.delivery);
  assert.ok(a.duplicatesByFile[SPIN_SLOT]! >= spin!.processed);
  process.stderr.write(`# busy loop: ${load.sent} records, duplicates per slot ${JSON.stringify(a.duplicatesByFile)}\n`);

  const stats = await assertAllUp(d);
  assert.deepEqual(stats.slots.map((s) => s.registrations), [1, 1, 1, 2]);
  assert.equal(stats.queuedRecords, 0);
  await waitFor('the portal log to show the slot taken over by the replacement', () =>
    portalLog(d).some((l) => l.includes(`slot ${SPIN_SLOT} ready (pid ${replacement!.pid})`)),
  );
});
