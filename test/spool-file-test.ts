/**
 * The spool's files on their own (real files in a temp dir, no processes): records come back in
 * order per bucket, the cursor makes a reopened spool replay only what was not processed, a torn
 * or corrupt tail is cut and counted at start-up (the records before it kept), a full spool
 * refuses a write whole, and with fsync `interval` the worker syncs the segments written (seen on
 * the `flotilla:spool:sync` channel) before the spool is closed.
 */
import { strict as assert } from 'node:assert';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { appendFileSync, mkdtempSync, readdirSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fnv1a32 } from '../src/map/bucket';
import { EnvelopeWriter, RecordIndex } from '../src/protocol/envelope';
import { createLogger } from '../src/log';
import type { SpoolSettings } from '../src/map/types';
import { crc32, crc32Copy } from '../src/spool/crc32';
import { type ReadResult, SYNC_CHANNEL, Spool, SpoolFullError, type SyncMessage } from '../src/spool/spool';
import { waitFor } from './support/deploy';

const BUCKETS = 8;
const log = createLogger('spool-test');

function settings(dir: string, over: Partial<SpoolSettings> = {}): SpoolSettings {
  return { mode: 'always', dir, maxBytes: 64 << 20, whenFull: 'block', fsync: 'never', fsyncIntervalMs: 1000, minFreeBytes: 0, ...over };
}

function open(dir: string, over: Partial<SpoolSettings> = {}): { spool: Spool; causes: string[] } {
  const causes: string[] = [];
  const spool = new Spool(settings(dir, over), 'alpha', 'orders', BUCKETS, log, (cause, example) => causes.push(`${cause}: ${example}`));
  spool.open();
  return { spool, causes };
}

/** A batch of envelopes `key#seq` and each record's bucket, as the portal hands them over. */
function batch(keys: string[], seq: number): { body: Buffer; index: RecordIndex; buckets: Uint32Array } {
  const w = new EnvelopeWriter();
  const id = Buffer.alloc(16);
  for (const k of keys) w.appendEncoded(k, id, 0, [], Buffer.from(`${k}#${seq}`));
  const body = w.take();
  const index = new RecordIndex();
  assert.ok(index.scan(body, keys.length), index.error);
  const buckets = new Uint32Array(keys.length);
  for (let i = 0; i < keys.length; i++) buckets[i] = fnv1a32(body, index.keyStarts[i], index.keyEnds[i]) % BUCKETS;
  return { body, index, buckets };
}

/** Adds the payload texts `key#seq` of a batch to `into`, per bucket, in the order written. */
function collect(into: Map<number, string[]>, keys: string[], seq: number, buckets: Uint32Array): void {
  for (let i = 0; i < keys.length; i++) (into.get(buckets[i]!) ?? into.set(buckets[i]!, []).get(buckets[i]!)!).push(`${keys[i]}#${seq}`);
}

/** The payload texts of records read back, in order. */
function textsOf(r: ReadResult): string[] {
  const index = new RecordIndex();
  assert.ok(index.scan(r.body, r.count), index.error);
  const out: string[] = [];
  for (let i = 0; i < r.count; i++) {
    const text = r.body.toString('latin1', index.starts[i], index.starts[i + 1]);
    out.push(/[a-z0-9]+#\d+$/.exec(text)![0]);
  }
  return out;
}

/** Reads every bucket back to the end: the payload texts per bucket, in order. */
function readAll(spool: Spool): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (let b = 0; b < BUCKETS; b++) {
    for (let r = spool.read(b, 4096); r; r = spool.read(b, 4096)) (out.get(b) ?? out.set(b, []).get(b)!).push(...textsOf(r));
  }
  return out;
}

const KEYS = Array.from({ length: 40 }, (_, i) => `k${i}`);

test('records come back per bucket in the order written; a reopened spool replays from the cursor', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flt-spool-'));
  let { spool } = open(dir);
  for (let seq = 0; seq < 50; seq++) {
    const { body, index, buckets } = batch(KEYS, seq);
    spool.write(body, index.starts, buckets, KEYS.length, null);
  }
  assert.equal(spool.stats().records, 50 * KEYS.length);
  const first = readAll(spool);
  for (const [, recs] of first) {
    const perKey = new Map<string, number>();
    for (const r of recs) {
      const [k, s] = r.split('#');
      assert.equal(Number(s), (perKey.get(k!) ?? -1) + 1, `order within ${k}`);
      perKey.set(k!, Number(s));
    }
  }
  // Process bucket 0 and half of bucket 1 (cursor), then close and reopen.
  const r0 = (() => {
    spool.close();
    return open(dir).spool;
  })();
  spool = r0;
  const b0 = spool.read(0, 1 << 30)!;
  spool.commit(0, b0.gen, b0.off, b0.count);
  const b1 = spool.read(1, 200)!;
  spool.commit(1, b1.gen, b1.off, b1.count);
  spool.close();
  spool = open(dir).spool;
  const again = readAll(spool);
  assert.equal(again.get(0), undefined, 'bucket 0 was processed: nothing replays');
  assert.deepEqual(again.get(1), first.get(1)!.slice(b1.count), 'bucket 1 replays after its cursor');
  for (let b = 2; b < BUCKETS; b++) assert.deepEqual(again.get(b), first.get(b), `bucket ${b} replays whole`);
  spool.close();
});

test('a torn tail and a corrupt record are cut at start-up, counted, and the records before them kept', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flt-spool-'));
  let { spool } = open(dir);
  for (let seq = 0; seq < 20; seq++) {
    const { body, index, buckets } = batch(KEYS, seq);
    spool.write(body, index.starts, buckets, KEYS.length, null);
  }
  const before = readAll(spool);
  spool.close();
  const segDir = join(dir, 'alpha', 'orders');
  const segs = readdirSync(segDir).filter((n) => n.endsWith('.seg')).sort();
  // Bucket A: a torn last record (a crash mid-write). Bucket B: garbage after the records.
  // Bucket C: a flipped byte in a record in the middle.
  const [a, b, c] = segs;
  const sizeA = statSync(join(segDir, a!)).size;
  truncateSync(join(segDir, a!), sizeA - 3);
  appendFileSync(join(segDir, b!), Buffer.from('\x07\x00\x00\x00garbage-after-a-crash'));
  const fileC = join(segDir, c!);
  const bytesC = require('node:fs').readFileSync(fileC) as Buffer;
  const mid = Math.floor(bytesC.length / 2);
  bytesC[mid] = bytesC[mid]! ^ 0xff;
  writeFileSync(fileC, bytesC);

  const reopened = open(dir);
  spool = reopened.spool;
  const st = spool.stats();
  assert.equal(st.tornTails, 3, reopened.causes.join('\n'));
  assert.ok(st.cutBytes > 0);
  assert.equal(reopened.causes.filter((c) => c.startsWith('SPOOL_TORN_TAIL')).length, 3);
  assert.match(reopened.causes[0]!, /cut \d+ bytes at offset \d+, kept the records before it/);
  const after = readAll(spool);
  const bucketOfFile = (name: string) => Number(name.slice(0, 5));
  const ba = bucketOfFile(a!);
  assert.deepEqual(after.get(ba), before.get(ba)!.slice(0, -1), 'the torn record alone is lost (it was never acknowledged)');
  const bb = bucketOfFile(b!);
  assert.deepEqual(after.get(bb), before.get(bb), 'garbage after the last record: every record kept');
  const bc = bucketOfFile(c!);
  const kept = after.get(bc) ?? [];
  assert.ok(kept.length > 0 && kept.length < before.get(bc)!.length, `corrupt middle: the records before it kept (${kept.length})`);
  assert.deepEqual(kept, before.get(bc)!.slice(0, kept.length));
  // The spool goes on: new records append after the cut.
  const { body, index, buckets } = batch(KEYS, 99);
  spool.write(body, index.starts, buckets, KEYS.length, null);
  assert.equal(readAll(spool).get(ba)!.at(-1)!.endsWith('#99'), true);
  spool.close();
});

test('a write over max_bytes is refused whole with SPOOL_FULL and nothing of it is kept', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flt-spool-'));
  const { spool } = open(dir, { maxBytes: 20_000 });
  let refused: unknown = null;
  let written = 0;
  for (let seq = 0; seq < 100 && !refused; seq++) {
    const { body, index, buckets } = batch(KEYS, seq);
    try {
      spool.write(body, index.starts, buckets, KEYS.length, null);
      written += KEYS.length;
    } catch (err) {
      refused = err;
    }
  }
  assert.ok(refused instanceof SpoolFullError, String(refused));
  assert.equal(refused.code, 'SPOOL_FULL');
  assert.equal(refused.state, 'full');
  assert.match(refused.message, /would pass max_bytes 20000/);
  assert.equal(spool.stats().records, written);
  assert.equal(spool.stats().state, 'full');
  const all = [...readAll(spool).values()].flat();
  assert.equal(all.length, written, 'the refused batch left nothing behind');
  spool.close();
});

test('a processed segment is not deleted while records are staged for it: the next flush writes them', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flt-spool-'));
  const { spool } = open(dir, { maxBytes: 256 << 10 });
  // Every bucket's segment holds records, all read back (to be committed below).
  const first = batch(KEYS, 0);
  spool.write(first.body, first.index.starts, first.buckets, KEYS.length, null);
  const reads = [];
  for (let b = 0; b < BUCKETS; b++) for (let r = spool.read(b, 4096); r; r = spool.read(b, 4096)) reads.push(r);
  // Records staged for the same segments, and then a batch refused for max_bytes: the spool is
  // short of room, so processed segments are deleted at the next cursor save.
  const second = batch(KEYS, 1);
  spool.stage(second.body, second.index.starts, second.buckets, KEYS.length, null);
  const huge = new EnvelopeWriter();
  huge.appendEncoded('k0', Buffer.alloc(16), 0, [], Buffer.alloc(300 << 10));
  const hugeBody = huge.take();
  const hugeIndex = new RecordIndex();
  assert.ok(hugeIndex.scan(hugeBody, 1));
  assert.throws(() => spool.stage(hugeBody, hugeIndex.starts, new Uint32Array([0]), 1, null), SpoolFullError);
  for (const r of reads) spool.commit(r.bucket, r.gen, r.off, r.count);
  spool.saveCursor();
  spool.flush(); // threw a TypeError (write_failed) when the staged-for segment had been deleted
  const back = readAll(spool);
  assert.deepEqual([...back.values()].flat().sort(), KEYS.map((k) => `${k}#1`).sort(), 'the staged records, once each');
  spool.close();
});

test('the record checksum is the CRC-32 zlib computes, for every length and offset', () => {
  const { crc32: zlibCrc } = require('node:zlib') as { crc32: (b: Uint8Array) => number };
  const bytes = Buffer.from(Array.from({ length: 600 }, (_, i) => (i * 131 + 7) & 255));
  for (let start = 0; start < 9; start++) {
    for (let end = start; end <= 300; end++) {
      assert.equal(crc32(bytes, start, end), zlibCrc(bytes.subarray(start, end)), `[${start}, ${end})`);
      const out = Buffer.alloc(310);
      assert.equal(crc32Copy(bytes, start, end, out, 5), zlibCrc(bytes.subarray(start, end)), `copy [${start}, ${end})`);
      assert.deepEqual(out.subarray(5, 5 + end - start), bytes.subarray(start, end));
    }
  }
});

test('fsync always and interval: the same records come back; the interval sync runs on its worker without failures', async () => {
  for (const fsync of ['always', 'interval'] as const) {
    const dir = mkdtempSync(join(tmpdir(), 'flt-spool-'));
    let { spool, causes } = open(dir, { fsync, ...(fsync === 'interval' ? { fsyncIntervalMs: 20 } : {}) });
    // The interval syncs of this spool, as its worker reports them: spool -> syncer worker -> flotilla:spool:sync.
    const spoolDir = spool.dir;
    const syncs: SyncMessage[] = [];
    const onSync = (m: unknown): void => {
      if ((m as SyncMessage).dir === spoolDir) syncs.push(m as SyncMessage);
    };
    subscribe(SYNC_CHANNEL, onSync);
    const written = new Map<number, string[]>();
    try {
      for (let seq = 0; seq < 10; seq++) {
        const { body, index, buckets } = batch(KEYS, seq);
        spool.write(body, index.starts, buckets, KEYS.length, null);
        collect(written, KEYS, seq, buckets);
      }
      if (fsync === 'interval') {
        // Before close(), which syncs every file itself: an interval sync has covered segments
        // written (more files than the cursor alone) and none of them failed.
        await waitFor(
          () => `an interval sync of the segments written, without failures (seen ${syncs.length}, the last ${JSON.stringify(syncs.at(-1))})`,
          () => syncs.some((s) => s.files > 1 && s.failed === 0),
          5000,
          5,
        );
      }
    } finally {
      spool.close(); // also when the wait failed: no file is left open
      unsubscribe(SYNC_CHANNEL, onSync);
    }
    assert.deepEqual(causes, [], `${fsync}: no failures counted`);
    if (fsync === 'always') assert.deepEqual(syncs, [], 'always: no interval syncs');
    ({ spool, causes } = open(dir));
    const back = readAll(spool);
    assert.equal([...back.values()].flat().length, 10 * KEYS.length, `${fsync}: every record back`);
    for (let b = 0; b < BUCKETS; b++) assert.deepEqual(back.get(b), written.get(b), `${fsync}: bucket ${b} back as written`);
    spool.close();
  }
});

test('segments roll over, are prepared ahead and deleted once processed; a reopened spool still has every record in order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flt-spool-'));
  let { spool, causes } = open(dir, { maxBytes: 700_000 }); // 21,875-byte segments
  const written = new Map<number, string[]>();
  for (let seq = 0; seq < 300; seq++) {
    const { body, index, buckets } = batch(KEYS, seq);
    spool.write(body, index.starts, buckets, KEYS.length, null);
    collect(written, KEYS, seq, buckets);
    if (seq % 10 === 0) await new Promise((r) => setImmediate(r)); // lets the next segments be prepared
  }
  const segDir = join(dir, 'alpha', 'orders');
  const segsOf = () => readdirSync(segDir).filter((n) => n.endsWith('.seg'));
  assert.ok(segsOf().length > 2 * BUCKETS, `segments rolled over: ${segsOf().length} files`);
  // Process bucket 0 completely: its finished segments go.
  const before0 = segsOf().filter((n) => n.startsWith('00000-')).length;
  const read0: string[] = [];
  for (let r = spool.read(0, 4096); r; r = spool.read(0, 4096)) {
    spool.commit(0, r.gen, r.off, r.count);
    read0.push(...textsOf(r));
  }
  assert.deepEqual(read0, written.get(0), 'bucket 0 read back as written, across its segments');
  spool.saveCursor();
  const after0 = segsOf().filter((n) => n.startsWith('00000-')).length;
  assert.ok(after0 < before0, `bucket 0's processed segments deleted (${before0} -> ${after0})`);
  spool.close();
  ({ spool, causes } = open(dir, { maxBytes: 700_000 }));
  assert.deepEqual(causes, [], 'nothing torn, nothing stray (empty prepared segments are fine)');
  const back = readAll(spool);
  assert.equal(back.get(0), undefined, 'bucket 0 was processed');
  for (let b = 1; b < BUCKETS; b++) {
    const recs = back.get(b) ?? [];
    const perKey = new Map<string, number>();
    for (const rec of recs) {
      const [k, s] = rec.split('#');
      assert.equal(Number(s), (perKey.get(k!) ?? -1) + 1, `bucket ${b}: ${k} in order, none lost`);
      perKey.set(k!, Number(s));
    }
    for (const [, last] of perKey) assert.equal(last, 299);
    assert.deepEqual(back.get(b), written.get(b), `bucket ${b} back as written after the reopen`);
  }
  spool.close();
});
