/**
 * `npm run demo -- --seconds N`: the one-host deployment runs, prints live rates, then a
 * summary line with records per second, and exits 0 with nothing lost.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse, stringify } from 'yaml';
import { freePorts } from './support/ports';

const ROOT = join(__dirname, '..', '..');

test('the demo runs for --seconds, shows rates every second, and ends with a summary and exit 0', async () => {
  // The shipped demo map, on free ports and a private run directory.
  const map = parse(readFileSync(join(ROOT, 'config', 'demo.yaml'), 'utf8')) as { run_dir: string; streams: { port: number }[]; servers: { agent_port?: number }[] };
  const ports = await freePorts(3);
  map.streams.forEach((s, i) => (s.port = ports[i]!));
  map.servers[0]!.agent_port = ports[2];
  const dir = mkdtempSync(join(tmpdir(), 'flt-demo-'));
  map.run_dir = join(dir, 'run');
  const file = join(dir, 'demo.yaml');
  writeFileSync(file, stringify(map));

  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'examples', 'demo.js'), '--seconds', '3', '--map', file], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `demo exited ${r.status}\n${r.stdout}\n${r.stderr}`);
  const lines = r.stdout.split('\n');
  const rateLines = lines.filter((l) => /^\s+\d+s\s+[\d,]+/.test(l));
  assert.ok(rateLines.length >= 2, `expected a rate line every second:\n${r.stdout}`);
  const summary = lines.find((l) => l.startsWith('summary:'));
  assert.ok(summary, r.stdout);
  const m = /([\d,]+) clicks sent, ([\d,]+) acknowledged \(([\d,]+) records\/s end to end\); clicks processed ([\d,]+), pages processed ([\d,]+); nothing lost/.exec(summary);
  assert.ok(m, summary);
  const [sent, acked, perSec, clicks, pages] = m.slice(1).map((x) => Number(x.replace(/,/g, '')));
  assert.ok(sent! > 0);
  assert.equal(acked, sent);
  assert.equal(clicks, sent);
  assert.equal(pages, sent);
  assert.ok(perSec! > 0);
});

test('the demo refuses a bad option with a clear message', () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'examples', 'demo.js'), '--seconds', 'soon'], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /--seconds.*must be a positive number/);
});
