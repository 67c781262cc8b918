/**
 * TCP ports for maps that must name their ports (tests and benchmarks), handed out without a
 * race: `freePorts(n)`.
 *
 * Binding port 0, noting the port and closing it leaves a window in which another process can take
 * the port before the portal binds it: the kernel hands the same ephemeral ports to every port-0
 * bind and every outgoing connection on the machine. So the ports come from outside the kernel's
 * ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), which only an explicit bind takes, and
 * each is claimed with a lock file `${os.tmpdir()}/flotilla-ports/<port>` holding the claiming
 * pid, created exclusively, so no other process using this module gets it. A claim lives until the
 * process exits; one whose pid is gone (a run killed with SIGKILL) is stale and is taken over. A
 * claimed port is also bound on 127.0.0.1 once, to skip ports some other program listens on.
 */
import { chmodSync, linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where the claims are kept: one file per claimed port, holding the pid that claimed it. */
export const CLAIM_DIR = join(tmpdir(), 'flotilla-ports');

/** Ports below this are left to well-known services, unless nothing else is left. */
const LOWEST = 10_000;

/** The kernel's ephemeral range, inclusive; Linux's default where /proc does not say. */
export function ephemeralRange(): [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high)) return [low!, high!];
  } catch {
    // not Linux: fall through
  }
  return [32768, 60999];
}

/** Ports this process holds a claim on, released at exit. */
const held = new Set<number>();

process.on('exit', () => {
  for (const port of held) {
    try {
      if (claimantOf(port) === process.pid) unlinkSync(claimFile(port));
    } catch {
      // already gone
    }
  }
});

const claimFile = (port: number) => join(CLAIM_DIR, String(port));

/** The pid in a claim file, or undefined when there is no file (or no pid in it yet). */
function claimantOf(port: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(claimFile(port), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** True while a process with this pid exists (EPERM: it exists, as another user's). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Creates `file` holding this pid, if it does not exist; false if it does. The pid is written to a
 * file of this process first and linked into place (atomic, and failing if `file` exists), so a
 * claim is never seen without its pid.
 */
function createExclusive(file: string): boolean {
  const mine = `${file}.${process.pid}.new`;
  writeFileSync(mine, `${process.pid}\n`, { mode: 0o644 });
  try {
    linkSync(mine, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    unlinkSync(mine);
  }
}

/**
 * Claims `port` for this process: true if it now holds the claim. A stale claim (its pid is gone)
 * is taken over under a guard file named for the dead pid, created exclusively, so that of several
 * processes finding the same stale claim only one removes it; the others skip the port.
 */
function claim(port: number): boolean {
  if (createExclusive(claimFile(port))) return true;
  const dead = claimantOf(port);
  if (dead === undefined) return createExclusive(claimFile(port)); // released meanwhile
  if (isAlive(dead)) return false;
  const guard = join(CLAIM_DIR, `${port}.reclaim-${dead}`);
  if (!createExclusive(guard)) return false;
  try {
    // Under the guard, only this process may remove a claim by `dead`: check it still is one.
    if (claimantOf(port) !== dead) return false;
    unlinkSync(claimFile(port));
    return createExclusive(claimFile(port));
  } finally {
    unlinkSync(guard);
  }
}

function release(port: number): void {
  held.delete(port);
  try {
    if (claimantOf(port) === process.pid) unlinkSync(claimFile(port));
  } catch {
    // already gone
  }
}

/** True if a listener can be bound on 127.0.0.1:port right now (and it is closed again). */
function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** The ports to choose from: outside the ephemeral range, from LOWEST up when enough are there. */
function candidates(): number[] {
  const [low, high] = ephemeralRange();
  const outside = (from: number) => {
    const ports: number[] = [];
    for (let p = from; p <= 65535; p++) if (p < low || p > high) ports.push(p);
    return ports;
  };
  const ports = outside(LOWEST);
  return ports.length >= 1000 ? ports : outside(1024);
}

let claimDirMade = false;

/** Makes the claims' directory, once per process. */
function makeClaimDir(): void {
  if (claimDirMade) return;
  mkdirSync(CLAIM_DIR, { recursive: true });
  try {
    chmodSync(CLAIM_DIR, 0o1777); // shared by every user of the machine, like /tmp
  } catch {
    // another user's directory: it is theirs to set
  }
  claimDirMade = true;
}

/**
 * Claims `port` for this process and checks it can be bound on 127.0.0.1: true if both hold (the
 * claim then lives until this process exits), false if another live process holds the claim, this
 * one already does, or the port is in use. freePorts() is made of it; tests of this module call it
 * for a port of their choice.
 */
export async function claimPort(port: number): Promise<boolean> {
  makeClaimDir();
  if (held.has(port) || !claim(port)) return false;
  held.add(port);
  if (await canBind(port)) return true;
  release(port);
  return false;
}

/**
 * Returns `n` distinct ports outside the kernel's ephemeral range that this process has claimed
 * (no other caller of freePorts on the machine gets them until it exits) and that could be bound
 * on 127.0.0.1 a moment ago. Throws when no such ports are left.
 */
export async function freePorts(n: number): Promise<number[]> {
  const pool = candidates();
  // A random start, so that processes starting together do not all try the same ports first.
  const start = Math.floor(Math.random() * pool.length);
  const ports: number[] = [];
  for (let i = 0; i < pool.length && ports.length < n; i++) {
    const port = pool[(start + i) % pool.length]!;
    if (await claimPort(port)) ports.push(port);
  }
  if (ports.length < n) {
    for (const p of ports) release(p);
    throw new Error(`freePorts: only ${ports.length} of ${n} ports outside the ephemeral range ${ephemeralRange().join('-')} are free`);
  }
  return ports;
}
