/**
 * The spool's cursor file and per-bucket positions on their own (a real file in a temp dir): the
 * newer valid copy of the cursor wins, a torn newer copy leaves the older one, a file with no
 * valid copy is told apart from a new one; and the positions' counts move with them.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CursorFile } from '../src/spool/cursor';
import { Positions } from '../src/spool/positions';
import { SEG_HEADER } from '../src/spool/segment';

const BUCKETS = 4;

function cursorIn(dir: string): CursorFile {
  return new CursorFile(dir, BUCKETS);
}

test('a new cursor file reads as nothing processed, and is not reported invalid', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flt-cursor-'));
  const c = cursorIn(dir);
  const got = c.load();
  assert.deepEqual([...got.gen], [0, 0, 0, 0]);
  assert.deepEqual([...got.off], [SEG_HEADER, SEG_HEADER, SEG_HEADER, SEG_HEADER]);
  assert.equal(got.invalid, false);
  c.close(false);
  assert.equal(readFileSync(join(dir, 'cursor')).length, 2 * (16 + 8 * BUCKETS), 'room for both copies taken at creation');
});

test('the newer copy wins; a torn newer copy leaves the older; no valid copy is reported', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flt-cursor-'));
  let c = cursorIn(dir);
  c.load();
  c.save(Uint32Array.of(1, 2, 3, 4), Uint32Array.of(100, 200, 300, 400)); // sequence 1: the second copy
  c.save(Uint32Array.of(5, 6, 7, 8), Uint32Array.of(500, 600, 700, 800)); // sequence 2: the first copy
  c.close(true);
  c = cursorIn(dir);
  let got = c.load();
  c.close(false);
  assert.deepEqual([...got.gen], [5, 6, 7, 8], 'the newer copy');
  assert.deepEqual([...got.off], [500, 600, 700, 800]);

  const file = join(dir, 'cursor');
  const bytes = readFileSync(file);
  bytes[20] = bytes[20]! ^ 0xff; // a byte of the first (newer) copy, as a torn write leaves it
  writeFileSync(file, bytes);
  c = cursorIn(dir);
  got = c.load();
  assert.equal(got.invalid, false);
  assert.deepEqual([...got.gen], [1, 2, 3, 4], 'the older copy, when the newer fails its checksum');
  // The next save goes to the copy after the one loaded: the torn one is overwritten.
  c.save(Uint32Array.of(9, 9, 9, 9), Uint32Array.of(900, 900, 900, 900));
  c.close(false);
  c = cursorIn(dir);
  assert.deepEqual([...c.load().gen], [9, 9, 9, 9]);
  c.close(false);

  writeFileSync(file, Buffer.alloc(bytes.length, 0x5a));
  c = cursorIn(dir);
  got = c.load();
  c.close(false);
  assert.equal(got.invalid, true, 'bytes, but no valid copy');
  assert.deepEqual([...got.off], [SEG_HEADER, SEG_HEADER, SEG_HEADER, SEG_HEADER], 'everything is replayed');
});

test('positions: counts and totals move with done and read; a stale commit is ignored; restore gives back what it reopens', () => {
  const p = new Positions(BUCKETS);
  p.startAt(1, 3);
  p.added(1, 10);
  p.added(2, 5);
  assert.equal(p.totalUnprocessed, 15);
  assert.equal(p.totalUnread, 15);
  const before = p.readPos(1);
  p.markRead(1, 3, 500, 4);
  p.readMore(1, 2);
  assert.equal(p.unread[1], 4);
  assert.equal(p.totalUnread, 9);
  assert.equal(p.restore(1, before), 6, 'the records read since readPos are to read again');
  assert.equal(p.unread[1], 10);
  assert.equal(p.totalUnread, 15);
  assert.equal(p.commit(1, 3, 400, 4), true);
  assert.equal(p.commit(1, 3, 400, 4), false, 'not ahead of the cursor: ignored');
  assert.equal(p.commit(1, 2, 9000, 1), false, 'an older generation: ignored');
  assert.equal(p.unprocessed[1], 6);
  assert.equal(p.totalUnprocessed, 11);
  p.lost(2, 5);
  assert.equal(p.totalUnprocessed, 6);
  assert.equal(p.totalUnread, 10);
});
