/**
 * The package as an operator installs it: `npm pack`, then `npm install -g` of the tarball into
 * a temp prefix. Every command it installs answers --version and --help, the package holds what
 * it runs and not the tests or benches, `portalctl map check` and `map schema` work on the
 * installed files, and the installed agent starts (ZeroMQ and the sd_notify socket load),
 * tells a NOTIFY_SOCKET it is ready, and answers the installed portalctl.
 *
 * Dependencies come from npm's cache, filled by `npm ci` (--prefer-offline: only their
 * metadata may be asked of the registry).
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { DgramSocket } from 'node-unix-socket';
import { stringify } from 'yaml';
import { waitFor } from './support/deploy';
import { freePorts } from './support/ports';
import { clicksMap } from './support/flows';

const ROOT = join(__dirname, '..', '..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; bin: Record<string, string> };
const work = mkdtempSync(join(tmpdir(), 'flt-install-'));
const prefix = join(work, 'prefix');
const installed = join(prefix, 'lib', 'node_modules', pkg.name);
const bin = (name: string) => join(prefix, 'bin', name);
// Not the settings of an `npm test` around this run (its prefix, its scripts).
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')));
const children: ChildProcess[] = [];
after(() => children.forEach((c) => c.kill('SIGKILL')));

before(() => {
  const packed = spawnSync('npm', ['pack', '--ignore-scripts', '--pack-destination', work], { cwd: ROOT, encoding: 'utf8', env, timeout: 60_000 });
  assert.equal(packed.status, 0, packed.stderr);
  const tarball = join(work, packed.stdout.trim().split('\n').pop()!);
  const r = spawnSync('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--omit=dev', tarball], { cwd: work, encoding: 'utf8', env, timeout: 240_000 });
  assert.equal(r.status, 0, `npm install -g of the tarball failed:\n${r.stdout}\n${r.stderr}`);
});

for (const name of Object.keys(pkg.bin)) {
  test(`${name} is installed and answers --version and --help`, () => {
    const v = spawnSync(bin(name), ['--version'], { encoding: 'utf8', env });
    assert.equal(v.status, 0, v.stderr);
    assert.equal(v.stdout.trim(), `${pkg.name} ${pkg.version}`);
    const h = spawnSync(bin(name), ['--help'], { encoding: 'utf8', env });
    assert.equal(h.status, 0, h.stderr);
    assert.match(h.stdout, new RegExp(`^Usage: ${name} `));
    assert.match(h.stdout, /Example/);
  });
}

test('the package holds what it runs, and no tests, benches, sources or source maps', () => {
  for (const f of ['config/map.schema.json', 'config/demo.yaml', 'systemd/flotilla@.target', 'systemd/flotilla-agent@.service', 'docs/operations.md', 'README.md', 'dist/src/index.js', 'dist/src/spool/syncer.js']) {
    assert.ok(existsSync(join(installed, f)), `${f} is missing from the package`);
  }
  for (const f of ['dist/test', 'dist/bench', 'src', 'test', 'bench', 'tsconfig.json']) assert.ok(!existsSync(join(installed, f)), `${f} should not be in the package`);
  const files = (d: string): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(d, e.name)) : [join(d, e.name)]));
  const extra = files(join(installed, 'dist')).filter((f) => !f.endsWith('.js'));
  assert.deepEqual(extra, []);
});

test('the installed portalctl checks the installed demo map and prints the schema the package ships', () => {
  const check = spawnSync(bin('portalctl'), ['map', 'check', join(installed, 'config', 'demo.yaml')], { encoding: 'utf8', env });
  assert.equal(check.status, 0, check.stderr);
  assert.match(check.stdout, /valid; instance demo/);
  const schema = spawnSync(bin('portalctl'), ['map', 'schema'], { encoding: 'utf8', env });
  assert.equal(schema.status, 0, schema.stderr);
  assert.deepEqual(JSON.parse(schema.stdout), JSON.parse(readFileSync(join(installed, 'config', 'map.schema.json'), 'utf8')));
});

test('the installed agent starts, tells NOTIFY_SOCKET it is ready, and answers the installed portalctl', async () => {
  const [agentPort, port] = await freePorts(2);
  const map = join(work, 'map.yaml');
  writeFileSync(
    map,
    stringify(clicksMap({ instance: 'installed', runDir: join(work, 'run'), agentPort: agentPort!, port: port! })),
  );
  const notify = new DgramSocket();
  const got: string[] = [];
  notify.bind(join(work, 'notify.sock'));
  notify.on('data', (b: Buffer) => got.push(b.toString()));
  try {
    const agent = spawn(bin('flotilla-agent'), [], { env: { ...env, FLOTILLA_MAP: map, FLOTILLA_SERVER: 'local', NOTIFY_SOCKET: join(work, 'notify.sock') }, stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(agent);
    let stderr = '';
    agent.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    await waitFor(() => `READY=1 from the installed agent (stderr: ${stderr})`, () => got.some((m) => m.startsWith('READY=1')), 20_000);
    const st = spawnSync(bin('portalctl'), ['status', '--map', map, '--json'], { encoding: 'utf8', env });
    // The agent answered (its portal is not running, which status may count as a problem).
    assert.match(st.stdout, /"server": "local"/, `no status from the agent: ${st.stderr}`);
    agent.kill('SIGTERM');
  } finally {
    notify.close();
  }
});
