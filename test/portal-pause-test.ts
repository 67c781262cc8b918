/**
 * Pausing a portal under load, at the portal itself (the agent and portalctl drive the same
 * requests):
 *
 *   Sender --(PAUSED: hold)--> paused portal --> 4 recorder slots drain, then nothing
 *
 * Processing stops within one heartbeat interval and the portal reports idle; the pause
 * survives a SIGKILL and restart of the portal; after resume every record is processed exactly
 * once, in order per key.
 */
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import { portalRequest } from '../src/portal/client';
import type { PortalBeacon } from '../src/protocol/beacons';
import { Sender } from '../src/sender/sender';
import { deploy, waitFor, type Deployment } from './support/deploy';
import { twoStreamMap, RoundLoad } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';

const HEARTBEAT_MS = 200;
let d: Deployment;
const files = () => [0, 1, 2, 3].map((s) => d.outOf('orders', s));
const processed = () => readRecorded(files()).length;
const beacon = () => portalRequest(d.runDirOf(), 'orders', { cmd: 'beacon' });
const request = (cmd: 'pause' | 'resume') => portalRequest(d.runDirOf(), 'orders', { cmd });

before(async () => {
  d = deploy(twoStreamMap(await freePorts(2), { heartbeat_ms: HEARTBEAT_MS }));
  d.startPortal('orders');
  for (let slot = 0; slot < 4; slot++) d.startRecorder('orders', slot);
  await d.waitSlotsConnected('orders', 4);
});

after(async () => {
  await d?.stop();
});

test('pause under load: processing stops within a heartbeat, survives a portal restart, and resume loses nothing', async () => {
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const KEYS = 200;
  const load = new RoundLoad(sender, 'orders', KEYS, 2);
  try {
    await waitFor('records flowing', () => processed() > 2000);
    assert.deepEqual(await request('pause'), { ok: true, paused: true });
    const pausedAt = Date.now();
    await waitFor('the portal to report idle', async () => (await beacon()).idle, 10_000);
    assert.ok(Date.now() - pausedAt < 2 * HEARTBEAT_MS + 500, `idle ${Date.now() - pausedAt} ms after pause`);
    const atIdle = processed();
    // Two more intervals with the sender holding: nothing is processed while paused.
    await new Promise((r) => setTimeout(r, 2 * HEARTBEAT_MS)); // an interval to observe, not a wait for a condition
    assert.ok(sender.pending > 0, 'the sender holds records');
    assert.equal(processed(), atIdle, 'no record processed while paused');
    const b = await beacon();
    assert.equal(b.paused, true);
    assert.ok(b.slots.every((s) => s.state === 'idle'), JSON.stringify(b.slots));

    // The portal dies and comes back: still paused. (First let the last ACKs reach the sender:
    // a batch processed but not yet acknowledged would be sent again after the restart, and
    // this test asserts exactly once.)
    await waitFor('every processed record acknowledged', () => sender.stats.acked === processed());
    d.procs[0]!.kill('SIGKILL');
    await waitFor('the portal to die', () => d.procs[0]!.signalCode === 'SIGKILL');
    d.procs[0] = d.startPortal('orders');
    await d.waitSlotsConnected('orders', 4);
    assert.equal((await beacon()).paused, true, 'paused after a restart');
    assert.equal(processed(), atIdle, 'still nothing processed');

    assert.deepEqual(await request('resume'), { ok: true, paused: false });
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.acked, load.sent);
  // Exactly once: the portal restart happened while nothing was in flight.
  assertExactlyOnceInOrder(d.map, 'orders', files(), sentRounds(KEYS, load.rounds));
});
