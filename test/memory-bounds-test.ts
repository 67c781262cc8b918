/**
 * A peer cannot grow a portal's memory past its documented bound (docs/security.md, "Limits"),
 * and the portal keeps serving afterwards:
 *
 *   raw ZMTP: frames with MORE set, never a last one  --\
 *   200 connections that never read replies, then gone ---> portal "orders" (its VmRSS, VmHWM) --> recorders
 *   8 Senders of 1 MB records for a slot with no component -/
 *   then a Sender of small records: every record once, in order per key
 *
 * Each case reads the portal's resident memory from /proc/PID/status (VmHWM, the peak) and
 * holds it under what the docs promise: the configured limit plus a fixed allowance.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { bucketOf, slotOf } from '../src/map/bucket';
import { encodeHeader, MessageType } from '../src/protocol/wire';
import { portalStats } from '../src/portal/client';
import type { PortalStats } from '../src/portal/portal';
import { Sender } from '../src/sender/sender';
import { DIST, portalctlAsync, waitFor, type Deployment } from './support/deploy';
import { assertAllUp, oneStream, portalctlStatus, portalProc, slotFiles, SLOTS, stopDeployments } from './support/failures';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';
import { zmtp } from './support/zmtp';

after(stopDeployments);

const CLIENTS_PY = join(DIST, '..', 'test', 'fixtures', 'unread-clients.py');

const MiB = 1 << 20;

/** A field of /proc/PID/status in bytes (VmRSS: resident now; VmHWM: the peak so far). */
function procBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

const mib = (n: number) => `${Math.round(n / MiB)} MiB`;

/** Starts a recorder on each slot but those in `except`, and waits for them. */
async function recorders(d: Deployment, except: number[] = []): Promise<void> {
  for (let slot = 0; slot < SLOTS; slot++) if (!except.includes(slot)) d.startRecorder('orders', slot);
  await d.waitSlotsConnected('orders', SLOTS - except.length);
}

/** `p`, or a failure naming `what` after `ms` (a test that fails, not one that hangs). */
async function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The portal's stats, with time to answer on a loaded machine (the portal may be busy with 1 MB records). */
const statsOf = (d: Deployment): Promise<PortalStats> => portalStats(d.runDirOf(), 'orders', 10_000);

/** A normal sender after the abuse: `keys` keys x `rounds`, all acknowledged, each processed once in order. */
async function normalSenderServed(d: Deployment, prefix: string): Promise<void> {
  const KEYS = 100;
  const ROUNDS = 10;
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  try {
    for (let r = 0; r < ROUNDS; r++) {
      for (let k = 0; k < KEYS; k++) sender.send('orders', { key: `${prefix}${k}`, seq: r, pad: Buffer.alloc(0) });
      await sender.writable();
    }
    await within(30_000, sender.flush(), 'the normal sender\'s records acknowledged');
    assert.equal(sender.stats.acked, KEYS * ROUNDS, 'the normal sender: every record acknowledged');
  } finally {
    sender.close();
  }
  const only = (k: string) => k.startsWith(prefix);
  await waitFor('the normal sender\'s records recorded', () => readRecorded(slotFiles(d), only).length >= KEYS * ROUNDS);
  assertExactlyOnceInOrder(d.map, 'orders', slotFiles(d), sentRounds(KEYS, ROUNDS, prefix), { only, message: 'the normal sender: exactly once, in order per key' });
}

/** The test streams' record with a `pad` of bytes, so a record can weigh 1 MB. */
const PADDED = {
  type: 'record',
  name: 'Order',
  fields: [
    { name: 'key', type: 'string' },
    { name: 'seq', type: 'long' },
    { name: 'pad', type: 'bytes' },
  ],
};

test('an endless multipart message: the portal drops the connection before max_rss_bytes + 64 MiB, and serves on', async () => {
  const MAX_RSS = 256 * MiB;
  const d = await oneStream({ agent: true, stream: { schema: PADDED, memory: { max_rss_bytes: MAX_RSS, max_queued_bytes: '64MiB' } } });
  await recorders(d);
  const pid = portalProc(d).pid!;
  const port = d.map.streams[0]!.port;

  // Frames of 64 KiB, each marked MORE: one message that never ends, sent as fast as the portal takes it.
  const LIMIT = 1024 * MiB;
  const sock = tcpConnect(port, '127.0.0.1');
  let closed = false;
  sock.on('error', () => undefined);
  sock.on('close', () => (closed = true));
  // Our READY once the portal's greeting is in, the message once its READY is (ZAP admitted the
  // connection; as zmtp.sendAndClose does: bytes sent before may fail the handshake).
  await new Promise<void>((resolve, reject) => {
    let got = 0;
    sock.once('error', reject);
    sock.once('connect', () => sock.write(zmtp.greeting()));
    sock.on('data', (data: Buffer) => {
      const before = got;
      got += data.length;
      if (before < 64 && got >= 64) sock.write(zmtp.ready());
      if (got > 64) resolve();
    });
  });
  sock.write(zmtp.frame(encodeHeader(MessageType.BATCH, 1, 1, 1), true));
  const frame = zmtp.frame(Buffer.alloc(64 * 1024, 7), true);
  let sent = 0;
  while (!closed && sent < LIMIT) {
    sent += frame.length;
    if (!sock.write(frame)) await new Promise((r) => setTimeout(r, 1)); // let the portal drain, or close
  }
  sock.destroy();

  const peak = procBytes(pid, 'VmHWM');
  const stats = await assertAllUp(d);
  process.stderr.write(`# endless message: ${mib(sent)} sent before the portal dropped it; portal peak ${mib(peak)} (max_rss_bytes ${mib(MAX_RSS)}), resets ${stats.limits.memoryResets}\n`);
  assert.ok(closed && sent < LIMIT, `the portal dropped the connection (sent ${mib(sent)})`);
  assert.ok(peak < MAX_RSS + 64 * MiB, `the portal's peak resident memory ${mib(peak)} stays under max_rss_bytes + 64 MiB`);
  assert.ok(stats.limits.memoryResets >= 1, 'the reset is counted in status');
  assert.ok((stats.errors.MEMORY_LIMIT ?? 0) >= 1, 'and logged with its code, MEMORY_LIMIT');
  // The operator sees it: in the agent's status (the portal's beacon) and in portalctl status.
  await waitFor('the reset in the agent\'s status', async () => ((await portalctlStatus(d)).streams[0]?.beacon?.limits?.memoryResets ?? 0) >= 1);
  const shown = await portalctlAsync(['status', '--map', d.mapFile, '--run-dir', d.runDirOf()]);
  assert.match(shown.stdout, /orders: memory limits reached: max_rss_bytes (once|\d+ times) \(every sender connection dropped\)/);
  await normalSenderServed(d, 'after-endless-');
});

test('200 connections that never read their replies, then gone: ZeroMQ keeps at most max_unread_replies for each; the portal serves on', async () => {
  const UNREAD = 256;
  const CLIENTS = 200;
  const BATCHES = 3000;
  const d = await oneStream({ stream: { schema: PADDED, memory: { max_unread_replies: UNREAD } } });
  await recorders(d);
  const pid = portalProc(d).pid!;
  await normalSenderServed(d, 'warm-'); // the portal's steady state, before the clients come
  const before = procBytes(pid, 'VmRSS');
  const start = await statsOf(d);

  // Each client sends batches for a stream with a long name: each is answered at once, an ERROR
  // of about 150 bytes (UNKNOWN_STREAM), and the client owes the portal a read of every one.
  const file = join(d.dir, 'unread.bin');
  const other = Buffer.from('x'.repeat(64));
  const empty = Buffer.alloc(0);
  const batches = Array.from({ length: BATCHES }, (_, i) => zmtp.message([encodeHeader(MessageType.BATCH, i + 1, 1, 0), other, empty]));
  writeFileSync(file, Buffer.concat([zmtp.greeting(), zmtp.ready(), ...batches]));
  const clients = spawn('python3', [CLIENTS_PY, String(d.map.streams[0]!.port), String(CLIENTS), file], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    let out = '';
    clients.stdout.on('data', (b: Buffer) => (out += b.toString()));
    await waitFor('the clients to have sent everything', () => out.includes('sent'), 60_000, 100);
    let answered = 0;
    await waitFor(
      () => `every batch of the clients answered (${answered} of ${CLIENTS * BATCHES})`,
      async () => (answered = ((await statsOf(d)).errors.UNKNOWN_STREAM ?? 0) - (start.errors.UNKNOWN_STREAM ?? 0)) >= CLIENTS * BATCHES,
      60_000,
      100,
    );
  } finally {
    clients.stdin.end(); // the clients leave without having read a thing
  }
  await new Promise((r) => clients.once('exit', r));
  const owed = await statsOf(d);
  await normalSenderServed(d, 'after-unread-');

  const peak = procBytes(pid, 'VmHWM');
  const now = procBytes(pid, 'VmRSS');
  // Documented: ZeroMQ keeps at most max_unread_replies replies per connection (under 512 bytes
  // each), and the kernel 128 KiB more, outside the process.
  const bound = before + CLIENTS * UNREAD * 512 + 40 * MiB;
  process.stderr.write(`# unread replies: before ${mib(before)}, peak ${mib(peak)}, after ${mib(now)}, bound ${mib(bound)}; dropped ${owed.limits.repliesDropped}\n`);
  assert.ok(peak < bound, `the portal's peak resident memory ${mib(peak)} stays under ${mib(bound)}`);
  assert.ok(now < bound, `and what stays after the clients left, ${mib(now)}, too`);
  assert.ok(owed.limits.repliesDropped > 0, 'replies past max_unread_replies were dropped and counted');
  assert.ok((owed.errors.REPLIES_DROPPED ?? 0) > 0, 'under their code, REPLIES_DROPPED');
  await assertAllUp(d);
});

/**
 * 8 Senders of 1 MB records (24 each, a window of 32) for the slots in `stalled`, which have no
 * component: the portal holds up to `bound` bytes of them (max_slot_bytes or max_queued_bytes)
 * and stops reading; its peak resident memory stays under the documented bound. Then the
 * components come, and every record arrives once, and a normal sender after them.
 */
async function bigRecordsToStalledSlots(o: { stalled: number[]; limit: 'max_slot_bytes' | 'max_queued_bytes'; bound: number }): Promise<void> {
  const SENDERS = 8;
  const PER_SENDER = 24;
  const d = await oneStream({ stream: { schema: PADDED, window: 32, max_batch_bytes: 2 * MiB, memory: { [o.limit]: o.bound } } });
  await recorders(d, o.stalled);
  const pid = portalProc(d).pid!;
  const before = procBytes(pid, 'VmRSS');

  const s = d.map.streams[0]!;
  const keys: string[] = [];
  for (let i = 0; keys.length < SENDERS * PER_SENDER; i++) if (o.stalled.includes(slotOf(bucketOf(`big${i}`, s.buckets), SLOTS))) keys.push(`big${i}`);
  const pad = Buffer.alloc(1_000_000, 1);
  const senders = Array.from({ length: SENDERS }, () => new Sender({ map: d.mapFile, lingerMs: 1 }));
  const heldOf = (st: PortalStats) => (o.limit === 'max_slot_bytes' ? Math.max(...st.slots.map((x) => x.bytes)) : st.limits.queuedBytes);
  const stopsOf = (st: PortalStats) => (o.limit === 'max_slot_bytes' ? st.limits.slotBytesStops : st.limits.queuedBytesStops);
  try {
    senders.forEach((sender, i) => {
      for (let j = 0; j < PER_SENDER; j++) sender.send('orders', { key: keys[i * PER_SENDER + j]!, seq: 0, pad });
    });
    // The portal holds records up to the bound and stops reading; the rest waits in TCP.
    // (Were there no bound, every record would be taken: that ends the wait too.)
    await waitFor(`reading stopped at ${o.limit} (or every record taken)`, async () => {
      const st = await statsOf(d);
      return (st.readingPaused && stopsOf(st) > 0) || st.recordsIn >= keys.length;
    });
    const held = await statsOf(d);
    const peak = procBytes(pid, 'VmHWM');
    // Documented: what the limit lets the portal hold, plus what ZeroMQ reads ahead for each
    // connection (4 whole messages and one coming, of at most max_batch_bytes), plus a fixed allowance.
    const bound = before + o.bound + SENDERS * 5 * 2 * MiB + 32 * MiB;
    process.stderr.write(`# ${o.limit}: before ${mib(before)}, peak ${mib(peak)}, bound ${mib(bound)}; held ${mib(heldOf(held))}\n`);
    assert.ok(peak < bound, `the portal's peak resident memory ${mib(peak)} stays under ${mib(bound)}`);
    assert.ok(heldOf(held) <= o.bound + 2 * MiB, `the records held, ${mib(heldOf(held))}, stop within a batch of ${o.limit}`);
    assert.equal(held.limits.memoryResets, 0, 'the queue bound held it, not the memory guard');

    // The components come: the backlog drains, reading goes on, and every 1 MB record arrives once.
    for (const slot of o.stalled) d.startRecorder('orders', slot);
    await within(60_000, Promise.all(senders.map((sender) => sender.flush())), 'the 1 MB records acknowledged');
    for (const sender of senders) assert.equal(sender.stats.acked, PER_SENDER, 'every 1 MB record acknowledged');
  } finally {
    for (const sender of senders) sender.close();
  }
  const sent = new Map(keys.map((k) => [k, 1]));
  const only = (k: string) => k.startsWith('big');
  await waitFor('the 1 MB records recorded', () => readRecorded(slotFiles(d), only).length >= keys.length);
  assertExactlyOnceInOrder(d.map, 'orders', slotFiles(d), sent, { only, message: 'the 1 MB records: each once, at the slot of its key' });
  await normalSenderServed(d, 'after-stall-');
  await assertAllUp(d);
}

test('1 MB records for a slot with no component: its backlog stops at max_slot_bytes, and every record arrives once when it comes', async () => {
  await bigRecordsToStalledSlots({ stalled: [0], limit: 'max_slot_bytes', bound: 32 * MiB });
});

test('1 MB records for a portal whose slots all stall: what it holds stops at max_queued_bytes, and every record arrives once', async () => {
  await bigRecordsToStalledSlots({ stalled: [0, 1, 2, 3], limit: 'max_queued_bytes', bound: 32 * MiB });
});
