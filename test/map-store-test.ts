/**
 * The map store without servers: `--map etcd://...` parsed (and refused with what is wrong), a
 * keeper that follows a real etcd takes a new map written there, and never takes invalid content
 * written under its prefix by hand: the map in force stays, the rejection says why. A store that
 * loses etcd keeps its map and says so; it follows again once etcd is back.
 */
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { FlotillaError } from '../src/errors';
import { commitApply, planApply } from '../src/map/apply';
import { EtcdKeys } from '../src/map/etcd-keys';
import { MapKeeper } from '../src/map/keeper';
import { openMap } from '../src/map/open';
import { parseEtcdSource } from '../src/map/store';
import { etcdClient } from '../src/map/store-etcd';
import { waitFor } from './support/deploy';
import { startEtcd, type EtcdCluster } from './support/etcd';
import { RECORD_SCHEMA } from './support/flows';

const PREFIX = 'flotilla/store-test';
let etcd: EtcdCluster;
let url: string;
/** Closed at the end whatever happens: an open store keeps the test process alive. */
let keeper: MapKeeper | undefined;
const keys = new EtcdKeys(PREFIX);

const mapText = (epoch: number, weight = 1) =>
  stringify({
    instance: 'storetest',
    epoch,
    run_dir: '/tmp/flotilla-store-test',
    servers: [{ name: 'alpha', host: '127.0.0.1', weight, ports: {} }],
    streams: [{ name: 'orders', key: 'key', port: 17999, buckets: 16, schema: RECORD_SCHEMA('Order') }],
  });

before(async () => {
  etcd = await startEtcd({ members: 1 });
  url = etcd.url(PREFIX);
});
after(async () => {
  await keeper?.store?.close();
  await etcd?.stop();
});

test('an etcd source is parsed, and a malformed one refused with what is wrong', () => {
  assert.deepEqual(parseEtcdSource('etcd://10.0.0.5:2379,10.0.0.6:2379/flotilla/prod/'), { endpoints: ['10.0.0.5:2379', '10.0.0.6:2379'], prefix: 'flotilla/prod' });
  assert.throws(() => parseEtcdSource('etcd://10.0.0.5:2379'), /--map etcd:\/\/10.0.0.5:2379: no endpoint or no prefix; write etcd:\/\/HOST:PORT\[,HOST:PORT...\]\/PREFIX/);
  assert.throws(() => parseEtcdSource('etcd://10.0.0.5/flotilla'), /"10.0.0.5" is not HOST:PORT/);
  assert.throws(
    () => new MapKeeper('etcd://10.0.0.5:2379/flotilla'),
    (err: FlotillaError) => err.code === 'CONFIG_INVALID' && /opened with openMap\(\) first/.test(err.message),
  );
});

test('a process cannot start on an etcd prefix without a map, and is told how to write one', async () => {
  await assert.rejects(openMap(etcd.url('flotilla/empty')), (err: FlotillaError) => err.code === 'MAP_UNREADABLE' && /no map under the prefix yet \(write one with portalctl map apply FILE/.test(err.message));
});

test('a keeper follows the map in etcd; invalid content written there never replaces the map in force', async () => {
  const client = etcdClient(parseEtcdSource(url));
  try {
    await commitApply(client, keys, await planApply(client, keys, url, mapText(1), '/tmp/m.yaml'));
    keeper = await openMap(url, { server: 'alpha', follow: true });
    assert.equal(keeper.map.epoch, 1);
    await commitApply(client, keys, await planApply(client, keys, url, mapText(2, 2), '/tmp/m.yaml'));
    await waitFor('the keeper to take epoch 2', () => keeper!.map.epoch === 2, 10_000);
    // By hand, past portalctl's checks: a broken map, then not even a record.
    await client.put(keys.map).value(JSON.stringify({ epoch: 3, digest: 'x', text: mapText(3).replace('key: key', 'key: nope'), appliedAt: 0 }));
    await waitFor('the keeper to reject epoch 3', () => keeper!.rejection?.epoch === 3, 10_000);
    assert.equal(keeper.map.epoch, 2, 'epoch 2 stays in force');
    assert.match(keeper.rejection!.problems.map((p) => `${p.path}: ${p.message}`).join('\n'), /streams\[0\]\.key: field "nope" is not in the schema/);
    await client.put(keys.map).value('garbage: [');
    await waitFor('the keeper to reject the garbage', () => keeper!.rejection?.epoch === null && keeper!.rejection.code === 'MAP_INVALID', 10_000);
    assert.equal(keeper.map.epoch, 2, 'epoch 2 stays in force');
    assert.equal(keeper.store!.health.connected, true, 'garbage in etcd is not a lost etcd');
    // etcd gone: the map in force stays, the store says so; back: it follows again.
    await etcd.kill(0);
    await waitFor('the store to say etcd does not answer', () => keeper!.store!.health.connected === false, 15_000);
    assert.equal(keeper.map.epoch, 2);
    await etcd.restart(0);
    await waitFor('the store to answer again', () => keeper!.store!.health.connected, 15_000);
    await client.put(keys.map).value(JSON.stringify({ epoch: 4, digest: '', text: mapText(4, 3), appliedAt: 0 }));
    await waitFor('the keeper to take epoch 4 once etcd is back', () => keeper!.map.epoch === 4, 10_000);
  } finally {
    client.close();
  }
});

test('a keeper that does not follow (a portal, a component, a sender) parses a new map ahead and takes it only when told', async () => {
  const client = etcdClient(parseEtcdSource(url));
  const waiting = await openMap(url, { server: 'alpha' });
  try {
    const from = waiting.map.epoch;
    await commitApply(client, keys, await planApply(client, keys, url, mapText(from + 1, 5), '/tmp/m.yaml'));
    await waitFor(`epoch ${from + 1} to be parsed ahead`, () => waiting.preparedEpoch === from + 1, 10_000);
    assert.equal(waiting.map.epoch, from, 'the map in force stays until the switch');
    assert.deepEqual(waiting.reload(), { type: 'applied', from, epoch: from + 1 });
    assert.equal(waiting.map.servers[0]!.weight, 5);
    assert.equal(waiting.preparedEpoch, null);
    // A map that parses but is no legal edit (its epoch not raised): parsed ahead, still refused
    // at the switch with what is wrong, and the map in force stays.
    await client.put(keys.map).value(JSON.stringify({ epoch: from + 1, digest: 'x', text: mapText(from + 1, 7), appliedAt: 0 }));
    await waitFor('the illegal edit to be parsed ahead', () => waiting.preparedEpoch === from + 1, 10_000);
    const illegal = waiting.reload();
    assert.equal(illegal.type, 'rejected');
    assert.equal(illegal.type === 'rejected' && illegal.rejection.problems[0]!.path, 'epoch');
    assert.equal(waiting.map.servers[0]!.weight, 5, 'the map in force stays');
    // A good map parsed ahead, then one written by hand past portalctl's checks that does not
    // parse: the one parsed ahead is not kept (the store no longer has it), and the broken one is
    // rejected at the switch.
    await commitApply(client, keys, await planApply(client, keys, url, mapText(from + 2, 8), '/tmp/m.yaml'));
    await waitFor(`epoch ${from + 2} to be parsed ahead`, () => waiting.preparedEpoch === from + 2, 10_000);
    await client.put(keys.map).value(JSON.stringify({ epoch: from + 3, digest: 'x', text: mapText(from + 3).replace('key: key', 'key: nope'), appliedAt: 0 }));
    await waitFor('the store to have the broken map', () => waiting.store!.read().includes('key: nope'), 10_000);
    assert.equal(waiting.preparedEpoch, null, 'a map that does not parse is not kept');
    const outcome = waiting.reload();
    assert.equal(outcome.type, 'rejected');
    assert.equal(waiting.map.epoch, from + 1);
  } finally {
    client.close();
    await waiting.store?.close();
  }
});
