/**
 * The layout of the code stays what docs/architecture.md says: every source file of src/,
 * daemon/, portal/ and agent/ is on that map (and every file the map names exists), the core
 * library imports nothing from the daemons, no import cycle anywhere in src/, and files stay small.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { test } from 'node:test';

const ROOT = join(__dirname, '..', '..');
const FOLDERS = ['src', 'daemon', 'portal', 'agent'];
/** "About 400 lines" (issue 8): a file past this has grown a second concept. */
const MAX_LINES = 420;

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(ROOT, dir))) {
    const rel = join(dir, name);
    if (statSync(join(ROOT, rel)).isDirectory()) out.push(...sources(rel));
    else if (name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

const files = FOLDERS.flatMap(sources).sort();

/** The repo-relative files `file` imports (relative imports only, `import type` included). */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/^(?:import|export)\s[^;]*?from\s+'(\.[^']+)'/gms)) out.push(normalize(join(dirname(file), m[1]!)) + '.ts');
  return out;
}

test('docs/architecture.md names every source file, and every file it names exists', () => {
  const doc = readFileSync(join(ROOT, 'docs', 'architecture.md'), 'utf8');
  const named = new Set([...doc.matchAll(/`((?:src|daemon|portal|agent)\/[\w./-]+\.ts)`/g)].map((m) => m[1]!));
  const missing = files.filter((f) => !named.has(f) && !f.endsWith('.d.ts'));
  assert.deepEqual(missing, [], 'files not on the map of the code');
  const stale = [...named].filter((f) => !existsSync(join(ROOT, f)));
  assert.deepEqual(stale, [], 'files on the map that do not exist');
});

test('the core library (src/) imports nothing from the daemons or the CLI', () => {
  const outside = files
    .filter((f) => f.startsWith('src/'))
    .flatMap((f) => importsOf(f).filter((i) => !i.startsWith('src/')).map((i) => `${f} -> ${i}`));
  assert.deepEqual(outside, []);
});

test('no import cycle in src/', () => {
  const graph = new Map(files.filter((f) => f.startsWith('src/')).map((f) => [f, importsOf(f)]));
  const cycles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (f: string) => {
    if (state.get(f) === 'done') return;
    if (state.get(f) === 'open') {
      cycles.push([...path.slice(path.indexOf(f)), f].join(' -> '));
      return;
    }
    state.set(f, 'open');
    path.push(f);
    for (const next of graph.get(f) ?? []) if (graph.has(next)) visit(next);
    path.pop();
    state.set(f, 'done');
  };
  for (const f of graph.keys()) visit(f);
  assert.deepEqual(cycles, []);
});

test(`no source file of src/, daemon/, portal/ or agent/ is over ${MAX_LINES} lines`, () => {
  const big = files.map((f) => [f, readFileSync(join(ROOT, f), 'utf8').split('\n').length] as const).filter(([, n]) => n > MAX_LINES);
  assert.deepEqual(big.map(([f, n]) => `${f}: ${n} lines`), []);
});

test('paths are relative to the repository', () => {
  // A guard for the checks above: they read the sources, not the build.
  assert.ok(files.includes('src/portal/portal.ts'), relative(ROOT, join(ROOT, 'src')));
});
