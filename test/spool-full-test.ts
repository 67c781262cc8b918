/**
 * The spool's filesystem fills up: a 1 MiB tmpfs made for the test holds the spool of a stream
 * whose slot 3 has no component, so its records pile up on disk.
 *
 *   when_full: reject, no floor: the disk really fills (ENOSPC); senders get SPOOL_FULL, the
 *     portal stays up and says so in its log and in `portalctl status`, and takes records again
 *     once the component comes and the spool drains.
 *   when_full: block, a floor (min_free_bytes): the spool stops before the disk is full; senders
 *     are slowed, not refused, and nothing is lost.
 *
 * Mounting needs root (as CI runs); elsewhere the test says why it is skipped.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { WireError } from '../src/errors';
import { Sender } from '../src/sender/sender';
import { portalctlAsync, deploy, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { spoolMap } from './support/flows';
import { freePorts } from './support/ports';
import { checkRecords, readRecorded, sentRounds } from './support/records';

const KEYS = 200;
const ROUND_BATCH = 1000;
const mounts: string[] = [];
const deployments: Deployment[] = [];
const root = process.getuid?.() === 0;

after(async () => {
  for (const d of deployments) await d.stop();
  for (const m of mounts) execFileSync('umount', ['-l', m]);
});

async function start(spool: Record<string, unknown>): Promise<{ d: Deployment; agentPort: number }> {
  const [port, agentPort] = await freePorts(2);
  const map = spoolMap(port!, { dir: 'fs', ...spool });
  (map.servers as { agent_port?: number }[])[0]!.agent_port = agentPort;
  (map.streams as { buckets: number }[])[0]!.buckets = 16;
  const d = deploy(map);
  deployments.push(d);
  const fs = join(d.dir, 'fs');
  mkdirSync(fs);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', fs]);
  mounts.push(fs);
  startAgent(d);
  d.startPortal('orders');
  for (const slot of [0, 1, 2]) d.startRecorder('orders', slot);
  await d.waitSlotsConnected('orders', 3);
  await waitAgent(d);
  return { d, agentPort: agentPort! };
}

const files = (d: Deployment) => [0, 1, 2, 3].map((s) => d.outOf('orders', s));
const status = (d: Deployment) => portalctlAsync(['status', '--map', d.mapFile, '--run-dir', d.runDirOf()]);

test('the disk fills (ENOSPC) with when_full: reject: SPOOL_FULL to senders, the portal stays up and takes records again once drained', { skip: !root && 'mounting a tmpfs needs root' }, async () => {
  const { d } = await start({ mode: 'spill', when_full: 'reject', min_free_bytes: 0 });
  const refusals: string[] = [];
  let refusedRecords = 0;
  const sender = new Sender({
    map: d.mapFile,
    lingerMs: 1,
    batchRecords: ROUND_BATCH,
    onError: (err: WireError, records: number) => {
      refusals.push(`${err.code}: ${err.message}`);
      refusedRecords += records;
    },
  });
  let rounds = 0;
  try {
    // Five rounds a flush: each flush waits for the spool to take what spilled (about 175 ms).
    while (refusals.length === 0) {
      assert.ok(rounds < 2000, 'the 1 MiB disk never filled');
      for (let r = 0; r < 5; r++, rounds++) for (let k = 0; k < KEYS; k++) sender.send('orders', { key: `k${k}`, seq: rounds });
      await sender.flush();
    }
    assert.match(refusals[0]!, /^SPOOL_FULL: the spool .* could not write: ENOSPC/);
    const st = await d.stats('orders');
    assert.equal(st.spool!.state, 'write_failed');
    assert.ok(st.errors.SPOOL_WRITE_FAILED! >= 1 && st.errors.SPOOL_FULL! >= 1, JSON.stringify(st.errors));
    await waitFor('the log to name the failure', () => /SPOOL_WRITE_FAILED.*ENOSPC/.test(d.logs.join('')));
    await waitFor('portalctl status to say the spool cannot write', async () => {
      const r = await status(d);
      return /orders: spool cannot write .*batches are refused with SPOOL_FULL/.test(r.stdout) && /WRITE_FAILED \d+/.test(r.stdout);
    });

    // The component for slot 3 comes: the spool drains, space comes back, records are taken again.
    d.startRecorder('orders', 3);
    await waitFor('the spool to drain and take records again', async () => {
      const s = (await d.stats('orders')).spool!;
      return s.records === 0 && s.state === 'ok';
    }, 30_000);
    const refusedBefore = refusals.length;
    for (let k = 0; k < KEYS; k++) sender.send('orders', { key: `k${k}`, seq: rounds });
    rounds++;
    await sender.flush();
    assert.equal(refusals.length, refusedBefore, 'accepted again');
  } finally {
    sender.close();
  }
  assert.ok(d.procs.every((p) => p.exitCode === null && p.signalCode === null), 'every process still up');
  await waitFor('every acknowledged record processed', () => new Set(readRecorded(files(d)).map((r) => `${r.key}#${r.seq}`)).size === sender.stats.acked);
  assert.equal(sender.stats.acked + refusedRecords, rounds * KEYS, 'every record acknowledged or refused');
  const recs = readRecorded(files(d));
  assert.equal(recs.length, sender.stats.acked, 'no duplicates: nothing failed but the disk');
  // Refused batches leave gaps, so no order is asserted; what was processed is at its slot, was sent, and came once.
  const r = checkRecords(d.map, 'orders', files(d), sentRounds(KEYS, rounds));
  assert.deepEqual(r.unexpected, []);
  assert.equal(r.duplicates, 0);
});

test('a free-space floor with when_full: block: the spool stops before the disk is full, senders wait, nothing is lost', { skip: !root && 'mounting a tmpfs needs root' }, async () => {
  const { d } = await start({ mode: 'spill', when_full: 'block', min_free_bytes: '600KiB' });
  const refusals: string[] = [];
  const sender = new Sender({ map: d.mapFile, lingerMs: 1, batchRecords: ROUND_BATCH, onError: (err) => refusals.push(err.code) });
  let rounds = 0;
  let sending = true;
  const load = (async () => {
    while (sending) {
      for (let k = 0; k < KEYS; k++) sender.send('orders', { key: `k${k}`, seq: rounds });
      rounds++;
      await sender.writable();
      await new Promise((r) => setImmediate(r));
    }
  })();
  try {
    await waitFor('the spool to reach its floor and block', async () => {
      const s = (await d.stats('orders')).spool!;
      return s.state === 'low_disk' && s.blocked;
    }, 30_000);
    const st = await d.stats('orders');
    assert.ok(st.spool!.freeBytes >= 0 && st.spool!.freeBytes < 600 * 1024, `free ${st.spool!.freeBytes}`);
    await waitFor('portalctl status to say why', async () => /orders: spool takes no records: .* under min_free_bytes 600\.0 KiB; senders wait/.test((await status(d)).stdout));
    await waitFor('the log to say it', () => /SPOOL_FULL.*min_free_bytes.*senders wait/.test(d.logs.join('')));
    const heldAt = sender.pending;
    assert.ok(heldAt > 0, 'the sender holds records: it is slowed, not refused');
    d.startRecorder('orders', 3);
    await waitFor('the spool to drain', async () => (await d.stats('orders')).spool!.records === 0 && !(await d.stats('orders')).spool!.blocked, 30_000);
    sending = false;
    await load;
    await sender.flush();
  } finally {
    sending = false;
    sender.close();
  }
  assert.deepEqual(refusals, [], 'block never refuses');
  assert.equal(sender.stats.acked, rounds * KEYS);
  await waitFor('every record processed', () => readRecorded(files(d)).length >= rounds * KEYS);
  const r = checkRecords(d.map, 'orders', files(d), sentRounds(KEYS, rounds));
  assert.deepEqual(r.missing, []);
  assert.deepEqual(r.unexpected, []);
  assert.deepEqual(r.outOfOrder, []);
  assert.equal(r.duplicates, 0);
});
