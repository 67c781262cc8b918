/**
 * Log lines as each reader needs them (src/log.ts), from a real process writing to stderr:
 * - under systemd (JOURNAL_STREAM names stderr): JSON led by the syslog priority journald takes
 *   as PRIORITY, `<7>` debug, `<6>` info, `<4>` warning, `<3>` error;
 * - to a pipe or file: JSON lines, each key once per line, an error's code kept;
 * - FLOTILLA_LOG_FORMAT=pretty (the default on a terminal): a readable line per event.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DIST } from './support/deploy';
import { topLevelKeys } from './support/json-keys';

const FIXTURE = join(DIST, 'test', 'fixtures', 'logger.js');
const dir = mkdtempSync(join(tmpdir(), 'flt-log-'));

/** Runs the fixture with stderr to a file (as journald's stream would be one fd); returns the lines. */
function run(env: Record<string, string>, journal: boolean): string[] {
  const file = join(dir, `stderr-${Math.random().toString(36).slice(2)}`);
  const fd = openSync(file, 'w');
  const st = statSync(file);
  const r = spawnSync(process.execPath, [FIXTURE], {
    stdio: ['ignore', 'ignore', fd],
    env: { ...process.env, FLOTILLA_LOG_LEVEL: 'debug', FLOTILLA_LOG_FORMAT: '', JOURNAL_STREAM: journal ? `${st.dev}:${st.ino}` : '', ...env },
  });
  closeSync(fd);
  assert.equal(r.status, 0);
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
}

test('under journald each line carries its syslog priority', () => {
  const lines = run({}, true);
  assert.deepEqual(
    lines.map((l) => /^<(\d)>\{"level":(\d+)/.exec(l)?.slice(1).join(' ')),
    ['7 20', '6 30', '4 40', '3 50'],
    lines.join('\n'),
  );
  for (const l of lines) JSON.parse(l.slice(3));
});

test('JOURNAL_STREAM of another file (a child of a unit writing to a pipe) gives plain JSON', () => {
  const lines = run({ JOURNAL_STREAM: '1:1' }, false);
  assert.equal(lines.length, 4);
  for (const l of lines) assert.ok(l.startsWith('{"level":'), l);
});

test('each key appears once per line; a field that clashes with the logger keeps its value under log_<key>; errors keep their code', () => {
  const lines = run({}, false);
  for (const l of lines) {
    const keys = topLevelKeys(l);
    assert.deepEqual(keys, [...new Set(keys)], `a key twice in ${l}`);
  }
  const ready = JSON.parse(lines[1]!) as Record<string, unknown>;
  assert.equal(typeof ready.pid, 'number');
  assert.notEqual(ready.pid, 4242, "pid is the process's own");
  assert.equal(ready.log_pid, 4242);
  assert.equal(ready.stream, 'clicks');
  assert.equal(ready.log_stream, undefined, 'an equal value is not repeated');
  assert.equal(ready.slot, 3);
  const refused = JSON.parse(lines[3]!) as { err: { code: string; message: string } };
  assert.equal(refused.err.code, 'SPOOL_FULL');
  assert.equal(refused.err.message, 'the spool of clicks is full');
});

test('FLOTILLA_LOG_FORMAT=pretty gives a readable line per event, with the error code', () => {
  const text = run({ FLOTILLA_LOG_FORMAT: 'pretty' }, false).join('\n');
  assert.doesNotMatch(text, /\{"level"/);
  assert.match(text, /^\[\d\d:\d\d:\d\d\.\d{3}\] DEBUG \(fixture\/\d+\): a debug line$/m);
  assert.match(text, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(fixture\/\d+\): slot 3 ready \(pid 4242\)$/m);
  assert.match(text, /^\[\d\d:\d\d:\d\d\.\d{3}\] ERROR \(fixture\/\d+\): a batch was refused$/m);
  assert.match(text, /"code": "SPOOL_FULL"/);
});
