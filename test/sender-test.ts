/**
 * The sender library against real portals: it resends what a crashed portal never
 * acknowledged, follows a redirect to the new owner after a map edit, keeps batches within the
 * stream's limit, and refuses records that cannot be sent with a clear error.
 */
import { strict as assert } from 'node:assert';
import { writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { stringify } from 'yaml';
import { bucketOf, slotOf } from '../src/map/bucket';
import { FlotillaError } from '../src/errors';
import { loadMap } from '../src/map/load';
import { Sender } from '../src/sender/sender';
import { deploy, waitFor, type Deployment, withPlainTcp } from './support/deploy';
import { RECORD_SCHEMA, twoStreamMap } from './support/flows';
import { readRecorded } from './support/records';
import { freePorts } from './support/ports';

const deployments: Deployment[] = [];
after(async () => {
  await Promise.all(deployments.map((d) => d.stop()));
});

async function oneStream(opts: { delayMs?: number } = {}): Promise<Deployment> {
  const ports = await freePorts(2);
  const d = deploy(twoStreamMap(ports));
  deployments.push(d);
  d.startPortal('orders');
  for (let slot = 0; slot < 4; slot++) d.startRecorder('orders', slot, { delayMs: opts.delayMs });
  await d.waitSlotsConnected('orders', 4);
  return d;
}

test('a portal killed with SIGKILL and restarted: the sender resends, every record is processed at least once', async () => {
  // Slow slots keep batches in flight, so the kill always catches some unacknowledged.
  const d = await oneStream({ delayMs: 10 });
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const KEYS = 500;
  const PER_KEY = 40;
  let portal = d.procs[0]!;
  try {
    for (let q = 0; q < PER_KEY; q++) {
      for (let k = 0; k < KEYS; k++) if (!sender.send('orders', { key: `k${k}`, seq: q })) await sender.writable();
      if (q === PER_KEY / 2) {
        // Mid-stream, with batches in flight: kill the portal, start a new one.
        await waitFor('some records processed', async () => (await d.stats('orders')).recordsOut > 0);
        portal.kill('SIGKILL');
        await waitFor('the portal to die', () => portal.signalCode === 'SIGKILL');
        portal = d.startPortal('orders');
      }
    }
    await sender.flush();
  } finally {
    sender.close();
  }
  assert.equal(sender.stats.acked, KEYS * PER_KEY, 'every record acknowledged');
  // The sender saw the connection drop (what it had in flight then was resent: every record is
  // acknowledged above and processed below; a kill that caught nothing unacknowledged resends none).
  assert.ok(sender.stats.disconnects > 0, 'the sender saw the connection to the killed portal drop');
  const seen = new Map<string, number>();
  for (const r of readRecorded([0, 1, 2, 3].map((s) => d.outOf('orders', s)))) seen.set(`${r.key}#${r.seq}`, (seen.get(`${r.key}#${r.seq}`) ?? 0) + 1);
  const missing: string[] = [];
  for (let k = 0; k < KEYS; k++) for (let q = 0; q < PER_KEY; q++) if (!seen.has(`k${k}#${q}`)) missing.push(`k${k}#${q}`);
  assert.deepEqual(missing.slice(0, 10), [], `${missing.length} records never processed`);
  await d.waitSlotsConnected('orders', 4); // the components registered again with the new portal
});

test('after a map edit the sender follows WRONG_OWNER to the new owner and loses nothing', async () => {
  const [p1, p2, p3] = await freePorts(3);
  const stream = { name: 'orders', key: 'key', port: p1, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order') };
  const v1 = { instance: 'test', epoch: 1, servers: [{ name: 'alpha', host: '127.0.0.1' }], streams: [stream] };
  const v2 = {
    ...v1,
    epoch: 2,
    servers: [
      { name: 'alpha', host: '127.0.0.1' },
      { name: 'beta', host: '127.0.0.1', ports: { orders: p2 }, agent_port: p3 },
    ],
  };
  const d = deploy(v1);
  deployments.push(d);
  // The sender loads epoch 1 (alpha owns everything); then the map becomes epoch 2 and both
  // portals run it, so alpha redirects beta's keys.
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  writeFileSync(d.mapFile, stringify(withPlainTcp({ ...v2, run_dir: d.runDir })));
  const map2 = loadMap(d.mapFile);
  for (const server of ['alpha', 'beta']) {
    d.startPortal('orders', server);
    for (let slot = 0; slot < 2; slot++) d.startRecorder('orders', slot, { server });
  }
  await d.waitSlotsConnected('orders', 2, 'alpha');
  await d.waitSlotsConnected('orders', 2, 'beta');
  const KEYS = 300;
  try {
    for (let k = 0; k < KEYS; k++) sender.send('orders', { key: `k${k}`, seq: 0 });
    await sender.flush();
  } finally {
    sender.close();
  }
  assert.equal(sender.stats.acked, KEYS);
  assert.ok(sender.stats.redirects > 0, 'some batches were redirected');
  assert.equal(sender.epoch, 2, 'the sender now routes by epoch 2');
  const s = map2.streams[0]!;
  for (const server of ['alpha', 'beta']) {
    const index = map2.servers.findIndex((x) => x.name === server);
    const rows = readRecorded([0, 1].map((slot) => d.outOf('orders', slot, server)));
    for (const r of rows) {
      const bucket = bucketOf(r.key, s.buckets);
      assert.equal(s.owner[bucket], index, `${r.key} processed on ${server}, which does not own bucket ${bucket}`);
      assert.equal(r.slot, slotOf(bucket, 2));
    }
  }
  const all = readRecorded(['alpha', 'beta'].flatMap((server) => [0, 1].map((slot) => d.outOf('orders', slot, server))));
  assert.equal(all.length, KEYS, 'each record processed once, by its owner under epoch 2');
  assert.equal(new Set(all.map((r) => r.key)).size, KEYS);
});

test('batches stay within max_batch_bytes; a record that can never fit, or does not match its schema, is refused at send()', async () => {
  const d = await oneStream();
  const sender = new Sender({ map: { ...d.map, streams: d.map.streams.map((s) => ({ ...s, maxBatchBytes: 1024 })) }, lingerMs: 5 });
  try {
    for (let i = 0; i < 2000; i++) sender.send('orders', { key: `key-${i % 50}-${'x'.repeat(40)}`, seq: i });
    await sender.flush();
    assert.equal(sender.stats.acked, 2000);
    assert.equal(sender.stats.refused, 0, 'the portal refused nothing as TOO_LARGE');
    assert.ok(sender.stats.batches >= 2000 * 60 / 1024, `${sender.stats.batches} batches for ~120 KB at 1 KB each`);

    const refused = (value: Record<string, unknown>, code: string, message: RegExp) =>
      assert.throws(() => sender.send('orders', value), (err: unknown) => err instanceof FlotillaError && err.code === code && message.test(err.message));
    refused({ key: 'k'.repeat(2000), seq: 1 }, 'RECORD_INVALID', /record for stream orders is \d+ bytes; the stream's max_batch_bytes is 1024/);
    refused({ seq: 1 }, 'RECORD_INVALID', /has no key field "key"/);
    refused({ key: 'k', seq: 'one' }, 'RECORD_INVALID', /does not match its schema/);
    assert.throws(() => sender.send('views', { key: 'k' }), (err: unknown) => err instanceof FlotillaError && err.code === 'UNKNOWN_STREAM');
    // Nothing refused at send() was half-added: the sender still flushes cleanly.
    sender.send('orders', { key: 'after', seq: 1 });
    await sender.flush();
    assert.equal(sender.stats.acked, 2001);
  } finally {
    sender.close();
  }
});
