/**
 * The sender's options are checked once, when it is made: a value that cannot work throws
 * CONFIG_INVALID naming the field, instead of stalling later. No portal is needed: a sender opens
 * no socket before its first record.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { FlotillaError } from '../src/errors';
import { MapKeeper } from '../src/map/keeper';
import { parseMap } from '../src/map/load';
import { Sender, type SenderOptions } from '../src/sender/sender';
import { RECORD_SCHEMA } from './support/flows';

const MAP = parseMap(
  stringify({
    instance: 'test',
    epoch: 4,
    servers: [{ name: 'solo', host: '127.0.0.1' }],
    streams: [{ name: 'orders', key: 'key', port: 7200, schema: RECORD_SCHEMA('Order') }],
  }),
);

function refused(opts: Partial<SenderOptions>, field: string): void {
  assert.throws(
    () => new Sender({ map: MAP, ...opts }),
    (err: unknown) => err instanceof FlotillaError && err.code === 'CONFIG_INVALID' && err.message.includes(`option ${field} `),
    `${JSON.stringify(opts)} is refused naming ${field}`,
  );
}

test('options that cannot work are refused with CONFIG_INVALID naming the field', () => {
  refused({ lingerMs: -1 }, 'lingerMs');
  refused({ lingerMs: Number.NaN }, 'lingerMs');
  refused({ batchBytes: 0 }, 'batchBytes');
  refused({ batchBytes: 1.5 }, 'batchBytes');
  refused({ batchRecords: 0 }, 'batchRecords');
  refused({ batchRecords: -8 }, 'batchRecords');
  refused({ batchRecords: '10' as unknown as number }, 'batchRecords');
});

test('defaults and the smallest values that work are taken; a keeper given is shared', () => {
  for (const opts of [{}, { lingerMs: 0, batchBytes: 1, batchRecords: 1 }, { lingerMs: 0.5 }, { lingerMs: undefined }]) {
    const sender = new Sender({ map: MAP, ...opts });
    assert.equal(sender.epoch, 4);
    sender.close();
  }
  // The values given are the ones used: one record a batch closes a batch per record, at once;
  // by default records gather until the end of the event loop's turn.
  const perRecord = new Sender({ map: MAP, batchRecords: 1 });
  const gathering = new Sender({ map: MAP });
  for (let i = 0; i < 3; i++) {
    perRecord.send('orders', { key: `k${i}`, seq: i });
    gathering.send('orders', { key: `k${i}`, seq: i });
  }
  assert.equal(perRecord.stats.batches, 3);
  assert.equal(gathering.stats.batches, 0);
  perRecord.close();
  gathering.close();
  const keeper = new MapKeeper(MAP);
  const sender = new Sender({ map: keeper });
  assert.equal(sender.keeper, keeper);
  assert.equal(sender.epoch, 4);
  sender.close();
});
