/**
 * How a daemon ends (daemon/process.ts, used by flotilla-portal, flotilla-agent and portal-exec):
 * SIGTERM stops it; exit 0 when the stop succeeded, and when it failed, a logged reason and a
 * non-zero exit, so systemd and an operator see that something was left undone.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { DIST, waitFor } from './support/deploy';

async function runAndTerm(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const p = spawn(process.execPath, [join(DIST, 'test', 'fixtures', 'daemon.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => p.on('exit', (code) => resolve(code)));
  await waitFor('the daemon to start', () => stdout.includes('started'), 10_000);
  p.kill('SIGTERM');
  return { code: await exited, stderr };
}

test('a daemon stopped by SIGTERM exits 0 when its stop succeeds', async () => {
  const { code, stderr } = await runAndTerm([]);
  assert.equal(code, 0, stderr);
  assert.match(stderr, /test-daemon: SIGTERM, stopping/);
});

test('a daemon whose stop fails logs why and exits non-zero', async () => {
  const { code, stderr } = await runAndTerm(['--fail-stop']);
  assert.equal(code, 1);
  assert.match(stderr, /"level":50.*test-daemon: stop failed: the spool could not be synced: EIO/);
});
