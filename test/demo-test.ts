/**
 * `npm run demo -- --seconds N`: the one-host deployment runs, prints live rates, then a
 * summary line with records per second, and exits 0 with nothing lost. `--port-base N` moves it
 * to ports of its own (and a run dir of its own); a port in use is named before anything starts;
 * the example producer answers --help.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse, stringify } from 'yaml';
import { claimPort, freePorts } from './support/ports';
import { createServer } from 'node:net';

/** `n` consecutive ports claimed for this process: a base for --port-base. */
async function consecutivePorts(n: number): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const [base] = await freePorts(1);
    let ok = true;
    for (let i = 1; i < n && ok; i++) ok = await claimPort(base! + i);
    if (ok) return base!;
  }
  throw new Error(`no ${n} consecutive free ports`);
}

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

test('--port-base runs the shipped map on ports from the base up, says so in its banner, and ends with nothing lost', async () => {
  const base = await consecutivePorts(4);
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'examples', 'demo.js'), '--seconds', '2', '--port-base', String(base)], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `demo exited ${r.status}\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, new RegExp(`listening: agent 127\\.0\\.0\\.1:${base}, clicks portal 127\\.0\\.0\\.1:${base + 1}, pages portal 127\\.0\\.0\\.1:${base + 2}, agent's HTTP server 127\\.0\\.0\\.1:${base + 3}`));
  assert.match(r.stdout, /transport: plain TCP on loopback, no keys \(one host; a deployment across hosts needs keys: docs\/security\.md\)/);
  assert.match(r.stdout, new RegExp(`status page: http://127\\.0\\.0\\.1:${base + 3}/ +metrics: http://127\\.0\\.0\\.1:${base + 3}/metrics`));
  assert.match(r.stdout, new RegExp(`run dir \\S*flotilla-demo-${base};`));
  assert.match(r.stdout, /nothing lost/);
});

test('a port in use is named, with the way out, before anything starts', async () => {
  const base = await consecutivePorts(4);
  const squatter = createServer();
  await new Promise<void>((resolve) => squatter.listen(base + 1, '127.0.0.1', resolve));
  try {
    const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'examples', 'demo.js'), '--seconds', '1', '--port-base', String(base)], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`error: the clicks portal cannot listen on 127\\.0\\.0\\.1:${base + 1}: the address is in use .*--port-base.*\\[BIND_FAILED\\]`));
    assert.equal(r.stdout, '', 'nothing started');
  } finally {
    squatter.close();
  }
});

test('the example producer answers --help, and a bad option with its usage instead of a stack trace', () => {
  const help = spawnSync(process.execPath, [join(ROOT, 'dist', 'examples', 'producer.js'), '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^Usage: producer --map MAP/);
  const bad = spawnSync(process.execPath, [join(ROOT, 'dist', 'examples', 'producer.js'), '--speed', '9'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^producer: Unknown option '--speed'/);
  assert.doesNotMatch(bad.stderr, /\n\s+at /);
});

test('the demo refuses a bad option with a clear message', () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'examples', 'demo.js'), '--seconds', 'soon'], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /--seconds.*must be a positive number/);
});
