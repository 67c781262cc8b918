/**
 * The record checker of the tests (test/support/records.ts) catches each way a run can go wrong:
 * records missing, processed twice, at a slot that does not own their key, never sent, out of
 * order per key (in file order and in time order), and a record file that holds something else.
 * Record files are written here by hand, in the recorder's format, to a fresh temp dir.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { bucketOf, slotOf } from '../src/map/bucket';
import type { FlotillaMap } from '../src/map/types';
import { assertExactlyOnceInOrder, checkRecords, exactlyOnceInOrder, readRecorded, sentRounds } from './support/records';

const SLOTS = 4;
const BUCKETS = 64;
// The checker reads a stream's name, buckets and slots.
const map = { streams: [{ name: 'orders', buckets: BUCKETS, slots: SLOTS }] } as unknown as FlotillaMap;
const dir = mkdtempSync(join(tmpdir(), 'flotilla-records-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const owner = (key: string) => slotOf(bucketOf(key, BUCKETS), SLOTS);
let runs = 0;

/** Writes one record file per slot for `rows` ([key, seq], in processing order), at times 1, 2, 3...; returns the files. */
function write(rows: [string, number][], opts: { slotOf?: (key: string) => number; tail?: string } = {}): string[] {
  const run = runs++;
  const lines: string[][] = Array.from({ length: SLOTS }, () => []);
  rows.forEach(([key, seq], i) => {
    const slot = (opts.slotOf ?? owner)(key);
    lines[slot]!.push(`${slot}\t${key}\t${seq}\t4242\t${1000 + i}.000\n`);
  });
  return lines.map((l, slot) => {
    const f = join(dir, `run${run}-orders-${slot}.log`);
    writeFileSync(f, l.join('') + (slot === 0 ? (opts.tail ?? '') : ''));
    return f;
  });
}

/** Each of `keys` keys k0.. sent `rounds` times, round after round. */
const rounds = (keys: number, n: number): [string, number][] => Array.from({ length: n * keys }, (_, i) => [`k${i % keys}`, Math.floor(i / keys)]);

test('a clean run passes, and a line still being written is not read', () => {
  const files = write(rounds(20, 5), { tail: '0\tk1\t' });
  const c = assertExactlyOnceInOrder(map, 'orders', files, sentRounds(20, 5));
  assert.equal(c.rows.length, 100);
  assert.equal(readRecorded(files).length, 100);
});

test('each kind of problem is found, and exactlyOnceInOrder names it', () => {
  const ok = rounds(10, 3);
  const cases: [string, [string, number][], (key: string) => number, keyof ReturnType<typeof checkRecords> | 'duplicates', RegExp][] = [
    ['a record missing', ok.filter(([k, q]) => !(k === 'k3' && q === 1)), owner, 'missing', /never processed: k3#1/],
    ['a record twice', [...ok, ['k3', 2]], owner, 'duplicates', /1 records processed more than once/],
    ['a record at the wrong slot', ok, (k) => (k === 'k5' ? (owner(k) + 1) % SLOTS : owner(k)), 'unexpected', /k5#0 processed by slot \d, owner is slot \d/],
    ['a record never sent', [...ok, ['k3', 3]], owner, 'unexpected', /k3#3 was never sent/],
    ['a key never sent', [...ok, ['x9', 0]], owner, 'unexpected', /x9#0 was never sent/],
    ['out of order', ok.map(([k, q]): [string, number] => (k === 'k7' && q < 2 ? [k, 1 - q] : [k, q])), owner, 'outOfOrder', /out of order: k7: seq 1 after -1/],
  ];
  for (const [what, rows, slotOfKey, field, message] of cases) {
    const c = checkRecords(map, 'orders', write(rows, { slotOf: slotOfKey }), sentRounds(10, 3));
    if (field === 'duplicates') assert.equal(c.duplicates, 1, what);
    else assert.notDeepEqual(c[field], [], `${what}: found in ${field}`);
    assert.ok(exactlyOnceInOrder(c).some((p) => message.test(p)), `${what}: ${JSON.stringify(exactlyOnceInOrder(c))}`);
  }
});

test('a repeated copy after a crash is a duplicate, not a break in the order', () => {
  const rows = rounds(4, 3);
  const c = checkRecords(map, 'orders', write([...rows.slice(0, 8), ...rows.slice(4)]), sentRounds(4, 3));
  assert.deepEqual([c.missing, c.unexpected, c.outOfOrder], [[], [], []]);
  assert.equal(c.duplicates, 4);
  assert.deepEqual(c.repeated.flat().map((r) => `${r.key}#${r.seq}`).sort(), ['k0#1', 'k1#1', 'k2#1', 'k3#1']);
});

test('time order merges the files by when each record was processed', () => {
  // k0's records alternate between two files (a key that moved back and forth): in file order
  // they are out of order, by time they are not.
  const files = [join(dir, 'moved-a.log'), join(dir, 'moved-b.log')];
  const slot = owner('k0');
  writeFileSync(files[0]!, `${slot}\tk0\t0\t1\t10.5\n${slot}\tk0\t2\t1\t30.5\n`);
  writeFileSync(files[1]!, `${slot}\tk0\t1\t2\t20.5\n${slot}\tk0\t3\t2\t40.5\n`);
  assert.notDeepEqual(checkRecords(map, 'orders', files, sentRounds(1, 4)).outOfOrder, []);
  assertExactlyOnceInOrder(map, 'orders', files, sentRounds(1, 4), { order: 'time' });
  writeFileSync(files[1]!, `${slot}\tk0\t1\t2\t35.5\n${slot}\tk0\t3\t2\t40.5\n`);
  assert.notDeepEqual(checkRecords(map, 'orders', files, sentRounds(1, 4), { order: 'time' }).outOfOrder, []);
});

test('a complete line that is no record line fails the read, unless only some keys are read', () => {
  const files = write(rounds(5, 2), { tail: 'garbage\n' });
  assert.throws(() => readRecorded(files), /-orders-0.log:\d+: not a record line: "garbage"/);
  assert.throws(() => checkRecords(map, 'orders', files, sentRounds(5, 2)), /not a record line/);
  assertExactlyOnceInOrder(map, 'orders', files, sentRounds(5, 2), { only: (k) => k.startsWith('k') });
});
