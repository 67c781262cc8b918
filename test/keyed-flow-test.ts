/**
 * End to end, one host, two hops:
 *
 *   test sender --tcp--> orders portal --ipc--> 4 recorder slots --emit--> audits portal --ipc--> 4 recorder slots
 *
 * 200,000 records over 10,000 keys: each processed exactly once per stream, by the slot that
 * owns its key, in order per key.
 */
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import { Sender } from '../src/sender/sender';
import { deploy, type Deployment } from './support/deploy';
import { twoStreamMap } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, sentRounds } from './support/records';

const KEYS = 10_000;
const PER_KEY = 20;

let d: Deployment;
const outs = (stream: string) => [0, 1, 2, 3].map((slot) => d.outOf(stream, slot));

before(async () => {
  d = deploy(twoStreamMap(await freePorts(2)));
  d.startPortal('orders');
  d.startPortal('audits');
  for (let slot = 0; slot < 4; slot++) {
    d.startRecorder('orders', slot, { emit: 'audits' });
    d.startRecorder('audits', slot);
  }
  await d.waitSlotsConnected('orders', 4);
  await d.waitSlotsConnected('audits', 4);
});

after(async () => {
  await d?.stop();
  if (process.env.FLOTILLA_TEST_LOGS) process.stderr.write(d.logs.join(''));
});

test('200,000 records over 10,000 keys: once each, by the owning slot, in order per key, on both hops', async () => {
  const sender = new Sender({ map: d.mapFile });
  for (let q = 0; q < PER_KEY; q++) {
    for (let k = 0; k < KEYS; k++) {
      if (!sender.send('orders', { key: `k${k}`, seq: q })) await sender.writable();
    }
  }
  await sender.flush();
  sender.close();
  assert.equal(sender.stats.acked, KEYS * PER_KEY, 'every record acknowledged');
  assert.equal(sender.stats.refused, 0);

  // The orders components acknowledge only after their audits records were acknowledged, so
  // both hops are complete once the sender's flush returns.
  assertExactlyOnceInOrder(d.map, 'orders', outs('orders'), sentRounds(KEYS, PER_KEY));
  assertExactlyOnceInOrder(d.map, 'audits', outs('audits'), sentRounds(KEYS, PER_KEY));

  const orders = await d.stats('orders');
  assert.equal(orders.recordsIn, KEYS * PER_KEY);
  assert.equal(orders.recordsOut, KEYS * PER_KEY);
  assert.equal(orders.queuedRecords, 0);
  const audits = await d.stats('audits');
  assert.equal(audits.recordsOut, KEYS * PER_KEY);
});
