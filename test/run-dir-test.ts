/**
 * The directories a daemon writes are checked at start (src/dirs.ts): a run directory is made
 * 0770 and a spool directory 0750, one loosened since is put back, and one that belongs to
 * another user is refused with DIR_UNSAFE, naming it, by a real agent and a real portal. Under
 * systemd, a run directory under /tmp (private to each unit) is warned of.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { FlotillaError } from '../src/errors';
import { ensureOwnDir, RUN_DIR_MODE, SPOOL_DIR_MODE } from '../src/dirs';
import { ensureRunDir } from '../src/protocol/endpoints';
import { DIST, waitFor } from './support/deploy';
import { freePorts } from './support/ports';
import { clicksMap } from './support/flows';

const dir = mkdtempSync(join(tmpdir(), 'flt-dirs-'));
const modeOf = (p: string) => statSync(p).mode & 0o777;
const NOBODY = 65534;
const asRoot = process.getuid?.() === 0;

test('a missing run directory is made 0770, whatever the umask', () => {
  const old = process.umask(0o077);
  try {
    ensureRunDir(join(dir, 'new', 'run'));
  } finally {
    process.umask(old);
  }
  assert.equal(modeOf(join(dir, 'new', 'run')), RUN_DIR_MODE);
});

test('a run directory left 0777 is put back to 0770, a spool directory to 0750', () => {
  const run = join(dir, 'loose-run');
  const spool = join(dir, 'loose-spool');
  for (const d of [run, spool]) {
    mkdirSync(d);
    chmodSync(d, 0o777);
  }
  ensureRunDir(run);
  assert.equal(ensureOwnDir(spool, SPOOL_DIR_MODE, 'spool directory'), 'corrected');
  assert.equal(modeOf(run), 0o770);
  assert.equal(modeOf(spool), 0o750);
  assert.equal(ensureOwnDir(spool, SPOOL_DIR_MODE, 'spool directory'), 'kept');
});

test('a file where the run directory should be is refused', () => {
  const file = join(dir, 'a-file');
  writeFileSync(file, '');
  assert.throws(() => ensureRunDir(file), (err: unknown) => err instanceof FlotillaError && err.code === 'DIR_UNSAFE' && err.message.includes('is not a directory'));
});

test('a run directory owned by another user is refused, naming its owner', { skip: !asRoot && 'needs root to give a directory away' }, () => {
  const theirs = join(dir, 'theirs');
  mkdirSync(theirs);
  chmodSync(theirs, 0o777);
  chownSync(theirs, NOBODY, NOBODY);
  assert.throws(
    () => ensureRunDir(theirs),
    (err: unknown) => err instanceof FlotillaError && err.code === 'DIR_UNSAFE' && err.message.includes(`${theirs} belongs to uid ${NOBODY}`),
  );
  assert.equal(modeOf(theirs), 0o777, 'left as it was');
});

test('an agent and a portal refuse to start on a run directory of another user: a clear error, exit 1', { skip: !asRoot && 'needs root to give a directory away' }, async () => {
  const [agentPort, port] = await freePorts(2);
  const run = join(dir, 'shared-run');
  mkdirSync(run, { mode: 0o777 });
  chownSync(run, NOBODY, NOBODY);
  const file = join(dir, 'map.yaml');
  writeFileSync(
    file,
    stringify(clicksMap({ instance: 'dirs', runDir: run, agentPort: agentPort!, port: port! })),
  );
  for (const args of [['agent/main.js'], ['portal/main.js', '--stream', 'clicks']]) {
    const r = spawnSync(process.execPath, [join(DIST, args[0]!), '--map', file, '--server', 'local', ...args.slice(1)], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`error: the run directory ${run} belongs to uid ${NOBODY}, not to this process's user \\(uid 0\\).*\\[DIR_UNSAFE\\]`));
  }
});

test('under systemd, an agent with its run directory under /tmp says that other units will not see it', { skip: !dir.startsWith('/tmp/') && 'the temp dir is not under /tmp' }, async () => {
  const [agentPort, port] = await freePorts(2);
  const file = join(dir, 'tmp-map.yaml');
  writeFileSync(
    file,
    stringify(clicksMap({ instance: 'tmpwarn', runDir: join(dir, 'tmp-run'), agentPort: agentPort!, port: port! })),
  );
  const agent = spawn(process.execPath, [join(DIST, 'agent', 'main.js'), '--map', file, '--server', 'local'], { env: { ...process.env, INVOCATION_ID: 'f00d' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  agent.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    await waitFor(() => `the warning (stderr: ${stderr})`, () => stderr.includes('is under /tmp, which is private to each systemd unit'), 15_000);
    assert.match(stderr, /"level":40/);
  } finally {
    agent.kill('SIGKILL');
  }
});
