/**
 * Senders that leave in the middle of a batch, and multipart messages cut short, while a good
 * sender keeps up a steady load:
 *
 *   A: DEALER, 10 BATCHes, reads 3 ACKs, closes     --\
 *   B: DEALER, BATCHes of 2 frames and of 1          ---\
 *   C: raw ZMTP, 3 whole BATCHes, closes before ACKs ----> portal "orders" --> 4 recorders (10 ms a delivery)
 *   D: raw ZMTP, a whole BATCH, one cut in its body  ---/
 *   E: raw ZMTP, a whole BATCH, one cut before body --/
 *   Sender: RoundLoad ------------------------------/
 *
 * ZeroMQ delivers whole messages only: a message cut off on the wire never reaches the portal;
 * what it got whole is processed once (and acknowledged to a connection that is gone); a short
 * message is answered MALFORMED. The portal stays up, and the good sender loses nothing.
 */
import { strict as assert } from 'node:assert';
import { after, test } from 'node:test';
import * as zmq from 'zeromq';
import { encodeHeader, MessageType } from '../src/protocol/wire';
import { Sender } from '../src/sender/sender';
import { waitFor } from './support/deploy';
import { assertAllUp, oneStream, portalLog, slotFiles, SLOTS, stopDeployments } from './support/failures';
import { RoundLoad } from './support/flows';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';
import { batchFrames, keyRange, readReply, zmtp } from './support/zmtp';

after(stopDeployments);

test('senders that disconnect mid-batch, and multipart messages cut short: the portal stays up, counts the malformed, other senders lose nothing', async () => {
  const d = await oneStream({ stream: { window: 16 } }); // A's 10 batches fit in one window
  // Slow deliveries (10 ms), so a batch is still in the portal when its sender has gone.
  for (let slot = 0; slot < SLOTS; slot++) d.startRecorder('orders', slot, { delayMs: 10 });
  await d.waitSlotsConnected('orders', SLOTS);
  const port = d.map.streams[0]!.port;
  const before = await d.stats('orders');

  const KEYS = 200;
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const load = new RoundLoad(sender, 'orders', KEYS, 2);
  const acked = new Set<number>();
  let goneAccepted = 0;
  try {
    await waitFor('records flowing', () => load.rounds > 10);

    // A: a DEALER that sends 10 batches, reads the first 3 ACKs and closes at once (linger 0)
    // with the rest unacknowledged.
    const a = new zmq.Dealer({ linger: 0 });
    a.connect(`tcp://127.0.0.1:${port}`);
    for (let b = 0; b < 10; b++) await a.send(batchFrames(b + 1, keyRange('a-', b * 10, b * 10 + 10)));
    while (acked.size < 3) {
      const reply = readReply(await a.receive());
      assert.equal(reply.type, MessageType.ACK);
      acked.add(reply.seq);
    }
    a.close();

    // B: a DEALER whose BATCHes are cut short to fewer frames: each answered MALFORMED.
    const b = new zmq.Dealer({ linger: 0 });
    b.connect(`tcp://127.0.0.1:${port}`);
    const short = [batchFrames(1, keyRange('b-', 0, 10)).slice(0, 2), batchFrames(2, keyRange('b-', 10, 20)).slice(0, 1)];
    for (const frames of short) {
      await b.send(frames);
      const reply = readReply(await b.receive());
      assert.equal(reply.type, MessageType.ERROR);
      assert.equal(reply.code, 'MALFORMED');
      assert.match(reply.message, new RegExp(`a BATCH has 3 frames, this one has ${frames.length}`));
    }
    b.close();

    // C: raw TCP, 3 whole BATCHes, then the connection closes before any ACK: accepted and
    // processed though no one is left to tell.
    const c = Buffer.concat([0, 1, 2].map((i) => zmtp.message(batchFrames(i + 1, keyRange('c-', i * 10, i * 10 + 10)))));
    await zmtp.sendAndClose(port, c);
    // D: raw TCP, one whole BATCH, then one cut off in its last frame (300 of 600 bytes)...
    const cut = batchFrames(2, keyRange('d-', 10, 30));
    const cutBytes = zmtp.message(cut);
    await zmtp.sendAndClose(port, Buffer.concat([zmtp.message(batchFrames(1, keyRange('d-', 0, 10))), cutBytes.subarray(0, cutBytes.length - cut[2]!.length / 2)]));
    // E: ...and one that stops after its stream frame, the body frame never started.
    await zmtp.sendAndClose(port, Buffer.concat([zmtp.message(batchFrames(1, keyRange('e-', 0, 10))), zmtp.frame(encodeHeader(MessageType.BATCH, 2, 1, 10), true), zmtp.frame(Buffer.from('orders'), true)]));

    await waitFor('the records of the senders that left to be processed', () => {
      const rows = readRecorded(slotFiles(d), (k) => /^[cde]-/.test(k));
      return rows.length >= 30 + 10 + 10;
    });
    const roundsNow = load.rounds;
    await waitFor('the good sender still going', () => load.rounds > roundsNow + 10);
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.acked, load.sent);
  const files = slotFiles(d);
  // The good sender: exactly once, in order, as if nothing had happened.
  assertExactlyOnceInOrder(d.map, 'orders', files, sentRounds(KEYS, load.rounds), { only: (k) => /^k\d+$/.test(k), message: 'the good sender: exactly once, in order per key' });
  // Those that left: what the portal got whole is processed once; a cut message not at all.
  await waitFor('the portal to finish every batch it accepted', async () => {
    const s = await d.stats('orders');
    return s.queuedRecords === 0 && s.batchesAcked === s.batchesIn;
  });
  const count = new Map<string, number>();
  for (const r of readRecorded(files, (k) => !/^k\d+$/.test(k))) count.set(r.key, (count.get(r.key) ?? 0) + 1);
  const times = (prefix: string, from: number, to: number) => Array.from({ length: to - from }, (_, i) => count.get(`${prefix}${from + i}`) ?? 0);
  for (let bt = 0; bt < 10; bt++) {
    const n = times('a-', bt * 10, bt * 10 + 10);
    if (acked.has(bt + 1)) assert.deepEqual(n, Array(10).fill(1), `A's batch ${bt + 1} was acknowledged: processed once`);
    else assert.ok(n.every((x) => x === n[0] && x <= 1), `A's batch ${bt + 1}: processed whole once or not at all (${n})`);
    if (n[0] === 1) goneAccepted++;
  }
  assert.deepEqual(times('c-', 0, 30), Array(30).fill(1), 'C: the 3 batches sent before closing are processed once');
  assert.deepEqual(times('d-', 0, 30), [...Array(10).fill(1), ...Array(20).fill(0)], 'D: the whole batch once, the cut one not at all');
  assert.deepEqual(times('e-', 0, 10), Array(10).fill(1), 'E: the whole batch once');
  assert.deepEqual([...count.keys()].filter((k) => !/^[acde]-\d+$/.test(k)), [], 'nothing else processed (B was refused)');

  const stats = await assertAllUp(d);
  const delta = (code: string) => (stats.errors[code] ?? 0) - (before.errors[code] ?? 0);
  assert.equal(delta('MALFORMED'), 2, "B's two short messages counted as MALFORMED; cut-off wire messages never reach the portal");
  assert.deepEqual(Object.keys(stats.errors).filter((k) => k !== 'MALFORMED'), [], JSON.stringify(stats.errors));
  assert.equal(stats.batchesAcked, stats.batchesIn, 'batches of senders that left were finished too (their ACK went nowhere)');
  assert.equal(stats.recordsOut, stats.recordsIn);
  await waitFor('the MALFORMED cause in the portal log', () => portalLog(d).some((l) => l.includes('"cause":"MALFORMED"') && l.includes('a BATCH has 3 frames, this one has 2')));
  process.stderr.write(`# disconnects: ${load.sent} good records; A got ${acked.size} ACKs, ${goneAccepted} of its 10 batches processed\n`);
});
