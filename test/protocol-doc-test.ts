/**
 * docs/protocol.md is enough to write a sender: this one is written from the page alone, with a
 * plain ZeroMQ DEALER and avsc's generic Avro encoder (the Envelope schema is read out of the
 * page itself), against a real portal process and real components. Nothing from src/ is used to
 * talk to the portal; test/support only starts the processes and reads what the components
 * recorded.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import avro from 'avsc';
import * as zmq from 'zeromq';
import { DIST, deploy, type Deployment } from './support/deploy';
import { freePorts } from './support/ports';
import { readRecorded } from './support/records';

const ROOT = join(DIST, '..');
const EPOCH = 3;
const SLOTS = 2;

// ---- from docs/protocol.md ---------------------------------------------------------------------

const doc = readFileSync(join(ROOT, 'docs', 'protocol.md'), 'utf8');

/** The first ```json block after "Its Avro schema, verbatim": the Envelope schema. */
function envelopeSchemaFromDoc(): avro.Schema {
  const at = doc.indexOf('Its Avro schema, verbatim');
  assert.ok(at >= 0, 'docs/protocol.md has no "Its Avro schema, verbatim"');
  const block = /```json\n([\s\S]*?)```/.exec(doc.slice(at));
  assert.ok(block, 'no json block after "Its Avro schema, verbatim"');
  return JSON.parse(block[1]!) as avro.Schema;
}

const Envelope = avro.Type.forSchema(envelopeSchemaFromDoc());
const BATCH = 1;
const ACK = 2;
const ERROR = 3;

/** The 16-byte header: "FL", version 1, type, then seq, epoch, count as big-endian u32. */
function header(type: number, seq: number, epoch: number, count: number, version = 1): Buffer {
  const b = Buffer.alloc(16);
  b.write('FL', 0, 'latin1');
  b[2] = version;
  b[3] = type;
  b.writeUInt32BE(seq, 4);
  b.writeUInt32BE(epoch, 8);
  b.writeUInt32BE(count, 12);
  return b;
}

interface Reply {
  type: number;
  seq: number;
  epoch: number;
  count: number;
  frames: Buffer[];
}

function parseReply(frames: Buffer[]): Reply {
  const h = frames[0]!;
  assert.equal(h.length, 16, 'a reply starts with a 16-byte header');
  assert.equal(h.toString('latin1', 0, 2), 'FL');
  assert.equal(h[2], 1, 'version');
  return { type: h[3]!, seq: h.readUInt32BE(4), epoch: h.readUInt32BE(8), count: h.readUInt32BE(12), frames };
}

// The stream's payload schema, as the map states it.
const ORDER = {
  type: 'record',
  name: 'Order',
  fields: [
    { name: 'key', type: 'string' },
    { name: 'seq', type: 'long' },
  ],
};
const Order = avro.Type.forSchema(ORDER as avro.Schema);

const senderId = randomBytes(8);
let counter = 0n;

/** A batch body: one Avro Envelope per record, end to end. */
function body(records: { key: string; seq: number }[]): Buffer {
  return Buffer.concat(
    records.map((r) => {
      const id = Buffer.alloc(16);
      senderId.copy(id, 0);
      id.writeBigUInt64BE(++counter, 8);
      return Envelope.toBuffer({ key: r.key, id, timestamp: Date.now(), provenance: [], payload: Order.toBuffer(r) });
    }),
  );
}

// ---- the deployment and the connection ---------------------------------------------------------

let d: Deployment;
let dealer: zmq.Dealer;
let port = 0;

before(async () => {
  [port] = await freePorts(1);
  d = deploy({
    instance: 'doctest',
    epoch: EPOCH,
    servers: [{ name: 'solo', host: '127.0.0.1' }],
    streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: SLOTS, window: 4, schema: ORDER }],
  });
  d.startPortal('orders');
  for (let slot = 0; slot < SLOTS; slot++) {
    d.startRecorder('orders', slot, { out: outFile(slot) });
  }
  await d.waitSlotsConnected('orders', SLOTS);
  dealer = new zmq.Dealer({ linger: 0, receiveTimeout: 15_000, sendTimeout: 15_000 });
  dealer.connect(`tcp://127.0.0.1:${port}`);
});

after(async () => {
  dealer?.close();
  await d?.stop();
  if (process.env.FLOTILLA_TEST_LOGS) process.stderr.write(d.logs.join(''));
});

const outFile = (slot: number) => join(d.dir, `orders-${slot}.log`);

/** Sends one message and returns the reply to its seq (failing after the receive timeout). */
async function request(frames: Buffer[], seq: number): Promise<Reply> {
  await dealer.send(frames);
  for (;;) {
    const reply = parseReply(await dealer.receive());
    if (reply.seq === seq) return reply;
  }
}

/** Every `key<TAB>seq` the recorder components recorded, with how often. */
function recorded(): Map<string, number> {
  const seen = new Map<string, number>();
  const files = Array.from({ length: SLOTS }, (_, slot) => outFile(slot));
  for (const r of readRecorded(files)) seen.set(`${r.key}\t${r.seq}`, (seen.get(`${r.key}\t${r.seq}`) ?? 0) + 1);
  return seen;
}

// ---- the tests -----------------------------------------------------------------------------------

test('a BATCH is answered by an ACK with its seq and count, once every record was processed', async () => {
  const records = Array.from({ length: 40 }, (_, i) => ({ key: `doc-${i % 13}-\u00e9`, seq: i }));
  const reply = await request([header(BATCH, 7, 0, records.length), Buffer.from('orders'), body(records)], 7);
  assert.equal(reply.type, ACK, `expected ACK, got type ${reply.type}: ${reply.frames.slice(1).join(' ')}`);
  assert.equal(reply.frames.length, 1, 'an ACK is the header alone');
  assert.equal(reply.seq, 7);
  assert.equal(reply.count, records.length);
  assert.equal(reply.epoch, EPOCH, "the ACK carries the portal's map epoch");
  // ACK means processed: every record is already in a component's output, once.
  const seen = recorded();
  for (const r of records) assert.equal(seen.get(`${r.key}\t${r.seq}`), 1, `record ${r.key}#${r.seq} processed once`);
});

test('an empty BATCH is acknowledged at once with count 0', async () => {
  const reply = await request([header(BATCH, 8, 0, 0), Buffer.from('orders'), Buffer.alloc(0)], 8);
  assert.equal(reply.type, ACK);
  assert.equal(reply.count, 0);
});

test('a BATCH naming another stream gets ERROR UNKNOWN_STREAM with its seq echoed', async () => {
  const reply = await request([header(BATCH, 9, 0, 1), Buffer.from('no-such-stream'), body([{ key: 'x', seq: 1 }])], 9);
  assert.equal(reply.type, ERROR);
  assert.equal(reply.frames.length, 3, 'an ERROR is header, code, message');
  assert.equal(reply.seq, 9);
  assert.equal(reply.epoch, EPOCH);
  assert.equal(reply.count, 0);
  assert.equal(reply.frames[1]!.toString('ascii'), 'UNKNOWN_STREAM');
  assert.match(reply.frames[2]!.toString('utf8'), /orders/);
});

test('a BATCH whose header count disagrees with its body gets ERROR MALFORMED', async () => {
  const reply = await request([header(BATCH, 10, 0, 3), Buffer.from('orders'), body([{ key: 'm', seq: 1 }, { key: 'm', seq: 2 }])], 10);
  assert.equal(reply.type, ERROR);
  assert.equal(reply.seq, 10);
  assert.equal(reply.frames[1]!.toString('ascii'), 'MALFORMED');
});

test('a header of another protocol version gets ERROR UNSUPPORTED_VERSION', async () => {
  const reply = await request([header(BATCH, 11, 0, 1, 2), Buffer.from('orders'), body([{ key: 'v', seq: 1 }])], 11);
  assert.equal(reply.type, ERROR);
  assert.equal(reply.seq, 11);
  assert.equal(reply.frames[1]!.toString('ascii'), 'UNSUPPORTED_VERSION');
});
