/**
 * freePorts (test/support/ports.ts) hands out ports without a race: distinct ports outside the
 * kernel's ephemeral range, each claimed by a lock file that no other process takes while its
 * claimant lives; a claim left by a process that died is taken over; one whose process exits is
 * released.
 *
 *   this test  --claimPort(p)-->  ${tmpdir}/flotilla-ports/<p>  <--claims--  child process
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CLAIM_DIR, claimPort, ephemeralRange, freePorts } from './support/ports';

const PORTS_JS = join(__dirname, 'support', 'ports.js');
const claimant = (port: number) => Number(readFileSync(join(CLAIM_DIR, String(port)), 'utf8'));

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/**
 * A process that claims `n` ports with freePorts, prints them as JSON, then stays up until killed
 * (`stay`) or exits at once.
 */
async function claimingChild(n: number, stay: boolean): Promise<{ child: ChildProcess; ports: number[] }> {
  const script = `require(${JSON.stringify(PORTS_JS)}).freePorts(${n}).then((p) => { console.log(JSON.stringify(p)); ${stay ? 'setInterval(() => {}, 1000);' : ''} });`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    child.once('exit', (code) => reject(new Error(`the claiming child exited (${code}) before printing its ports`)));
  });
  return { child, ports: JSON.parse(line) as number[] };
}

const exited = (child: ChildProcess) =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => child.once('exit', () => r()));

test('ports are distinct, outside the ephemeral range, and claimed by this process', async () => {
  const [low, high] = ephemeralRange();
  const first = await freePorts(8);
  const second = await freePorts(8);
  const all = [...first, ...second];
  assert.equal(new Set(all).size, all.length, `distinct: ${all}`);
  for (const p of all) {
    assert.ok(Number.isInteger(p) && p >= 1024 && p <= 65535, `${p} is an unprivileged port`);
    assert.ok(p < low || p > high, `${p} is outside the ephemeral range ${low}-${high}`);
    assert.equal(claimant(p), process.pid, `the claim on ${p} names this process`);
    assert.equal(await claimPort(p), false, `${p} is not handed out twice`);
  }
});

test("another process's claim is not handed out while it lives, and is taken over once it died", async () => {
  const { child, ports } = await claimingChild(3, true);
  for (const p of ports) {
    assert.equal(claimant(p), child.pid);
    assert.equal(await claimPort(p), false, `${p}: claimed by live pid ${child.pid}`);
  }
  // Many more ports for this process: none of the child's.
  const mine = await freePorts(50);
  assert.deepEqual(mine.filter((p) => ports.includes(p)), []);

  // SIGKILL: no exit handler runs, the claims stay behind, stale.
  child.kill('SIGKILL');
  await exited(child);
  for (const p of ports) {
    assert.equal(claimant(p), child.pid, `${p}: the dead process's claim is still there`);
    assert.equal(await claimPort(p), true, `${p}: a stale claim is taken over`);
    assert.equal(claimant(p), process.pid);
  }
  assert.deepEqual(
    ports.filter((p) => existsSync(join(CLAIM_DIR, `${p}.reclaim-${child.pid}`))),
    [],
    'no takeover guard left behind',
  );
});

test('a process that exits releases its claims', async () => {
  const { child, ports } = await claimingChild(3, false);
  await exited(child);
  assert.equal(child.exitCode, 0);
  for (const p of ports) assert.equal(existsSync(join(CLAIM_DIR, String(p))), false, `${p} released`);
});

test('a port some other program listens on is not handed out, and not left claimed', async () => {
  // Stands in for another program: a listener on a port the OS chose.
  const other = await new Promise<Server>((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
  try {
    const busy = (other.address() as { port: number }).port;
    assert.equal(await claimPort(busy), false, `${busy} is in use`);
    assert.equal(existsSync(join(CLAIM_DIR, String(busy))) && claimant(busy) === process.pid, false, `no claim on ${busy} kept`);
  } finally {
    await new Promise((r) => other.close(r));
  }
});
