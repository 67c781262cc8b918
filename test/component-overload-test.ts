/**
 * Components overloaded: three senders push as fast as they can at four components that take
 * 50 ms a delivery, for 5 s.
 *
 *   3 Senders (full windows) --> portal "orders" (stops reading at 200,000 queued) --> 4 slow recorders
 *
 * The portal's queue and memory stay bounded (it stops reading from its senders at its bound),
 * the senders are slowed to the components' pace (send() says the window is full, writable()
 * waits) and never run further ahead than their windows, status shows every slot busy, and once
 * the load stops every acknowledged record was processed exactly once, in order per key.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { portalRequest } from '../src/portal/client';
import { DEFAULT_MAX_QUEUED_RECORDS } from '../src/portal/portal';
import type { PortalBeacon } from '../src/protocol/beacons';
import { DEFAULT_BATCH_RECORDS, Sender } from '../src/sender/sender';
import { assertAllUp, oneStream, portalProc, slotFiles, SLOTS, stopDeployments } from './support/failures';
import { assertExactlyOnceInOrder, readRecorded, type Sent, sentRounds } from './support/records';

after(stopDeployments);

/** Resident set size of a process, from /proc, in MiB. */
function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

test('components overloaded by senders pushing far more: portal queue and memory stay bounded, senders are slowed, nothing acked is lost', async () => {
  const DELAY_MS = 50;
  const d = await oneStream();
  for (let slot = 0; slot < SLOTS; slot++) d.startRecorder('orders', slot, { delayMs: DELAY_MS });
  await d.waitSlotsConnected('orders', SLOTS);
  const portalPid = portalProc(d).pid!;
  const rssBefore = rssMiB(portalPid);
  const window = d.map.streams[0]!.window;

  // Three senders, each as fast as it can: together they may hold 3 x window x 8192 records
  // in flight, well over the portal's 200,000, so the portal's own bound is reached too.
  const SENDERS = 3;
  const KEYS = DEFAULT_BATCH_RECORDS / 2;
  const LOAD_MS = 5000;
  // A linger long enough for two rounds to fill a batch: full-size batches, as a sender that
  // has more to send than the portal takes would make.
  const senders = Array.from({ length: SENDERS }, () => new Sender({ map: d.mapFile, lingerMs: 20 }));
  const loads = senders.map(() => ({ rounds: 0, falses: 0, blockedMs: 0 }));
  let loading = true;
  const loops = senders.map(async (sender, i) => {
    const l = loads[i]!;
    while (loading) {
      let full = false;
      for (let k = 0; k < KEYS; k++) if (!sender.send('orders', { key: `s${i}-k${k}`, seq: l.rounds })) full = true;
      l.rounds++;
      if (full) {
        l.falses++;
        const t0 = performance.now();
        await sender.writable();
        l.blockedMs += performance.now() - t0;
      } else await new Promise((r) => setImmediate(r));
    }
  });
  const processed = () => readRecorded(slotFiles(d)).length;
  let maxQueued = 0;
  let maxRss = 0;
  let readingPausedSeen = 0;
  let maxGap = 0;
  let samples = 0;
  let busyBeacon: PortalBeacon | null = null;
  const started = Date.now();
  try {
    while (Date.now() - started < LOAD_MS) {
      const s = await d.stats('orders');
      samples++;
      maxQueued = Math.max(maxQueued, s.queuedRecords);
      if (s.readingPaused) readingPausedSeen++;
      maxRss = Math.max(maxRss, rssMiB(portalPid));
      // How far the senders ran ahead of the components: bounded by their windows.
      const sent = loads.reduce((n, l) => n + l.rounds * KEYS, 0);
      maxGap = Math.max(maxGap, sent - s.recordsOut);
      if (!busyBeacon && Date.now() - started > LOAD_MS / 2) busyBeacon = await portalRequest(d.runDirOf(), 'orders', { cmd: 'beacon' });
      await new Promise((r) => setTimeout(r, 100)); // the sampling period, not a wait for a condition
    }
    loading = false;
    await Promise.all(loops);
    await Promise.all(senders.map((s) => s.flush()));
  } finally {
    loading = false;
    for (const s of senders) s.close();
  }
  const loadMs = Date.now() - started;
  const sent = loads.reduce((n, l) => n + l.rounds * KEYS, 0);
  process.stderr.write(
    `# overload: ${sent} records in ${loadMs} ms (${samples} samples); max queued ${maxQueued}, reading paused in ${readingPausedSeen} samples; ` +
      `portal RSS ${rssBefore.toFixed(0)} -> max ${maxRss.toFixed(0)} MiB; senders ran ahead by at most ${maxGap}; ` +
      `blocked ${loads.map((l) => `${((100 * l.blockedMs) / LOAD_MS).toFixed(0)}%`).join(' ')} of the load time\n`,
  );

  // The portal's queue: it stops reading above 200,000 records, so at most one more batch.
  assert.ok(maxQueued <= DEFAULT_MAX_QUEUED_RECORDS + DEFAULT_BATCH_RECORDS, `portal queued ${maxQueued} records`);
  assert.ok(maxQueued > DEFAULT_MAX_QUEUED_RECORDS / 2, `the load filled the portal (max queued ${maxQueued})`);
  assert.ok(readingPausedSeen > 0, 'the portal stopped reading from its senders at its bound');
  // Memory: 200,000 queued records of ~40 bytes are ~8 MB, held at most twice (batch and its
  // split); 128 MiB over the start (about 2.5 times what it takes) would mean a leak or an
  // unbounded queue.
  assert.ok(maxRss - rssBefore < 128, `portal RSS grew ${(maxRss - rssBefore).toFixed(0)} MiB (from ${rssBefore.toFixed(0)})`);
  // The senders were slowed to the components' pace: each was told its window was full and
  // waited in writable() for a good part of the load (most of it on an idle machine), and
  // together they never ran further ahead of processing than their windows
  // (per sender: `window` batches in flight, up to 3 closed behind them and one open, of up to
  // 8192 records; plus a round sent between the two readings).
  for (const [i, l] of loads.entries()) {
    assert.ok(l.falses > 0, `sender ${i}: send() said the window was full`);
    assert.ok(l.blockedMs > LOAD_MS / 4, `sender ${i} waited ${l.blockedMs.toFixed(0)} ms of ${LOAD_MS}`);
  }
  assert.ok(maxGap <= SENDERS * ((window + 4) * DEFAULT_BATCH_RECORDS + KEYS), `senders ran ${maxGap} records ahead of processing`);
  // Status while overloaded: every slot busy, deliveries taking about DELAY_MS each.
  assert.ok(busyBeacon, 'a beacon during the load');
  assert.ok(busyBeacon.slots.every((s) => s.state === 'busy' && s.serviceMs >= DELAY_MS), JSON.stringify(busyBeacon.slots));
  assert.ok(busyBeacon.queued + busyBeacon.inflight > 0);

  // Once the load stopped, everything acked was processed: exactly once, no failure here.
  for (const [i, s] of senders.entries()) assert.equal(s.stats.acked, loads[i]!.rounds * KEYS, `sender ${i}: every record acknowledged`);
  const expected: Sent = new Map();
  for (const [i, l] of loads.entries()) sentRounds(KEYS, l.rounds, `s${i}-k`, expected);
  assertExactlyOnceInOrder(d.map, 'orders', slotFiles(d), expected, { message: 'no failure: every record processed once, at its slot, in order per key' });
  assert.equal(processed(), sent);
  const stats = await assertAllUp(d);
  assert.equal(stats.recordsOut, sent);
  assert.equal(stats.queuedRecords, 0);
  assert.equal(stats.readingPaused, false);
});
