/**
 * What the components recorded, read back and checked against what was sent: the one record
 * checker of the tests.
 *
 * The test components (fixtures/recorder.ts, fixtures/faulty.ts, fixtures/exec-relay.py) append
 * one line per record they process, one file per slot, in the order they process them:
 * `slot<TAB>key<TAB>seq<TAB>pid[<TAB>ms[<TAB>delivery]]`.
 *
 * - `readRecorded(files)`: the lines as rows, for counting and for tests' own questions.
 * - `sentRounds(keys, rounds)`: what a RoundLoad-style test sent (key -> seqs 0..n-1).
 * - `checkRecords(map, stream, files, sent)`: each promise checked separately (records missing,
 *   processed where they should not be, out of order per key, processed more than once), so a
 *   test asserts the ones its failure keeps: at least once, in order, duplicates within a bound.
 * - `assertExactlyOnceInOrder(...)`: all of them at once, for a run in which nothing failed.
 * - `assertRepeatsWithinSlotWindow(...)`: the duplicate bound for a slot whose component died.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { bucketOf, slotOf } from '../../src/map/bucket';
import type { FlotillaMap } from '../../src/map/types';
import { DEFAULT_SLOT_WINDOW } from '../../src/portal/portal';

/** One record as a component recorded it. */
export interface Recorded {
  slot: number;
  key: string;
  seq: number;
  pid: number;
  /** When it was processed, ms since the Unix epoch (fractional); NaN where the file has no such column (exec-relay.py). */
  at: number;
  /** That process's delivery number (fixtures/faulty.ts); 0 where the file has no such column. */
  delivery: number;
  /** Where in the list of files given it was read from. */
  file: number;
}

const LINE = /^(\d+)\t([^\t]+)\t(-?\d+)\t(\d+)(?:\t(\d+(?:\.\d+)?))?(?:\t(\d+))?$/;

/**
 * Reads the record lines of `files` (a missing file holds none), file by file in processing
 * order. A line still being written (no newline yet) is left for the next read. A complete line
 * that is no record line throws, naming the file and line, unless `only` is given: a test that
 * keeps only some keys (as when fuzzed records, whose keys may hold tabs or newlines, share the
 * files) cannot tell whose such a line is, and skips it.
 */
export function readRecorded(files: string[], only?: (key: string) => boolean): Recorded[] {
  const rows: Recorded[] = [];
  files.forEach((f, file) => {
    if (!existsSync(f)) return;
    const lines = readFileSync(f, 'utf8').split('\n');
    lines.pop(); // '' after the last newline, or a line not yet written whole
    lines.forEach((line, i) => {
      const m = LINE.exec(line);
      if (!m) {
        if (only) return;
        throw new Error(`${f}:${i + 1}: not a record line: ${JSON.stringify(line.slice(0, 120))}`);
      }
      const key = m[2]!;
      if (only && !only(key)) return;
      rows.push({ slot: Number(m[1]), key, seq: Number(m[3]), pid: Number(m[4]), at: m[5] === undefined ? NaN : Number(m[5]), delivery: Number(m[6] ?? 0), file });
    });
  });
  return rows;
}

/** What was sent: key -> n, meaning the records of that key with seq 0..n-1. */
export type Sent = Map<string, number>;

/** `keys` keys `${prefix}0`.. each sent `rounds` times (seq 0..rounds-1), added to `into`. */
export function sentRounds(keys: number, rounds: number, prefix = 'k', into: Sent = new Map()): Sent {
  for (let k = 0; k < keys; k++) into.set(`${prefix}${k}`, rounds);
  return into;
}

/** Each list holds the first LIMIT findings, then one line saying how many more there were. */
const LIMIT = 20;

/** What the components recorded of one stream, set against what was sent. */
export interface RecordCheck {
  /** Every row read, in the order checked (see `order`). */
  rows: Recorded[];
  /** Records sent and never processed. */
  missing: string[];
  /** Records processed where none should be: at a slot that does not own the key (checked on every copy), or never sent. */
  unexpected: string[];
  /**
   * Keys whose records were first processed out of order: each key's first copies must be seq
   * 0, 1, 2, ... with no gap (a copy processed again, after a crash, is not held against the
   * order). When there are any, the last entry is the story of the first such key.
   */
  outOfOrder: string[];
  /** Extra copies processed, in all. */
  duplicates: number;
  /** Extra copies processed, per file (in the order the files were given). */
  duplicatesByFile: number[];
  /** Per file: the first copies (wherever they were) of the records that file processed again. */
  repeated: Recorded[][];
}

export interface CheckOptions {
  /** Check only the records of these keys; the others are not read (see readRecorded). */
  only?: (key: string) => boolean;
  /**
   * The processing order: `file` (the default) reads the files one after another, right when
   * each key stays at one slot of one server (the order within a file is the order processed);
   * `time` merges every file by the time each record was processed, for keys that move between
   * servers during the test (records processed at the same time keep their file order).
   */
  order?: 'file' | 'time';
}

/**
 * Checks what the components of `stream` recorded in `files` against `sent`: every record sent
 * processed (`missing`), each at the slot that owns its key and none that was not sent
 * (`unexpected`), in order per key (`outOfOrder`), and how many were processed again
 * (`duplicates`). Returns the findings for the test to assert the promises its failure keeps.
 */
export function checkRecords(map: FlotillaMap, stream: string, files: string[], sent: Sent, opts: CheckOptions = {}): RecordCheck {
  const s = map.streams.find((x) => x.name === stream);
  if (!s) throw new Error(`the map has no stream ${stream}`);
  const rows = readRecorded(files, opts.only);
  if (opts.order === 'time') {
    const untimed = rows.find((r) => Number.isNaN(r.at));
    if (untimed) throw new Error(`${files[untimed.file]}: records without the ms column cannot be checked in time order`);
    rows.sort((x, y) => x.at - y.at); // stable: a delivery's records share their time
  }
  const c: RecordCheck = { rows, missing: [], unexpected: [], outOfOrder: [], duplicates: 0, duplicatesByFile: files.map(() => 0), repeated: files.map(() => []) };
  const where = (r: Recorded) => `${basename(files[r.file]!, '.log')}${Number.isNaN(r.at) ? '' : ` at ${r.at}`}`;
  const firstCopy = new Map<string, Recorded>();
  const last = new Map<string, number>();
  let firstOutOfOrder: string | undefined;
  const over = { missing: 0, unexpected: 0, outOfOrder: 0 };
  const note = (list: 'missing' | 'unexpected' | 'outOfOrder', what: string) => {
    if (c[list].length < LIMIT) c[list].push(what);
    else over[list]++;
  };
  for (const r of rows) {
    const id = `${r.key}#${r.seq}`;
    const owner = slotOf(bucketOf(r.key, s.buckets), s.slots);
    if (r.slot !== owner) note('unexpected', `${id} processed by slot ${r.slot}, owner is slot ${owner} (${where(r)})`);
    const first = firstCopy.get(id);
    if (first) {
      c.duplicates++;
      c.duplicatesByFile[r.file]!++;
      if (!c.repeated[r.file]!.includes(first)) c.repeated[r.file]!.push(first);
      continue;
    }
    firstCopy.set(id, r);
    if (!(r.seq >= 0 && r.seq < (sent.get(r.key) ?? 0))) note('unexpected', `${id} was never sent (${where(r)})`);
    const prev = last.get(r.key) ?? -1;
    if (r.seq !== prev + 1) {
      note('outOfOrder', `${r.key}: seq ${r.seq} after ${prev} (${where(r)})`);
      firstOutOfOrder ??= r.key;
    }
    last.set(r.key, r.seq);
  }
  for (const [key, n] of sent) for (let q = 0; q < n; q++) if (!firstCopy.has(`${key}#${q}`)) note('missing', `${key}#${q}`);
  for (const list of ['missing', 'unexpected', 'outOfOrder'] as const) if (over[list] > 0) c[list].push(`... and ${over[list]} more`);
  if (firstOutOfOrder !== undefined) {
    const story = rows.filter((r) => r.key === firstOutOfOrder).slice(0, 40);
    c.outOfOrder.push(`the story of ${firstOutOfOrder}: ${story.map((r) => `${r.seq}@${where(r)}`).join(', ')}`);
  }
  return c;
}

/** Every way the check falls short of "each record sent processed exactly once, at its slot, in order per key". */
export function exactlyOnceInOrder(c: RecordCheck): string[] {
  const problems = [...c.missing.map((m) => `never processed: ${m}`), ...c.unexpected, ...c.outOfOrder.map((o) => `out of order: ${o}`)];
  if (c.duplicates > 0) {
    const examples = c.repeated.flat().slice(0, 5).map((r) => `${r.key}#${r.seq}`);
    problems.push(`${c.duplicates} records processed more than once (per file ${JSON.stringify(c.duplicatesByFile)}), such as ${examples.join(' ')}`);
  }
  return problems;
}

/**
 * Asserts that every record of `sent` was processed exactly once, by the slot that owns its key,
 * in order per key, and nothing else was (of the keys `only` keeps). Returns the check.
 */
export function assertExactlyOnceInOrder(map: FlotillaMap, stream: string, files: string[], sent: Sent, opts: CheckOptions & { message?: string } = {}): RecordCheck {
  const c = checkRecords(map, stream, files, sent, opts);
  assert.deepEqual(exactlyOnceInOrder(c), [], opts.message ?? `${stream}: exactly once, in order per key`);
  return c;
}

/**
 * The duplicate bound for a slot whose component died (docs/delivery.md, "Duplicates"): every
 * record the slot processed again was first processed by the process that died, `deadPid`, in one
 * of its last DEFAULT_SLOT_WINDOW deliveries up to `lastDelivery` (the ones it had not answered
 * DONE for), never earlier ones and never by a process that lived. `slot` is also the slot's place
 * in the files checked (one file per slot, in slot order).
 */
export function assertRepeatsWithinSlotWindow(c: RecordCheck, slot: number, deadPid: number, lastDelivery: number): void {
  for (const r of c.repeated[slot]!) {
    assert.equal(r.pid, deadPid, `slot ${slot}: ${r.key}#${r.seq} processed twice, first by pid ${r.pid}, which did not die`);
    assert.ok(
      r.delivery > lastDelivery - DEFAULT_SLOT_WINDOW && r.delivery <= lastDelivery,
      `slot ${slot}: ${r.key}#${r.seq} processed again, first in delivery ${r.delivery} of the dead process; only its last ${DEFAULT_SLOT_WINDOW} (up to ${lastDelivery}) may come again`,
    );
  }
}

/** The JSON objects of a JSON-lines file, one a line (none if it does not exist yet). */
export function readJsonLines<T>(path: string): T[] {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as T) : [];
}
