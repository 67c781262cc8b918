/**
 * Starts a real one-host deployment for a test: a map in a temp dir, one portal process per
 * stream, component processes for every slot, all torn down by `stop()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { stopChildren } from '../../daemon/children';
import { requestJson } from '../../src/transport/request';
import { portalStats } from '../../src/portal/client';
import { type FlotillaMap } from '../../src/map/types';
import { loadMap } from '../../src/map/load';
import type { PortalStats } from '../../src/portal/portal';
import { agentControlEndpoint } from '../../src/protocol/endpoints';
import { isLoopback } from '../../src/map/security';
import { useKey } from '../../src/transport/curve';
import { writeKeyPair } from '../../src/transport/keys';

export const DIST = join(__dirname, '..', '..');

/**
 * Waits until `check` returns true, polling; fails after `timeoutMs` naming what it waited for
 * (`what` may be a function, to say what was seen by then).
 */
export async function waitFor(what: string | (() => string), check: () => boolean | Promise<boolean>, timeoutMs = 20_000, everyMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface Deployment {
  dir: string;
  mapFile: string;
  map: FlotillaMap;
  runDir: string;
  procs: ChildProcess[];
  logs: string[];
  /** Each server's own run directory, so several servers can share this host. */
  runDirOf(server?: string): string;
  /** `--key FILE` for a server's daemons when the deployment has keys (DeployOptions.keyOf), else nothing. */
  keyArgs(server: string): string[];
  /**
   * A map object as this deployment writes it: with its servers' keys and the test's operator key
   * when the deployment made keys (a map off loopback), else with `security.plain_tcp` (loopback). Tests that write map edits
   * themselves pass them through this.
   */
  withKeys(mapObject: Record<string, unknown>): Record<string, unknown>;
  startPortal(stream: string, server?: string): ChildProcess;
  /** Starts the recorder test component (see fixtures/recorder.ts) for one slot. */
  startRecorder(stream: string, slot: number, opts?: { server?: string; emit?: string; out?: string; delayMs?: number; args?: string[] }): ChildProcess;
  /** Starts `node script args`, on `server`'s host when the deployment has a prefix for it. */
  startComponent(script: string, args: string[], server?: string): ChildProcess;
  stats(stream: string, server?: string): Promise<PortalStats>;
  waitSlotsConnected(stream: string, n: number, server?: string): Promise<void>;
  /** The recorder output file of a slot. */
  outOf(stream: string, slot: number, server?: string): string;
  stop(): Promise<void>;
}

export interface DeployOptions {
  /**
   * A command prefix for the processes of a server (its portals, components and agent), such as
   * `ip netns exec <ns>` to run them on a separate host (see support/netns.ts). Default none.
   */
  prefixOf?: (server: string) => string[];
  /** The secret key file of each server, for a map with keys (its portals and agent get `--key`). */
  keyOf?: (server: string) => string;
}

/** Writes `mapObject` to a temp dir (run_dir set there too) and loads it. */
export function deploy(mapObject: Record<string, unknown>, opts: DeployOptions = {}): Deployment {
  const dir = mkdtempSync(join(tmpdir(), 'flt-'));
  const runDir = join(dir, 'run');
  const mapFile = join(dir, 'map.yaml');
  const keys = testKeys(dir, mapObject);
  if (keys && !opts.keyOf) opts = { ...opts, keyOf: keys.keyOf };
  const asWritten = (m: Record<string, unknown>) => (keys ? keys.withKeys(m) : withPlainTcp(m));
  writeFileSync(mapFile, stringify({ ...withSpoolDirs(asWritten(mapObject)), run_dir: runDir }));
  const map = loadMap(mapFile);
  const procs: ChildProcess[] = [];
  const logs: string[] = [];
  const launch = (args: string[], server?: string) => {
    const prefix = server && opts.prefixOf ? opts.prefixOf(server) : [];
    const [cmd, ...rest] = [...prefix, process.execPath, ...args];
    const p = spawn(cmd!, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout!.on('data', (d: Buffer) => logs.push(d.toString()));
    p.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
    procs.push(p);
    return p;
  };
  const d: Deployment = {
    dir,
    mapFile,
    map,
    runDir,
    procs,
    logs,
    runDirOf: (server = map.servers[0]!.name) => join(runDir, server),
    keyArgs: (server) => (opts.keyOf ? ['--key', opts.keyOf(server)] : []),
    withKeys: asWritten,
    startPortal(stream, server = map.servers[0]!.name) {
      // A spool the map does not place goes to this deployment's dir, not the machine-wide
      // default (/var/lib/flotilla/<instance>/spool), where another run's records would wait.
      const placed = (mapObject.streams as { name: string; spool?: { dir?: string } }[] | undefined)?.some((s) => s.name === stream && s.spool?.dir !== undefined);
      const spool = placed ? [] : ['--spool-dir', join(dir, 'spool')];
      return launch([join(DIST, 'portal', 'main.js'), '--map', mapFile, '--server', server, '--stream', stream, '--run-dir', d.runDirOf(server), ...spool, ...d.keyArgs(server)], server);
    },
    outOf: (stream, slot, server = map.servers[0]!.name) => join(dir, `${server}-${stream}-${slot}.log`),
    startRecorder(stream, slot, opts = {}) {
      const server = opts.server ?? map.servers[0]!.name;
      const args = ['--map', mapFile, '--server', server, '--stream', stream, '--slot', String(slot)];
      args.push('--run-dir', d.runDirOf(server), '--out', opts.out ?? d.outOf(stream, slot, server));
      if (opts.emit) args.push('--emit', opts.emit);
      if (opts.delayMs) args.push('--delay-ms', String(opts.delayMs));
      if (opts.args) args.push(...opts.args);
      return launch([join(DIST, 'test', 'fixtures', 'recorder.js'), ...args], server);
    },
    startComponent(script, args, server) {
      return launch([script, ...args], server);
    },
    stats: (stream, server) => portalStats(d.runDirOf(server), stream),
    async waitSlotsConnected(stream, n, server) {
      await waitFor(`${n} connected slots on ${stream}`, async () => {
        try {
          const s = await portalStats(d.runDirOf(server), stream, 500);
          return s.slots.filter((x) => x.connected).length === n;
        } catch {
          return false;
        }
      });
    },
    async stop() {
      await stopChildren(procs, 3000);
    },
  };
  return d;
}

/** Resolves once `p` has exited (at once if it has). */
export const stopped = (p: ChildProcess) => new Promise<void>((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', () => r())));

/** A map without keys on loopback says it runs plain TCP (docs/security.md): as the demo's does. */
export function withPlainTcp(m: Record<string, unknown>): Record<string, unknown> {
  const servers = (m.servers ?? []) as { host: string; public_key?: string }[];
  if (servers.some((s) => s.public_key !== undefined || !isLoopback(s.host))) return m;
  return { ...m, security: { plain_tcp: true, ...(m.security as object | undefined) } };
}

/**
 * Keys for a map whose servers are off loopback and that has none (plain TCP is refused there):
 * a key pair per server and one for the test, an operator, made under `dir/keys`. The test
 * process (and the portalctl and components it starts) use the test's key through $FLOTILLA_KEY.
 */
function testKeys(dir: string, mapObject: Record<string, unknown>): { keyOf: (server: string) => string; withKeys: (m: Record<string, unknown>) => Record<string, unknown> } | null {
  type RawServer = { name: string; host: string; public_key?: string };
  const servers = (mapObject.servers ?? []) as RawServer[];
  if (servers.every((s) => isLoopback(s.host)) || servers.some((s) => s.public_key !== undefined)) return null;
  const keyDir = join(dir, 'keys');
  mkdirSync(keyDir, { mode: 0o700 });
  const made = new Map<string, string>();
  const publicOf = (name: string) => {
    if (!made.has(name)) made.set(name, writeKeyPair(keyDir, name).publicKey);
    return made.get(name)!;
  };
  const tester = publicOf('tester');
  process.env.FLOTILLA_KEY = join(keyDir, 'tester.key');
  useKey(null); // read again from $FLOTILLA_KEY: an earlier deployment's key is not this one's
  return {
    keyOf: (server) => join(keyDir, `${server}.key`),
    withKeys: (m) => ({
      ...m,
      servers: ((m.servers ?? []) as RawServer[]).map((s) => ({ ...s, public_key: publicOf(s.name) })),
      operators: [{ name: 'tester', public_key: tester }],
    }),
  };
}

/**
 * The map with every stream's spool under the test's directory (`spool`, relative to the map
 * file) unless the test gives one: never the system's default, which other runs share.
 */
function withSpoolDirs(mapObject: Record<string, unknown>): Record<string, unknown> {
  const streams = mapObject.streams;
  if (!Array.isArray(streams)) return mapObject;
  return { ...mapObject, streams: streams.map((s: Record<string, unknown>) => ({ ...s, spool: { dir: 'spool', ...((s.spool as object | undefined) ?? {}) } })) };
}

/** Starts the agent daemon of `server` (default the map's first) on the server's run directory. */
export function startAgent(d: Deployment, server = d.map.servers[0]!.name): ChildProcess {
  return d.startComponent(join(DIST, 'agent', 'main.js'), ['--map', d.mapFile, '--server', server, '--run-dir', d.runDirOf(server), ...d.keyArgs(server)], server);
}

/** Waits until the agent of `server` answers on its control socket. */
export async function waitAgent(d: Deployment, server = d.map.servers[0]!.name): Promise<void> {
  await waitFor(`the agent of ${server} to answer`, async () => {
    try {
      await requestJson(agentControlEndpoint(d.runDirOf(server)), { cmd: 'ping' }, 500);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * Runs portalctl as a child process without blocking this one (a test's Sender keeps sending
 * meanwhile); resolves with its exit status and output.
 */
export function portalctlAsync(args: string[], timeoutMs = 30_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [join(DIST, 'agent', 'portalctl.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
    p.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}
