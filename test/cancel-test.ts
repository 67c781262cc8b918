/**
 * Cancellation out of band, end to end (docs/protocol.md, "Cancellation"):
 *
 *   Sender --orders: roots A and B--> portal: slots 0, 1 slow (queued), slots 2, 3 missing (held)
 *          --audits: roots A and B--> portal, paused with a spool (spooled)
 *   portalctl cancel orders A --> agent (cancels.json) --> both portals --CANCEL--> components
 *
 * Root A's records that waited (queued, held, spooled) are dropped and counted, never processed;
 * the sender sees them acknowledged as cancelled; no A record is processed after the cancel
 * returned; root B's records are each processed once, in order per key. Records of A sent later
 * are dropped where they arrive. A cancellation issued while a portal is down takes effect when it
 * starts (its agent keeps it).
 */
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import { bucketOf, slotOf } from '../src/map/bucket';
import { portalRequest, portalStats } from '../src/portal/client';
import { Sender } from '../src/sender/sender';
import { deploy, portalctlAsync, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';
import { join } from 'node:path';

const ROOT = (c: string) => c.repeat(32);
const KEYS = 40;
const ROUNDS = 10;
let d: Deployment;
const files = (stream: string) => [0, 1, 2, 3].map((s) => d.outOf(stream, s));
const stats = (stream: string) => portalStats(d.runDirOf(), stream, 5000);
const cancelled = async (stream: string) => (await stats(stream)).cancelled?.dropped ?? 0;
const skipped = async (stream: string) => (await stats(stream)).cancelled?.skipped ?? 0;
const cancel = (root: string) => portalctlAsync(['cancel', 'orders', root, '--map', d.mapFile, '--run-dir', d.runDirOf(), '--ttl', '10m']);
const sendRounds = (sender: Sender, stream: string, prefix: string, root: string, from: number, to: number) => {
  for (let q = from; q < to; q++) for (let k = 0; k < KEYS; k++) sender.send(stream, { key: `${prefix}${k}`, seq: q }, [root, 'test/gen/0']);
};

before(async () => {
  const ports = await freePorts(2);
  d = deploy({
    instance: 'test',
    epoch: 1,
    heartbeat_ms: 200,
    servers: [{ name: 'solo', host: '127.0.0.1' }],
    streams: [
      { name: 'orders', key: 'key', port: ports[0], buckets: 64, slots: 4, schema: RECORD_SCHEMA('Order') },
      { name: 'audits', key: 'key', port: ports[1], buckets: 64, slots: 4, schema: RECORD_SCHEMA('Audit'), spool: { mode: 'spill' } },
    ],
  });
  startAgent(d);
  d.startPortal('orders');
  d.startPortal('audits');
  await waitAgent(d);
  // orders: slots 0 and 1 slow (their records queue), 2 and 3 missing for now (theirs are held).
  for (const slot of [0, 1]) d.startRecorder('orders', slot, { delayMs: 400, args: ['--honor-cancel'] });
  for (const slot of [0, 1, 2, 3]) d.startRecorder('audits', slot, { args: ['--honor-cancel'] });
  await d.waitSlotsConnected('orders', 2);
  await d.waitSlotsConnected('audits', 4);
});

after(async () => {
  await d?.stop();
});

test('a cancellation drops the queued, held and spooled records of its root, and later ones, and nothing else', async () => {
  const A = ROOT('a');
  const B = ROOT('b');
  await portalRequest(d.runDirOf(), 'audits', { cmd: 'pause' }, 5000);
  const sender = new Sender({ map: d.mapFile, lingerMs: 5, batchRecords: 100 });
  try {
    // Each round of A, then of B: every delivery holds records of both roots.
    for (const stream of ['orders', 'audits']) {
      for (let q = 0; q < ROUNDS; q++) {
        sendRounds(sender, stream, 'a-k', A, q, q + 1);
        sendRounds(sender, stream, 'b-k', B, q, q + 1);
      }
    }
    const total = 2 * KEYS * ROUNDS;
    await waitFor('orders to take every record', async () => (await stats('orders')).recordsIn === total);
    await waitFor('audits to spool every record', async () => (await stats('audits')).spool?.records === total);

    const busy = (await stats('orders')).slots.filter((x) => x.slot < 2 && x.inflight > 0).length;
    assert.equal(busy, 2, 'slots 0 and 1 have records of A in flight when the cancel is issued');
    const reply = await cancel(A);
    const ackedAt = Date.now();
    assert.equal(reply.status, 0, reply.stderr);
    assert.match(reply.stdout, new RegExp(`solo: ${A} cancelled until`));

    // Held: every record of A whose key belongs to the missing slots 2 and 3 was dropped.
    const s = d.map.streams.find((x) => x.name === 'orders')!;
    const heldA = Array.from({ length: KEYS }, (_, k) => `a-k${k}`).filter((key) => slotOf(bucketOf(key, s.buckets), s.slots) >= 2).length * ROUNDS;
    assert.ok(heldA > 0);
    assert.ok((await cancelled('orders')) >= heldA, `orders dropped ${await cancelled('orders')}, at least the ${heldA} held`);

    d.startRecorder('orders', 2, { args: ['--honor-cancel'] });
    d.startRecorder('orders', 3, { args: ['--honor-cancel'] });
    await portalRequest(d.runDirOf(), 'audits', { cmd: 'resume' }, 5000);

    // Later records of A are dropped where they arrive, and acknowledged as cancelled.
    await sender.flush();
    const before = { acked: sender.stats.cancelled, dropped: await cancelled('orders'), skipped: await skipped('orders') };
    sendRounds(sender, 'orders', 'a-k', A, ROUNDS, ROUNDS + 1);
    await sender.flush();
    assert.equal(sender.stats.cancelled - before.acked, KEYS, 'late records of A acknowledged as cancelled');
    assert.equal((await cancelled('orders')) - before.dropped, KEYS, 'late records of A dropped at the portal');
    assert.equal(await skipped('orders'), before.skipped, 'none of them reached a component');

    // Root B: every record processed once, in order per key, on both streams.
    const sentB = sentRounds(KEYS, ROUNDS, 'b-k');
    const onlyB = (key: string) => key.startsWith('b-');
    await waitFor('every B record processed', () => ['orders', 'audits'].every((st) => readRecorded(files(st), onlyB).length >= KEYS * ROUNDS));
    for (const st of ['orders', 'audits']) assertExactlyOnceInOrder(d.map, st, files(st), sentB, { only: onlyB });

    // Root A: nothing processed after the cancel returned; what was not processed was counted.
    const aRows = (st: string) => readRecorded(files(st), (key) => key.startsWith('a-'));
    const late = aRows('orders').filter((r) => r.at >= ackedAt);
    assert.deepEqual(late.map((r) => `${r.key}#${r.seq}@${r.at}`), [], 'no record of A processed after the cancel was acknowledged');
    assert.equal(aRows('audits').length, 0, 'no spooled record of A processed');
    assert.ok((await skipped('orders')) > 0, 'the components skipped the records of A delivered to them and not begun');
    await waitFor('audits to drop the spooled records of A as it reads them back', async () => (await cancelled('audits')) === KEYS * ROUNDS);
    const ordersDropped = (await cancelled('orders')) + (await skipped('orders'));
    assert.equal(sender.stats.cancelled, ordersDropped, 'every record orders dropped (or its components skipped) was acknowledged to the sender as cancelled');
    assert.ok(aRows('orders').length + ordersDropped <= KEYS * (ROUNDS + 1));
    assert.equal(sender.stats.acked, sender.stats.records, 'every record acknowledged');
    const st = await stats('orders');
    assert.equal(st.cancelled?.inForce, 1);
    // Deliveries cut by the cancellation gave their bytes back: with everything processed, the
    // portal holds nothing (a leak would close ingress once it reached max_queued_bytes).
    await waitFor('orders to hold no bytes once everything is processed', async () => {
      const s = await stats('orders');
      return s.queuedRecords === 0 && s.limits.queuedBytes === 0 && s.slots.every((x) => (x.bytes ?? 0) === 0);
    });
  } finally {
    sender.close();
  }
});

test('a cancellation issued while a portal is down takes effect when it starts', async () => {
  const C = ROOT('c');
  const D = ROOT('d');
  const portal = d.procs.find((p) => p.spawnargs.includes('orders') && p.spawnargs.some((a) => a.endsWith(join('portal', 'main.js'))))!;
  portal.kill('SIGKILL');
  await waitFor('the orders portal to die', () => portal.signalCode === 'SIGKILL');
  const reply = await cancel(C);
  assert.equal(reply.status, 0, reply.stderr);
  assert.match(reply.stdout, /orders: not reached now: .*cancels\.json when it starts/);
  d.startPortal('orders');
  await d.waitSlotsConnected('orders', 4);
  const sender = new Sender({ map: d.mapFile, lingerMs: 5, batchRecords: 100 });
  try {
    sendRounds(sender, 'orders', 'c-k', C, 0, 2);
    sendRounds(sender, 'orders', 'd-k', D, 0, 2);
    await sender.flush();
    assert.equal(sender.stats.cancelled, 2 * KEYS, 'the records of C acknowledged as cancelled');
    assert.equal(await cancelled('orders'), 2 * KEYS, 'dropped at the portal that restarted (its counts start again)');
    const onlyD = (key: string) => key.startsWith('d-');
    await waitFor('every D record processed', () => readRecorded(files('orders'), onlyD).length >= 2 * KEYS);
    assertExactlyOnceInOrder(d.map, 'orders', files('orders'), sentRounds(KEYS, 2, 'd-k'), { only: onlyD });
    assert.equal(readRecorded(files('orders'), (key) => key.startsWith('c-')).length, 0, 'no record of C processed');
    assert.equal((await stats('orders')).cancelled?.inForce, 2, 'A (from before the restart) and C in force');
  } finally {
    sender.close();
  }
});

test("a cancellation that drops whole queued deliveries never takes a slot's records-in count down", async () => {
  const E = ROOT('e');
  const sender = new Sender({ map: d.mapFile, lingerMs: 5, batchRecords: 100 });
  try {
    // Only records of E: slots 0 and 1 (400 ms a delivery) queue whole deliveries of E.
    sendRounds(sender, 'orders', 'e-k', E, 0, 20);
    const slowQueued = async () => (await stats('orders')).slots.filter((x) => x.slot < 2 && x.queued > 0).length;
    await waitFor('slots 0 and 1 to queue records of E', async () => (await slowQueued()) === 2);
    const routedOf = async () => new Map((await stats('orders')).slots.map((x) => [x.slot, x.routed]));
    const before = await routedOf();
    const reply = await cancel(E);
    assert.equal(reply.status, 0, reply.stderr);
    await waitFor('the queued deliveries of E to be dropped', async () => (await slowQueued()) === 0);
    const after = await routedOf();
    for (const [slot, n] of before) assert.ok(after.get(slot)! >= n, `slot ${slot}: records in went from ${n} to ${after.get(slot)} (flotilla_slot_records_in_total is a counter)`);
    await sender.flush();
  } finally {
    sender.close();
  }
});
