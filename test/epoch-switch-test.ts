/**
 * A map edit moves buckets between two running servers, driven at the portals (the agent
 * drives the same requests): only the buckets `map diff` names move; the old owner stops taking
 * them and drains them before the new owner processes any; nothing is lost.
 *
 *   epoch 1: alpha (weight 1), beta (weight 1)        sender --> both portals --> 2 slow slots each
 *   epoch 2: beta's weight 3: some of alpha's buckets move to beta
 *   beta switches (holds alpha's buckets) -> alpha switches (redirects them, drains) -> beta releases
 */
import { strict as assert } from 'node:assert';
import { writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { stringify } from 'yaml';
import { bucketOf } from '../src/map/bucket';
import { portalRequest } from '../src/portal/client';
import type { PortalRequest } from '../src/protocol/control';
import { loadMap } from '../src/map/load';
import { diffMaps } from '../src/map/diff';
import { Sender } from '../src/sender/sender';
import { deploy, waitFor, type Deployment, withPlainTcp } from './support/deploy';
import { RECORD_SCHEMA, RoundLoad } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';

let d: Deployment | undefined;
after(async () => {
  await d?.stop();
});

test('buckets move from alpha to beta: never processed by both at once, nothing lost, order kept per key', async () => {
  const [pa, pb] = await freePorts(2);
  const stream = { name: 'orders', key: 'key', port: pa, buckets: 64, slots: 2, schema: RECORD_SCHEMA('Order') };
  const v1 = {
    instance: 'test',
    epoch: 1,
    heartbeat_ms: 200,
    servers: [
      { name: 'alpha', host: '127.0.0.1' },
      { name: 'beta', host: '127.0.0.1', ports: { orders: pb } },
    ],
    streams: [stream],
  };
  const v2 = { ...v1, epoch: 2, servers: [v1.servers[0]!, { ...v1.servers[1]!, weight: 3 }] };
  d = deploy(v1);
  const dep = d;
  const before = dep.map;
  for (const server of ['alpha', 'beta']) {
    dep.startPortal('orders', server);
    for (let slot = 0; slot < 2; slot++) dep.startRecorder('orders', slot, { server, delayMs: server === 'alpha' ? 40 : 5 }); // alpha lags: a backlog to drain
  }
  await dep.waitSlotsConnected('orders', 2, 'alpha');
  await dep.waitSlotsConnected('orders', 2, 'beta');
  const ask = <R extends PortalRequest>(server: string, req: R) => portalRequest(dep.runDirOf(server), 'orders', req, 3000);

  const sender = new Sender({ map: dep.mapFile, lingerMs: 1 });
  const KEYS = 300;
  const load = new RoundLoad(sender, 'orders', KEYS, 5);
  writeFileSync(dep.mapFile + '.v2', stringify(withPlainTcp({ ...v2, run_dir: dep.runDir })));
  const after2 = loadMap(dep.mapFile + '.v2');
  const predicted = diffMaps(before, after2).streams[0]!;
  const files = ['alpha', 'beta'].flatMap((server) => [0, 1].map((slot) => dep.outOf('orders', slot, server)));
  try {
    await waitFor('records flowing on both servers', () => new Set(readRecorded(files).map((r) => r.pid)).size === 4);

    writeFileSync(dep.mapFile, stringify(withPlainTcp({ ...v2, run_dir: dep.runDir })));
    assert.ok(predicted.moved > 0 && predicted.moves.every((m) => m.from === 'alpha' && m.to === 'beta'), JSON.stringify(predicted));

    const b = await ask('beta', { cmd: 'switch', epoch: 2 });
    assert.deepEqual(b.incoming, { alpha: predicted.moved });
    const a = await ask('alpha', { cmd: 'switch', epoch: 2 });
    assert.equal(a.outgoing, predicted.moved);
    await waitFor('alpha to drain what it gave up', async () => (await ask('alpha', { cmd: 'drained' })).drained, 15_000);
    const moved = (await ask('beta', { cmd: 'beacon' })).holds.find((h) => h.from === 'alpha')!.buckets;
    await assert.rejects(ask('beta', { cmd: 'release', from: 'alpha', epoch: 2, digest: after2.digest, buckets: moved.slice(1) }), { code: 'RELEASE_MISMATCH' }, 'a release must name every bucket held');
    await assert.rejects(ask('beta', { cmd: 'release', from: 'alpha', epoch: 2, digest: before.digest, buckets: moved }), { code: 'MAP_DISAGREES' }, 'a release must name the map in force');
    await ask('beta', { cmd: 'release', from: 'alpha', epoch: 2, digest: after2.digest, buckets: moved });

    const roundsAtSwitch = load.rounds;
    await waitFor('a few more rounds under epoch 2', () => load.rounds > roundsAtSwitch + 5);
    // The components follow their portal into the new epoch, and say so in their heartbeats.
    await waitFor('every component to report epoch 2', async () => {
      const slots = [...(await ask('alpha', { cmd: 'stats' })).slots, ...(await ask('beta', { cmd: 'stats' })).slots];
      return slots.every((s) => s.epoch === 2);
    });
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.acked, KEYS * load.rounds);
  assert.ok(sender.stats.redirects > 0, 'the sender was redirected');
  assert.equal(sender.epoch, 2);

  const rows = readRecorded(files);
  // Exactly once, and in order per key across both servers (by processing time).
  assert.equal(rows.length, KEYS * load.rounds, 'each record processed once');
  assertExactlyOnceInOrder(dep.map, 'orders', files, sentRounds(KEYS, load.rounds), { order: 'time', message: 'each record once, in order per key across both servers (lost, doubled or out of order)' });
  // Each bucket was processed by one server at a time: all of alpha's work on a moved bucket
  // ends before beta's begins, and unmoved buckets never changed server.
  const s1 = before.streams[0]!;
  const s2 = after2.streams[0]!;
  const onAlpha = new Set(readRecorded(files.slice(0, 2)).map((r) => `${r.pid}`));
  const span = new Map<number, { alphaLast: number; betaFirst: number }>();
  let moved = 0;
  for (const r of rows) {
    const bucket = bucketOf(r.key, 64);
    const alpha = onAlpha.has(`${r.pid}`);
    if (s1.owner[bucket] === s2.owner[bucket]) {
      assert.equal(alpha, s1.owner[bucket] === 0, `bucket ${bucket} did not move, yet ${r.key} was processed on ${alpha ? 'alpha' : 'beta'}`);
      continue;
    }
    const x = span.get(bucket) ?? { alphaLast: 0, betaFirst: Infinity };
    if (alpha) x.alphaLast = Math.max(x.alphaLast, r.at);
    else x.betaFirst = Math.min(x.betaFirst, r.at);
    span.set(bucket, x);
  }
  for (const [bucket, x] of span) {
    if (x.betaFirst < Infinity) moved++;
    assert.ok(x.alphaLast < x.betaFirst, `bucket ${bucket}: alpha processed it until ${x.alphaLast}, beta from ${x.betaFirst}`);
  }
  assert.ok(moved > 0, 'some moved buckets were processed on beta');
  assert.equal(span.size <= predicted.moved, true);
});
