/**
 * A real etcd for a test: the Debian package's `etcd` binary, started as a child process in a
 * temp dir on ports from ports.ts, one member or a cluster of three. It binds on an address the
 * test's network namespaces reach (the bridge's, see netns.ts: `bindHost`), or 127.0.0.1.
 *
 *   const e = await startEtcd({ members: 3, bindHost });
 *   e.endpoints        // ['10.x.y.1:PORT', ...], the client URLs' host:port
 *   e.url('/flotilla') // etcd://10.x.y.1:P1,10.x.y.1:P2,10.x.y.1:P3/flotilla
 *   e.kill(1); await e.restart(1); await e.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts } from './ports';
import { stopped, waitFor } from './deploy';

export const ETCD_BIN = process.env.ETCD_BIN ?? '/usr/bin/etcd';

export interface EtcdCluster {
  /** host:port of each member's client URL. */
  endpoints: string[];
  /** The `--map` value for a prefix: etcd://endpoint[,endpoint...]/prefix. */
  url(prefix: string): string;
  /** Kills member `i` (SIGKILL) and waits for it to exit; its data dir stays. */
  kill(i: number): Promise<void>;
  /** Starts member `i` again on its data dir and waits until it answers. */
  restart(i: number): Promise<void>;
  /** Stops every member and removes the data dirs. */
  stop(): Promise<void>;
  logs: string[];
}

export interface EtcdOptions {
  members?: 1 | 3;
  /** Address to listen on (default 127.0.0.1). */
  bindHost?: string;
}


/** True when something accepts a TCP connection at host:port. */
function answers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port });
    s.setTimeout(500);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
    s.once('timeout', () => (s.destroy(), resolve(false)));
  });
}

/** Starts etcd (one member or three) and waits until every member takes client connections. */
export async function startEtcd(o: EtcdOptions = {}): Promise<EtcdCluster> {
  const n = o.members ?? 1;
  const host = o.bindHost ?? '127.0.0.1';
  const ports = await freePorts(2 * n);
  const dir = mkdtempSync(join(tmpdir(), 'flt-etcd-'));
  const name = (i: number) => `m${i}`;
  const client = (i: number) => `http://${host}:${ports[2 * i]!}`;
  const peer = (i: number) => `http://${host}:${ports[2 * i + 1]!}`;
  const initial = Array.from({ length: n }, (_, i) => `${name(i)}=${peer(i)}`).join(',');
  const logs: string[] = [];
  const procs: (ChildProcess | null)[] = new Array<ChildProcess | null>(n).fill(null);
  const launch = (i: number, state: 'new' | 'existing') => {
    const args = [
      '--name', name(i),
      '--data-dir', join(dir, name(i)),
      '--listen-client-urls', client(i),
      '--advertise-client-urls', client(i),
      '--listen-peer-urls', peer(i),
      '--initial-advertise-peer-urls', peer(i),
      '--initial-cluster', initial,
      '--initial-cluster-state', state,
      '--initial-cluster-token', `flt-${process.pid}`,
      '--heartbeat-interval', '50',
      '--election-timeout', '500',
      '--logger', 'zap',
      '--log-level', 'warn',
    ];
    const p = spawn(ETCD_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' } });
    p.stdout!.on('data', (d: Buffer) => logs.push(`[etcd ${name(i)}] ${d.toString()}`));
    p.stderr!.on('data', (d: Buffer) => logs.push(`[etcd ${name(i)}] ${d.toString()}`));
    procs[i] = p;
  };
  const ready = (i: number) => waitFor(() => `etcd member ${name(i)} at ${client(i)}: ${logs.slice(-3).join('')}`, () => answers(host, ports[2 * i]!), 20_000, 50);
  for (let i = 0; i < n; i++) launch(i, 'new');
  try {
    for (let i = 0; i < n; i++) await ready(i);
  } catch (err) {
    for (const p of procs) p?.kill('SIGKILL');
    throw err;
  }
  const endpoints = Array.from({ length: n }, (_, i) => `${host}:${ports[2 * i]!}`);
  return {
    endpoints,
    logs,
    url: (prefix) => `etcd://${endpoints.join(',')}/${prefix.replace(/^\//, '')}`,
    kill: async (i) => {
      const p = procs[i];
      if (!p) return;
      p.kill('SIGKILL');
      await stopped(p);
      procs[i] = null;
    },
    restart: async (i) => {
      if (procs[i]) return;
      launch(i, 'existing');
      await ready(i);
    },
    stop: async () => {
      await Promise.all(
        procs.map(async (p) => {
          if (!p) return;
          p.kill('SIGTERM');
          const t = setTimeout(() => p.kill('SIGKILL'), 3000);
          await stopped(p);
          clearTimeout(t);
        }),
      );
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
