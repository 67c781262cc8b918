/**
 * Servers as separate hosts on this machine: one network namespace per server, each with its own
 * interface and address on a bridge in the test's namespace, where senders and portalctl run.
 *
 *   test process (10.N.M.1 on the bridge) --bridge-- veth --> namespace of server i (10.N.M.10+i)
 *
 * A server's link can be taken down and brought back (`cut`, `heal`): the network between it and
 * everyone else drops, as a switch port failing would. Needs root and iproute2 (`ip`).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export interface Hosts {
  /** The test's own address on the bridge: what a service the test runs (etcd) listens on for the servers. */
  gateway: string;
  /** The address of server `i` (its namespace's interface). */
  address(i: number): string;
  /** The command prefix that runs a program inside server `i`'s namespace. */
  prefix(i: number): string[];
  /** Takes server `i`'s link down: nothing reaches it, nothing leaves it. */
  cut(i: number): void;
  /** Brings server `i`'s link back. */
  heal(i: number): void;
  /** Deletes the namespaces, their links and the bridge. */
  remove(): void;
}

/** True if this process may make network namespaces (root, with `ip`). */
export function canMakeHosts(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });

/** Makes `n` hosts on a fresh bridge, with a random /24 of 10.0.0.0/8 so parallel runs never meet. */
export function makeHosts(n: number): Hosts {
  const id = randomBytes(3).toString('hex'); // interface names stay under Linux's 15 characters
  const net = `10.${200 + (randomBytes(1)[0]! % 50)}.${randomBytes(1)[0]!}`;
  const bridge = `flb${id}`;
  const ns = (i: number) => `flt${id}-${i}`;
  const outer = (i: number) => `flo${id}${i}`;
  const made: string[] = [];
  const remove = () => {
    for (const name of made) {
      try {
        ip('netns', 'del', name);
      } catch {
        // already gone
      }
    }
    try {
      ip('link', 'del', bridge);
    } catch {
      // already gone
    }
  };
  try {
    ip('link', 'add', bridge, 'type', 'bridge');
    ip('addr', 'add', `${net}.1/24`, 'dev', bridge);
    ip('link', 'set', bridge, 'up');
    for (let i = 0; i < n; i++) {
      const inner = `fli${id}${i}`;
      ip('netns', 'add', ns(i));
      made.push(ns(i));
      ip('link', 'add', outer(i), 'type', 'veth', 'peer', 'name', inner);
      ip('link', 'set', inner, 'netns', ns(i));
      ip('link', 'set', outer(i), 'master', bridge);
      ip('link', 'set', outer(i), 'up');
      ip('-n', ns(i), 'addr', 'add', `${net}.${10 + i}/24`, 'dev', inner);
      ip('-n', ns(i), 'link', 'set', inner, 'up');
      ip('-n', ns(i), 'link', 'set', 'lo', 'up');
    }
  } catch (err) {
    remove();
    throw new Error(`could not make ${n} network namespaces: ${(err as { stderr?: Buffer }).stderr?.toString() ?? String(err)}`);
  }
  return {
    gateway: `${net}.1`,
    address: (i) => `${net}.${10 + i}`,
    prefix: (i) => ['ip', 'netns', 'exec', ns(i)],
    cut: (i) => ip('link', 'set', outer(i), 'down'),
    heal: (i) => ip('link', 'set', outer(i), 'up'),
    remove,
  };
}

/** Servers on hosts of their own where this process may make them (root), else all on loopback. */
export interface ServerHosts {
  /** Whether the servers are separate hosts (network namespaces). */
  separate: boolean;
  /** The test's address as the servers reach it (the bridge's; 127.0.0.1 on loopback). */
  gateway: string;
  /** The address of the server named `name`. */
  address(name: string): string;
  /** For deploy(): the command prefix of each server's processes; undefined on loopback. */
  prefixOf: ((server: string) => string[]) | undefined;
  remove(): void;
}

export function serverHosts(names: readonly string[]): ServerHosts {
  if (!canMakeHosts()) return { separate: false, gateway: '127.0.0.1', address: () => '127.0.0.1', prefixOf: undefined, remove: () => undefined };
  const h = makeHosts(names.length);
  const index = (name: string) => {
    const i = names.indexOf(name);
    if (i < 0) throw new Error(`no host for server ${name}`);
    return i;
  };
  return { separate: true, gateway: h.gateway, address: (name) => h.address(index(name)), prefixOf: (server) => h.prefix(index(server)), remove: () => h.remove() };
}
