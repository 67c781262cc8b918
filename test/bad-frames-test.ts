/**
 * Bad input at the portal's door: each kind of bad frame gets its ERROR reply with its stable
 * code (and the batch's seq echoed), while a well-behaved sender's traffic keeps flowing and
 * arrives whole; the portal stays up and logs each cause with a counter, not a line per frame.
 *
 *   raw DEALER (bad frames) --\
 *                              >--> portal "orders" on server solo --> 4 recorder slots
 *   Sender (good records) ----/
 */
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import * as zmq from 'zeromq';
import { bucketOf } from '../src/map/bucket';
import { encodeHeader, HEADER_BYTES, MessageType } from '../src/protocol/wire';
import { Sender } from '../src/sender/sender';
import { deploy, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded } from './support/records';
import { batchBody, readReply, type Reply } from './support/zmtp';

let d: Deployment;
let raw: zmq.Dealer;
let ownKeys: string[];
let foreignKey: string;

before(async () => {
  const [port] = await freePorts(1);
  d = deploy({
    instance: 'test',
    epoch: 7,
    servers: [
      { name: 'solo', host: '127.0.0.1' },
      // Owns half the buckets; nothing runs there and nothing is sent to it.
      { name: 'other', host: '127.0.0.2' },
    ],
    streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: 4, max_batch_bytes: 4096, schema: RECORD_SCHEMA('Order') }],
  });
  const s = d.map.streams[0]!;
  const keys = Array.from({ length: 400 }, (_, i) => `k${i}`);
  ownKeys = keys.filter((k) => s.owner[bucketOf(k, s.buckets)] === 0).slice(0, 100);
  foreignKey = keys.find((k) => s.owner[bucketOf(k, s.buckets)] === 1)!;
  d.startPortal('orders', 'solo');
  for (let slot = 0; slot < 4; slot++) d.startRecorder('orders', slot);
  await d.waitSlotsConnected('orders', 4);
  raw = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
  raw.connect(`tcp://127.0.0.1:${port}`);
});

after(async () => {
  raw?.close();
  await d?.stop();
});

/** A well-formed body of `keys` records (seq: their place in it). */
const body = (keys: string[]): Buffer => batchBody(keys.map((key, seq) => ({ key, seq })));

/** Sends one message on the raw DEALER and reads the reply. */
async function exchange(frames: Buffer[]): Promise<Reply> {
  await raw.send(frames);
  return readReply(await raw.receive());
}

const BAD: [string, () => Buffer[], string, RegExp][] = [
  ['garbage', () => [Buffer.from('hello, portal')], 'MALFORMED', /not a 16-byte Flotilla header/],
  ['a header alone', () => [encodeHeader(MessageType.BATCH, 11, 7, 1)], 'MALFORMED', /a BATCH has 3 frames, this one has 1/],
  [
    'a truncated body',
    () => {
      const b = body(['k1', 'k2', 'k3']);
      return [encodeHeader(MessageType.BATCH, 12, 7, 3), Buffer.from('orders'), b.subarray(0, b.length - 5)];
    },
    'MALFORMED',
    /^record 2: /,
  ],
  ['a count that lies', () => [encodeHeader(MessageType.BATCH, 13, 7, 5), Buffer.from('orders'), body(['k1', 'k2'])], 'MALFORMED', /announces 5 records, body holds 2/],
  ['an oversized batch', () => [encodeHeader(MessageType.BATCH, 14, 7, 1), Buffer.from('orders'), Buffer.alloc(5000)], 'TOO_LARGE', /5000 bytes; the limit is 4096/],
  ['an unknown stream', () => [encodeHeader(MessageType.BATCH, 15, 7, 1), Buffer.from('views'), body(['k1'])], 'UNKNOWN_STREAM', /serves stream "orders", not "views"/],
  [
    'a newer protocol version',
    () => {
      const h = encodeHeader(MessageType.BATCH, 16, 7, 1);
      h[2] = 9;
      return [h, Buffer.from('orders'), body(['k1'])];
    },
    'UNSUPPORTED_VERSION',
    /protocol version 9/,
  ],
  ['a key this server does not own', () => [encodeHeader(MessageType.BATCH, 17, 3, 1), Buffer.from('orders'), body([foreignKey])], 'WRONG_OWNER', /reload the map/],
];

/** Sends each bad frame kind, then a flood of garbage, checking every reply. */
async function checkReplies(): Promise<void> {
  for (const [what, frames, code, message] of BAD) {
    const reply = await exchange(frames());
    assert.equal(reply.type, MessageType.ERROR, `${what}: an ERROR reply`);
    assert.equal(reply.code, code, `${what}: code`);
    assert.match(reply.message, message, `${what}: message`);
    assert.equal(reply.epoch, 7, `${what}: the portal's epoch`);
    const h = frames()[0]!;
    if (h.length === HEADER_BYTES) assert.equal(reply.seq, h.readUInt32BE(4), `${what}: seq echoed`);
  }
  // A flood of garbage: answered every time, logged a few times, counted exactly.
  for (let i = 0; i < 500; i++) assert.equal((await exchange([Buffer.from(`junk ${i}`)])).code, 'MALFORMED');
}

test('each kind of bad frame is answered with its error code while good traffic flows and arrives whole', async () => {
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const PER_KEY = 200;
  let sent = 0;
  const good = (async () => {
    for (let q = 0; q < PER_KEY; q++) {
      for (const k of ownKeys) {
        sent++;
        if (!sender.send('orders', { key: k, seq: q })) await sender.writable();
      }
      if (q % 20 === 0) await new Promise((r) => setImmediate(r));
    }
    await sender.flush();
  })();
  try {
    await checkReplies();
    await good;
  } finally {
    sender.close();
  }
  assert.equal(sender.stats.acked, sent);
  const files = [0, 1, 2, 3].map((s) => d.outOf('orders', s));
  assertExactlyOnceInOrder(d.map, 'orders', files, new Map(ownKeys.map((k) => [k, PER_KEY])));
  assert.equal(readRecorded(files).length, sent, 'every good record processed once');

  const stats = await d.stats('orders');
  assert.equal(stats.recordsOut, sent);
  assert.equal(stats.errors.MALFORMED, 504);
  assert.equal(stats.errors.TOO_LARGE, 1);
  assert.equal(stats.errors.UNKNOWN_STREAM, 1);
  assert.equal(stats.errors.UNSUPPORTED_VERSION, 1);
  assert.equal(stats.errors.WRONG_OWNER, 1);
  assert.ok(d.procs.every((p) => p.exitCode === null), 'every process still up');
  await waitFor('the MALFORMED cause in the portal log', () => d.logs.join('').includes('MALFORMED'));
  const malformedLines = d.logs.join('').split('\n').filter((l) => l.includes('"cause":"MALFORMED"')).length;
  assert.ok(malformedLines >= 1 && malformedLines <= 3, `504 malformed frames gave ${malformedLines} log lines`);
});
