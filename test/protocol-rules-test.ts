/**
 * The rules of docs/protocol.md that a sender written in another language depends on, checked
 * against real portal processes, and the page's Python sketch run as it stands:
 *
 *   python3 sender.py (from the page) --\
 *   raw DEALER (frames by hand) ---------> portal --> recorder slots
 *   Sender (reconnect order) -----------/
 *
 * The raw sender builds its frames with test/support/zmtp.ts; the page's sketch needs only
 * python3's standard library.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import pino from 'pino';
import * as zmq from 'zeromq';
import { WIRE_ERROR_CODES } from '../src/errors';
import { bucketOf } from '../src/map/bucket';
import { portalRequest } from '../src/portal/client';
import { decodeHeader, encodeHeader, MessageType } from '../src/protocol/wire';
import { Channel, type OutBatch } from '../src/sender/channel';
import { Replies } from '../src/sender/replies';
import { Sender } from '../src/sender/sender';
import { DIST, deploy, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';
import { batchBody, batchFrames, readReply, type Reply } from './support/zmtp';

const ROOT = join(DIST, '..');
const doc = readFileSync(join(ROOT, 'docs', 'protocol.md'), 'utf8');
const EPOCH = 5;

/** One server (solo): `clicks` as the demo has it, for the sketch as written; `orders`. */
let one: Deployment;
/** Two servers, only alpha running: keys of beta's buckets are redirected. */
let two: Deployment;
let raw: zmq.Dealer;
let ports: number[];
let sketchDir: string;

const CLICK = { type: 'record', name: 'Click', fields: [{ name: 'user', type: 'string' }, { name: 'page', type: 'string' }, { name: 'at', type: 'long' }] };

before(async () => {
  ports = await freePorts(3);
  one = deploy({
    instance: 'rules',
    epoch: 1,
    servers: [{ name: 'solo', host: '127.0.0.1' }],
    streams: [
      { name: 'clicks', key: 'user', port: ports[0], buckets: 64, slots: 1, schema: CLICK },
      { name: 'orders', key: 'key', port: ports[1], buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order') },
    ],
  });
  two = deploy({
    instance: 'rules2',
    epoch: EPOCH,
    servers: [
      { name: 'alpha', host: '127.0.0.1' },
      { name: 'beta', host: '127.0.0.2' }, // in the map, never started
    ],
    streams: [{ name: 'orders', key: 'key', port: ports[2], buckets: 64, slots: 1, schema: RECORD_SCHEMA('Order') }],
  });
  one.startPortal('clicks');
  one.startPortal('orders');
  one.startRecorder('clicks', 0);
  for (let slot = 0; slot < 2; slot++) one.startRecorder('orders', slot);
  two.startPortal('orders', 'alpha');
  two.startRecorder('orders', 0, { server: 'alpha' });
  await one.waitSlotsConnected('clicks', 1);
  await one.waitSlotsConnected('orders', 2);
  await two.waitSlotsConnected('orders', 1, 'alpha');
  alphaKeys = keys.filter((k) => owner(k) === 'alpha');
  raw = new zmq.Dealer({ linger: 0, receiveTimeout: 10_000 });
  raw.connect(`tcp://127.0.0.1:${ports[2]}`);

  // The page's Python sketch, exactly as printed.
  const block = /## A sender in Python[\s\S]*?```python\n([\s\S]*?)```/.exec(doc);
  assert.ok(block, 'docs/protocol.md has a ```python block under "A sender in Python"');
  sketchDir = mkdtempSync(join(tmpdir(), 'flt-sketch-'));
  writeFileSync(join(sketchDir, 'sender.py'), block[1]!);
  writeFileSync(join(sketchDir, 'drive.py'), DRIVER);
});

after(async () => {
  raw?.close();
  await one?.stop();
  await two?.stop();
  if (process.env.FLOTILLA_TEST_LOGS) process.stderr.write([...one.logs, ...two.logs].join(''));
});

// ---- the raw sender's rules (two servers, alpha running) ---------------------------------------

const owner = (key: string) => {
  const s = two.map.streams[0]!;
  return two.map.servers[s.owner[bucketOf(key, s.buckets)]!]!.name;
};
const keys = Array.from({ length: 400 }, (_, i) => `r${i}`);
let alphaKeys: string[] = [];
const betaKey = () => keys.find((k) => owner(k) === 'beta')!;
const alphaFiles = () => [two.outOf('orders', 0, 'alpha')];
const processedAt = (key: string) => readRecorded(alphaFiles()).filter((r) => r.key === key);

/** Sends one message on the raw DEALER and reads the reply to its seq. */
async function exchange(frames: Buffer[]): Promise<Reply> {
  const seq = frames[0]!.readUInt32BE(4);
  await raw.send(frames);
  for (;;) {
    const reply = readReply(await raw.receive());
    if (reply.seq === seq) return reply;
  }
}

const batch = (seq: number, keysOf: string[], epoch: number) => batchFrames(seq, keysOf.map((key, i) => ({ key, seq: i })), { epoch });

test('seq 0 is reserved: a BATCH with seq 0 is refused MALFORMED and nothing of it is processed', async () => {
  const reply = await exchange(batch(0, ['zero-seq'], EPOCH));
  assert.equal(reply.type, MessageType.ERROR);
  assert.equal(reply.code, 'MALFORMED');
  assert.match(reply.message, /seq 0 is reserved/);
  const ok = await exchange(batch(1, [alphaKeys[0]!], EPOCH));
  assert.equal(ok.type, MessageType.ACK, 'the connection goes on');
  assert.deepEqual(processedAt('zero-seq'), []);
});

test('a key that is not valid UTF-8 is refused MALFORMED, naming the record, instead of routed by its bytes', async () => {
  // Record 1 of 2: key bytes 61 ff 62, an Avro string that is not UTF-8.
  const good = batchBody([{ key: alphaKeys[1]!, seq: 0 }]);
  const bad = Buffer.from(batchBody([{ key: 'aXb', seq: 0 }]));
  assert.equal(bad[2], 0x58);
  bad[2] = 0xff;
  const reply = await exchange([encodeHeader(MessageType.BATCH, 2, EPOCH, 2), Buffer.from('orders'), Buffer.concat([good, bad])]);
  assert.equal(reply.type, MessageType.ERROR);
  assert.equal(reply.code, 'MALFORMED');
  assert.equal(reply.message, 'record 1: key is not valid UTF-8');
  assert.deepEqual(processedAt(alphaKeys[1]!), [], 'none of the refused batch was processed');
  // Valid multi-byte UTF-8 still goes through.
  const utf = keys.map((k) => `${k}-\u00e9\u{1f600}`).find((k) => owner(k) === 'alpha')!;
  assert.equal((await exchange(batch(3, [utf], EPOCH))).type, MessageType.ACK);
  assert.equal(processedAt(utf).length, 1);
});

test('WRONG_OWNER to a sender behind the portal: route again; nothing is owed, the next batch goes at once', async () => {
  const reply = await exchange(batch(10, [betaKey()], EPOCH - 1));
  assert.equal(reply.code, 'WRONG_OWNER');
  assert.equal(reply.epoch, EPOCH, "the portal's epoch: the map to load");
  assert.match(reply.message, new RegExp(`key "${betaKey()}" is in bucket \\d+, owned by beta at epoch ${EPOCH}`));
  assert.equal((await exchange(batch(11, [alphaKeys[2]!], EPOCH - 1))).type, MessageType.ACK);
});

test('a header epoch of 0 (a sender that does not track epochs) is never owed', async () => {
  assert.equal((await exchange(batch(12, [betaKey()], 0))).code, 'WRONG_OWNER');
  assert.equal((await exchange(batch(13, [alphaKeys[3]!], 0))).type, MessageType.ACK);
});

test('MISROUTED: a foreign key at the portal\'s own epoch means the sender\'s hash or map is wrong; not owed', async () => {
  const reply = await exchange(batch(20, [alphaKeys[4]!, betaKey()], EPOCH));
  assert.equal(reply.type, MessageType.ERROR);
  assert.equal(reply.code, 'MISROUTED');
  assert.match(reply.message, new RegExp(`key "${betaKey()}" is in bucket \\d+, owned by beta at epoch ${EPOCH}`));
  assert.match(reply.message, /config\/vectors\.json.*do not resend/);
  assert.equal((await exchange(batch(21, [alphaKeys[5]!], EPOCH))).type, MessageType.ACK, 'the next batch is taken at once');
  assert.deepEqual(processedAt(alphaKeys[4]!), []);
});

test('a lagging portal owes a batch routed by a newer epoch: later batches get RESEND (no RESUME); an empty batch of that seq settles it', async () => {
  const owed = await exchange(batch(30, [betaKey()], EPOCH + 1));
  assert.equal(owed.code, 'WRONG_OWNER');
  assert.match(owed.message, /batch 30 is owed/);
  const later = await exchange(batch(31, [alphaKeys[6]!], EPOCH + 1));
  assert.equal(later.code, 'RESEND', 'a batch behind the owed one must wait');
  assert.match(later.message, /batch 30/);
  // The owed batch again: still refused while the portal lags, and still owed.
  assert.equal((await exchange(batch(30, [betaKey()], EPOCH + 1))).code, 'WRONG_OWNER');
  assert.equal((await exchange(batch(31, [alphaKeys[6]!], EPOCH + 1))).code, 'RESEND');
  // The sender routes batch 30's records elsewhere and tells the portal so: an empty batch 30.
  const settle = await exchange([encodeHeader(MessageType.BATCH, 30, EPOCH + 1, 0), Buffer.from('orders'), Buffer.alloc(0)]);
  assert.equal(settle.type, MessageType.ACK);
  assert.equal(settle.count, 0);
  assert.equal((await exchange(batch(31, [alphaKeys[6]!], EPOCH + 1))).type, MessageType.ACK, 'nothing is owed any more');
  assert.equal(processedAt(alphaKeys[6]!).length, 1);
});

// ---- what the docs say, checked against the code ---------------------------------------------

test('every wire code is in the README and in the page\'s table of what a sender does with each', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const todo = doc.slice(doc.indexOf('What a sender should do with each'));
  for (const code of WIRE_ERROR_CODES) {
    assert.ok(readme.includes(`\`${code}\``), `README.md names ${code}`);
    assert.match(todo, new RegExp(`^\\| \`${code}\` \\|`, 'm'), `docs/protocol.md says what to do with ${code}`);
  }
});

test('config/vectors.json is what docs/map.md says: a JSON array, one object per line, the example line among them', () => {
  const mapDoc = readFileSync(join(ROOT, 'docs', 'map.md'), 'utf8');
  assert.match(mapDoc, /`config\/vectors\.json` lists[^.]*a JSON array/);
  const text = readFileSync(join(ROOT, 'config', 'vectors.json'), 'utf8');
  const vectors = JSON.parse(text) as Record<string, unknown>[];
  assert.ok(Array.isArray(vectors) && vectors.length > 100);
  const example = /```json\n(\{"stream".*\})\n```/.exec(mapDoc.slice(mapDoc.indexOf('## Test vectors')));
  assert.ok(example, 'docs/map.md shows one vector');
  assert.deepEqual(vectors[0], JSON.parse(example[1]!));
  assert.deepEqual(Object.keys(vectors[0]!), ['stream', 'key', 'fnv1a32', 'bucket', 'slot', 'server']);
  assert.equal(text.trim().split('\n').length, vectors.length + 2, 'one object per line between [ and ]');
});

// ---- the Python sketch, as printed ------------------------------------------------------------

/** Drives the sketch's Sender on a stream of { key, seq } records; prints what it settled. */
const DRIVER = `
import json, sys, time
import sender
host, port, stream, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
keys, rounds, timeout = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
s = sender.Sender(host, port, stream, [("key", "string"), ("seq", "long")], "key", epoch=1)
connect = s.connect
def reconnect():             # says when the sketch has connected again and resent its batches
    connect()
    print("reconnected", flush=True)
s.connect = reconnect
for n in range(rounds):
    s.send([{"key": f"{prefix}{k}", "seq": n} for k in range(keys)])
deadline = time.monotonic() + 2
while not s.paused and s.unacked and time.monotonic() < deadline:
    s.poll(0.1)
print("held" if s.paused else "not held", flush=True)
ok = s.flush(timeout)
print(json.dumps({"ok": ok, "acked": s.acked, "unsettled": len(s.unacked), "failed": [f[2] for f in s.failed]}), flush=True)
sys.exit(0 if ok else 1)
`;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs python3 on a file of the sketch's directory; `onLine` sees each stdout line as it comes. */
function python(args: string[], onLine: (line: string) => void = () => undefined): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn('python3', args, { cwd: sketchDir, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => {
      const lines = (stdout + d.toString()).split('\n').slice(stdout.split('\n').length - 1, -1);
      stdout += d.toString();
      lines.forEach(onLine);
    });
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const ordersFiles = () => [0, 1].map((s) => one.outOf('orders', s));
const portal = (cmd: 'pause' | 'resume') => portalRequest(one.runDirOf(), 'orders', { cmd });
const drive = (prefix: string, keysN: number, rounds: number, timeoutS: number, onLine?: (line: string) => void) =>
  python(['drive.py', '127.0.0.1', String(ports[1]), 'orders', prefix, String(keysN), String(rounds), String(timeoutS)], onLine);
/** Starts the orders portal again (its last one is dead) and waits for its slots, generously: the machine may be busy. */
async function restartOrders(): Promise<void> {
  one.procs[1] = one.startPortal('orders');
  await waitFor('the restarted portal to have its 2 slots', async () => {
    try {
      return (await one.stats('orders')).slots.filter((x) => x.connected).length === 2;
    } catch {
      return false;
    }
  }, 60_000);
}
/** The sketch said it sent 20 keys x 10 rounds of `prefix`, all acknowledged, and each was processed once, in order. */
async function allDelivered(run: Run, prefix: string): Promise<void> {
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(result(run), { ok: true, acked: 200, unsettled: 0, failed: [] });
  assertExactlyOnceInOrder(one.map, 'orders', ordersFiles(), sentRounds(20, 10, prefix), { only: (k) => k.startsWith(prefix) });
}
const result = (run: Run) => JSON.parse(run.stdout.trim().split('\n').pop()!) as { ok: boolean; acked: number; unsettled: number; failed: string[] };

test("the page's Python sketch runs as printed, on python3's standard library, and says all was acknowledged", async () => {
  const before = (await one.stats('clicks')).batchesAcked;
  const run = await python(['sender.py', '127.0.0.1', String(ports[0])]);
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stderr, /^all 1000 records acknowledged$/m);
  assert.equal((await one.stats('clicks')).batchesAcked - before, 10);
});

test('the sketch on a paused stream reports failure at its deadline, having had nothing processed', async () => {
  await portal('pause');
  try {
    const run = await drive('held-', 20, 10, 2);
    assert.equal(run.status, 1, run.stderr);
    assert.deepEqual(result(run), { ok: false, acked: 0, unsettled: 10, failed: [] });
    assert.deepEqual(readRecorded(ordersFiles(), (k) => k.startsWith('held-')), []);
  } finally {
    await portal('resume');
  }
});

test('the sketch holds its batches while the stream is paused and, once resumed, every record is processed once, in order', async () => {
  await portal('pause');
  let held = false;
  const running = drive('pz-', 20, 10, 60, (line) => (held ||= line === 'held'));
  try {
    await waitFor('the sketch to hold its batches', () => held);
    assert.deepEqual(readRecorded(ordersFiles(), (k) => k.startsWith('pz-')), [], 'nothing processed while paused');
  } finally {
    await portal('resume');
  }
  await allDelivered(await running, 'pz-');
});

test('the sketch reconnects to a portal killed and restarted while paused, and resends: every record once, in order', async () => {
  await portal('pause');
  let held = false;
  let reconnected = false;
  const running = drive('rc-', 20, 10, 60, (line) => {
    held ||= line === 'held';
    reconnected ||= line === 'reconnected';
  });
  try {
    await waitFor('the sketch to hold its batches', () => held);
    const p = one.procs[1]!;
    p.kill('SIGKILL');
    await waitFor('the portal to die', () => p.signalCode === 'SIGKILL');
    await restartOrders();
    assert.equal((await one.stats('orders')).paused, true, 'the pause outlived the portal');
    // Resumed only once the sketch has reconnected and sent its batches again (to be refused
    // PAUSED by the new portal, and told RESUME by it).
    await waitFor('the sketch to reconnect', () => reconnected);
  } finally {
    await portal('resume');
  }
  await allDelivered(await running, 'rc-');
});

test('the sketch reports a batch refused for good (UNKNOWN_STREAM) as a failure', async () => {
  const run = await python(['drive.py', '127.0.0.1', String(ports[1]), 'nosuch', 'x-', '3', '2', '10']);
  assert.equal(run.status, 1);
  assert.deepEqual(result(run), { ok: false, acked: 0, unsettled: 0, failed: ['UNKNOWN_STREAM', 'UNKNOWN_STREAM'] });
  assert.match(run.stderr, /batch 1 refused: UNKNOWN_STREAM/);
});

// ---- Flotilla's sender: nothing overtakes a batch lost with its connection ----------------------

test('a batch closed while the portal is down does not overtake the one its connection lost', async () => {
  const sender = new Sender({ map: one.mapFile, lingerMs: 1 });
  const closed: number[] = [];
  const onBatch = (m: unknown) => closed.push((m as { seq: number }).seq);
  subscribe('flotilla:sender:batch', onBatch);
  try {
    sender.send('orders', { key: 'lost', seq: 0 });
    await sender.flush();
    // The portal stops, takes batch seq 1 into its TCP buffer unread, and dies with it.
    const p = one.procs[1]!;
    p.kill('SIGSTOP');
    sender.send('orders', { key: 'lost', seq: 1 });
    await waitFor('the batch of seq 1 to close', () => closed.length === 2);
    p.kill('SIGKILL');
    // (At least once: a new connection may be taken, and dropped, by the dying portal's listener.)
    await waitFor('the sender to see the connection drop', () => sender.stats.disconnects >= 1);
    // Closed while there is no connection: it must not reach the new portal before seq 1.
    sender.send('orders', { key: 'lost', seq: 2 });
    await waitFor('the batch of seq 2 to close', () => closed.length === 3);
    await restartOrders();
    await sender.flush();
  } finally {
    unsubscribe('flotilla:sender:batch', onBatch);
    sender.close();
  }
  const lost = readRecorded(ordersFiles(), (k) => k === 'lost');
  const firsts = lost.map((r) => r.seq).filter((s, i, all) => all.indexOf(s) === i);
  assert.deepEqual(firsts, [0, 1, 2], `first copies in order; processed: ${lost.map((r) => r.seq).join(', ')}`);
});

// ---- Flotilla's sender against a portal played by hand ------------------------------------------

/**
 * One channel of Flotilla's sender (Channel and its reply state machine, at map epoch 7) to a
 * ROUTER the test answers by hand, so it can say what no real portal can be made to at will.
 * `rerouted` lists the seqs whose records the sender routed elsewhere.
 */
async function handPlayed(): Promise<{ ch: Channel; portalSide: zmq.Router; rerouted: number[]; stop: () => void }> {
  const portalSide = new zmq.Router({ linger: 0, receiveTimeout: 5000 });
  await portalSide.bind('tcp://127.0.0.1:*');
  const rerouted: number[] = [];
  const host = {
    closed: false,
    stats: { acked: 0, refused: 0, redirects: 0, resent: 0, disconnects: 0 },
    log: pino({ level: 'silent' }),
    acked: () => undefined,
    refused: () => undefined,
    catchUp: () => 7,
    ownsAll: () => false,
    reroute: (_ch: Channel, b: OutBatch) => void rerouted.push(b.seq),
    settled: () => undefined,
  };
  const stream = one.map.streams.find((s) => s.name === 'orders')!;
  const ch = new Channel(stream, 'solo', portalSide.lastEndpoint!, { epoch: 7, stats: { batches: 0 }, lingerMs: 1, batchBytes: 1 << 20, batchRecords: 100, identity: undefined, inner: false, sendFailed: () => undefined });
  new Replies(host).listen(ch);
  return {
    ch,
    portalSide,
    rerouted,
    stop: () => {
      host.closed = true;
      ch.close();
    },
  };
}

/** Closes a batch of one record on `ch`. */
function oneRecordBatch(ch: Channel): void {
  ch.writer.appendEncoded('k', Buffer.alloc(16), 0, [], Buffer.from([2, 0x41, 0]));
  ch.closeBatch();
}

test("Flotilla's sender, its batch's records routed elsewhere, settles what a lagging portal holds owed: an empty batch of that seq", async () => {
  // The portal answers the batch (routed by epoch 7) WRONG_OWNER at epoch 6, and the sender's
  // map no longer gives it the batch's records.
  const { ch, portalSide, rerouted, stop } = await handPlayed();
  try {
    oneRecordBatch(ch);
    const [id, first] = await portalSide.receive();
    assert.deepEqual(readHeader(first!), { seq: 1, epoch: 7, count: 1 });
    await portalSide.send([id!, encodeHeader(MessageType.ERROR, 1, 6, 0), Buffer.from('WRONG_OWNER'), Buffer.from('this portal is behind')]);
    const [, settle, stream2, body2] = await portalSide.receive();
    assert.deepEqual(readHeader(settle!), { seq: 1, epoch: 7, count: 0 }, 'an empty batch with the owed seq');
    assert.equal(stream2!.toString(), 'orders');
    assert.equal(body2!.length, 0);
    assert.deepEqual(rerouted, [1], 'its records were routed again');
  } finally {
    stop();
    portalSide.close();
  }
});

test("Flotilla's sender after a reconnect sends every unacknowledged batch, held ones too, oldest first", async () => {
  // Batch 1 is refused PAUSED (held); batch 2's reply is lost with the connection. The portal
  // comes back: batch 1 must arrive before batch 2, not a probe's second later.
  const { ch, portalSide, stop } = await handPlayed();
  const endpoint = portalSide.lastEndpoint!;
  let again: zmq.Router | null = null;
  try {
    oneRecordBatch(ch);
    oneRecordBatch(ch);
    const [id] = await portalSide.receive();
    await portalSide.receive();
    await portalSide.send([id!, encodeHeader(MessageType.ERROR, 1, 7, 0), Buffer.from('PAUSED'), Buffer.from('paused')]);
    await waitFor('batch 1 to be held', () => ch.inflight.get(1)?.held === true);
    portalSide.close();
    await waitFor('the sender to see the connection drop', () => ch.disconnected);
    // Three times over: each new connection is watched as the first was.
    for (let round = 0; round < 3; round++) {
      if (round > 0) {
        again!.close();
        await waitFor(`the sender to see connection ${round + 1} drop`, () => ch.disconnected);
      }
      again = new zmq.Router({ linger: 0, receiveTimeout: 10_000 });
      await again.bind(endpoint);
      const seqs: number[] = [];
      for (let n = 0; n < 2; n++) seqs.push(readHeader((await again.receive())[1]!).seq);
      assert.deepEqual(seqs, [1, 2], `after reconnect ${round + 1}`);
    }
  } finally {
    stop();
    portalSide.close();
    again?.close();
  }
});

function readHeader(frame: Buffer): { seq: number; epoch: number; count: number } {
  const h = decodeHeader(frame)!;
  assert.equal(h.type, MessageType.BATCH);
  return { seq: h.seq, epoch: h.epoch, count: h.count };
}
