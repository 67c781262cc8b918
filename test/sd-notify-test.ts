/**
 * A daemon under systemd (Type=notify): its messages reach $NOTIFY_SOCKET, a unix datagram
 * socket (here the test's own, as systemd's would be), straight from the daemon's process:
 *
 *   daemon --READY=1, STATUS=..., WATCHDOG=1 every WatchdogSec/2--> NOTIFY_SOCKET (this test)
 *   kill -HUP --> RELOADING=1 ... READY=1         kill -TERM --> STOPPING=1, exit 0
 *
 * A hung event loop stops the watchdog pings, so systemd would kill and restart it. The agent
 * reloads its map on SIGHUP and stays up; a portal ignores SIGHUP and stays up.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { DgramSocket } from 'node-unix-socket';
import { stringify } from 'yaml';
import { DIST, waitFor, withPlainTcp } from './support/deploy';
import { freePorts } from './support/ports';
import { clicksMap } from './support/flows';
import { portalctl } from './support/cli';

const dir = mkdtempSync(join(tmpdir(), 'flt-notify-'));
const children: ChildProcess[] = [];
const sockets: DgramSocket[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const s of sockets) s.close();
});

/** A NOTIFY_SOCKET that keeps every message it gets, with the time it came. */
function notifySocket(name: string): { path: string; messages: { at: number; text: string }[] } {
  const path = join(dir, `${name}.notify`);
  const socket = new DgramSocket();
  socket.bind(path);
  sockets.push(socket);
  const messages: { at: number; text: string }[] = [];
  socket.on('data', (buf: Buffer) => messages.push({ at: Date.now(), text: buf.toString() }));
  return { path, messages };
}

function start(args: string[], env: Record<string, string>): { child: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { child, out: () => out, exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
}

const texts = (ms: { text: string }[]) => ms.map((m) => m.text);

test('READY=1 with a STATUS line, WATCHDOG=1 at half the interval, RELOADING=1 on SIGHUP, STOPPING=1 on SIGTERM', async () => {
  const n = notifySocket('daemon');
  const d = start([join(DIST, 'test', 'fixtures', 'daemon.js')], { NOTIFY_SOCKET: n.path, WATCHDOG_USEC: '400000' });
  await waitFor(() => `READY=1 (got ${JSON.stringify(texts(n.messages))})`, () => n.messages.some((m) => m.text.startsWith('READY=1')), 10_000);
  assert.equal(n.messages.find((m) => m.text.startsWith('READY=1'))!.text, 'READY=1\nSTATUS=reloads 0');
  await waitFor('five watchdog pings', () => n.messages.filter((m) => m.text === 'WATCHDOG=1').length >= 5, 10_000);
  const pings = n.messages.filter((m) => m.text === 'WATCHDOG=1').map((m) => m.at);
  const gaps = pings.slice(1).map((t, i) => t - pings[i]!);
  assert.ok(Math.max(...gaps.slice(1)) < 400, `a ping at least every 400 ms (WatchdogSec), gaps ${gaps.join(', ')}`);

  d.child.kill('SIGHUP');
  await waitFor(() => `a reload (output: ${d.out()})`, () => d.out().includes('reloaded 1'), 10_000);
  await waitFor('READY=1 after the reload', () => n.messages.some((m) => m.text === 'READY=1\nSTATUS=reloads 1'), 10_000);
  assert.ok(texts(n.messages).includes('RELOADING=1'));
  assert.match(d.out(), /test-daemon: SIGHUP, reload: reload 1 done/);
  assert.equal(d.child.exitCode, null, 'SIGHUP does not end the daemon');

  d.child.kill('SIGTERM');
  assert.equal(await d.exited, 0, d.out());
  assert.ok(texts(n.messages).includes('STOPPING=1'), JSON.stringify(texts(n.messages)));
});

test('a hung event loop stops the watchdog pings', async () => {
  const n = notifySocket('hung');
  const d = start([join(DIST, 'test', 'fixtures', 'daemon.js')], { NOTIFY_SOCKET: n.path, WATCHDOG_USEC: '200000' });
  await waitFor('three watchdog pings', () => n.messages.filter((m) => m.text === 'WATCHDOG=1').length >= 3, 10_000);
  d.child.kill('SIGUSR2');
  await new Promise((r) => setTimeout(r, 300)); // let the last ping in flight arrive
  const before = n.messages.length;
  await new Promise((r) => setTimeout(r, 1000)); // five watchdog intervals
  assert.equal(n.messages.length, before, `no message from a hung daemon: ${JSON.stringify(texts(n.messages.slice(before)))}`);
  d.child.kill('SIGKILL');
});

test('SIGHUP makes the agent read its map again and stay up; a portal ignores it and stays up', async () => {
  const [agentPort, port] = await freePorts(2);
  const map = clicksMap({ instance: 'hup', runDir: join(dir, 'run'), agentPort: agentPort!, port: port!, slots: 1 });
  const file = join(dir, 'map.yaml');
  writeFileSync(file, stringify(withPlainTcp(map)));
  const n = notifySocket('agent');
  // watch off: only SIGHUP makes the agent read the file
  const agent = start([join(DIST, 'agent', 'main.js'), '--map', file, '--server', 'local', '--watch', '0'], { NOTIFY_SOCKET: n.path });
  const portal = start([join(DIST, 'portal', 'main.js'), '--map', file, '--server', 'local', '--stream', 'clicks'], {});
  await waitFor(() => `the agent ready (${agent.out()})`, () => n.messages.some((m) => m.text.startsWith('READY=1')), 15_000);
  await waitFor(() => `the portal up (${portal.out()})`, () => portalctl('status', '--map', file).stdout.includes('clicks'), 15_000);

  writeFileSync(file, stringify(withPlainTcp({ ...map, epoch: 2 })));
  agent.child.kill('SIGHUP');
  await waitFor(() => `the agent's reload (${agent.out()})`, () => /SIGHUP, reload: epoch 2 taken \(was 1\)/.test(agent.out()), 15_000);
  assert.equal(n.messages[1]?.text, 'RELOADING=1');
  assert.match(n.messages[2]?.text ?? '', /^READY=1\nSTATUS=epoch 1; clicks /);
  // The switch to epoch 2 follows; the next STATUS line (every 5 s) says so.
  await waitFor(() => `STATUS with epoch 2 (${JSON.stringify(texts(n.messages))})`, () => n.messages.some((m) => m.text.startsWith('STATUS=epoch 2; clicks ')), 15_000);

  portal.child.kill('SIGHUP');
  await waitFor(() => `the portal's note (${portal.out()})`, () => portal.out().includes('SIGHUP ignored'), 10_000);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(agent.child.exitCode, null, 'the agent is still up');
  assert.equal(portal.child.exitCode, null, 'the portal is still up');
  // Both still answer: the agent's status shows the portal (exit 4 only because other streams of
  // the map have no portal here: "missing").
  const st = portalctl('status', '--map', file, '--json');
  assert.ok(st.status === 0 || st.status === 4, `portalctl status exit ${st.status}: ${st.stderr}`);
  assert.ok((JSON.parse(st.stdout) as { streams: { stream: string; state: string }[] }).streams.some((x) => x.stream === 'clicks' && x.state !== 'missing' && x.state !== 'dead'));
});
