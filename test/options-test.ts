/**
 * Options checked once (src/options.ts): a value that cannot work fails at construction with
 * CONFIG_INVALID naming the field, before any socket or file is opened, instead of as a stall
 * later (a slot window of 0 would make the portal send nothing).
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { Agent } from '../src/agent/agent';
import { Component } from '../src/component/component';
import { FlotillaError } from '../src/errors';
import { createLogger } from '../src/log';
import { parseMap } from '../src/map/load';
import { int, number, parseOptions } from '../src/options';
import { Portal } from '../src/portal/portal';
import { RECORD_SCHEMA } from './support/flows';

const log = createLogger('options-test');
const MAP = {
  instance: 'test',
  epoch: 1,
  run_dir: '/tmp/flotilla-options-test',
  servers: [{ name: 'solo', host: '127.0.0.1', agent_port: 7400 }],
  streams: [{ name: 'orders', key: 'key', port: 7401, buckets: 16, slots: 2, schema: RECORD_SCHEMA('Order') }],
};
const map = parseMap(stringify(MAP));

const invalid = (field: RegExp) => (err: unknown) => err instanceof FlotillaError && err.code === 'CONFIG_INVALID' && field.test(err.message);

test('parseOptions merges defaults, keeps what is given, and names every field that cannot work at once', () => {
  const o = parseOptions('Thing', { a: undefined as number | undefined, b: 3 }, { a: 1, b: 2 }, { a: int({ min: 1 }), b: int({ min: 1 }) });
  assert.deepEqual(o, { a: 1, b: 3 });
  assert.throws(
    () => parseOptions('Thing', { a: 0, b: -1.5 }, { a: 1, b: 2 }, { a: int({ min: 1 }), b: number({ min: 0 }) }),
    invalid(/^Thing option a is 0; it must be a whole number of at least 1; Thing option b is -1\.5; it must be a number of at least 0$/),
  );
});

test('a portal with a slot window of 0, a negative queue bound or a port out of range is refused, naming the field', () => {
  const base = { map, server: 'solo', stream: 'orders', log };
  assert.throws(() => new Portal({ ...base, slotWindow: 0 }), invalid(/Portal option slotWindow is 0; it must be a whole number from 1/));
  assert.throws(() => new Portal({ ...base, maxQueuedRecords: -5 }), invalid(/Portal option maxQueuedRecords is -5/));
  assert.throws(() => new Portal({ ...base, port: 70000 }), invalid(/Portal option port is 70000; it must be a whole number from 0 to 65535/));
});

test('an agent with a negative watch interval, and a component for a slot the stream does not have, are refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flt-options-'));
  const file = join(dir, 'map.yaml');
  writeFileSync(file, stringify(MAP));
  assert.throws(() => new Agent({ mapFile: file, server: 'solo', log, watchMs: -1 }), invalid(/Agent option watchMs is -1/));
  assert.throws(() => new Agent({ mapFile: file, server: 'solo', log, portalTimeoutMs: 0 }), invalid(/Agent option portalTimeoutMs is 0/));
  const onBatch = () => undefined;
  assert.throws(() => new Component({ map, server: 'solo', stream: 'orders', slot: 2, onBatch }), invalid(/slot is 2; stream orders has slots 0 to 1 on server solo/));
  assert.throws(() => new Component({ map, server: 'solo', stream: 'orders', slot: -1, onBatch }), invalid(/Component option slot is -1/));
  assert.throws(() => new Component({ map, server: 'solo', stream: 'orders', slot: 0 }), invalid(/exactly one of onBatch and onRawBatch/));
});
