/**
 * A one-host Flotilla deployment for the bench: a map in a temp dir (OS-chosen port, run_dir
 * in the temp dir), the portal daemon, and one sink component per slot.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { portalStats } from '../src/portal/client';
import { writeKeyPair } from '../src/transport/keys';
import type { PortalStats } from '../src/portal/portal';
import { sleep } from './measure';
import { BENCH_SCHEMA, STREAM } from './payload';
import { freePorts } from '../test/support/ports';
import type { Child, ProcessGroup } from './procs';

export const SERVER = 'solo';
export const SLOTS = 4;
/** Batches a sender may have unacknowledged at the portal (the map's stream `window`). */
export const WINDOW = 16;
const DIST = join(__dirname, '..');

export interface Deployment {
  mapFile: string;
  /** Environment of the load generators: with CURVE, the sender's key ($FLOTILLA_KEY). */
  env: Record<string, string>;
  runDir: string;
  portal: Child;
  sinks: Child[];
  stats(): Promise<PortalStats>;
}

/**
 * Writes the bench map into `dir` and returns its path. `keyDir`: the map has keys, made there
 * (`solo.key` for the portal, `bench.key` for the load generators, a listed sender).
 */
export async function writeBenchMap(dir: string, slots = SLOTS, spool?: Record<string, unknown>, keyDir?: string): Promise<string> {
  const [port] = await freePorts(1);
  const keyed = keyDir
    ? { server: { public_key: writeKeyPair(keyDir, SERVER).publicKey }, senders: [{ name: 'bench', public_key: writeKeyPair(keyDir, 'bench').publicKey }] }
    : null;
  const map = {
    instance: 'bench',
    epoch: 1,
    run_dir: join(dir, 'run'),
    ...(keyed ? { senders: keyed.senders } : { security: { plain_tcp: true } }),
    servers: [{ name: SERVER, host: '127.0.0.1', ...(keyed?.server ?? {}) }],
    streams: [{ name: STREAM, key: 'key', port, buckets: 1024, slots, window: WINDOW, schema: BENCH_SCHEMA, ...(spool ? { spool } : {}) }],
  };
  const mapFile = join(dir, 'map.json');
  writeFileSync(mapFile, JSON.stringify(map, null, 2));
  return mapFile;
}

export interface DeploymentOptions {
  /** Directory for a V8 CPU profile of the portal (node --cpu-prof), or null. */
  profileDir: string | null;
  /** Extra node flags for the portal and for the sinks (e.g. --max-semi-space-size=16). */
  portalFlags?: string[];
  sinkFlags?: string[];
  /** taskset CPU lists for the portal and the sinks (unset: not pinned). */
  portalCpus?: string;
  sinkCpus?: string;
  /** Where the portal's and the sinks' stdout go (node --trace-gc writes there); default nowhere. */
  portalStdoutFd?: number;
  sinkStdoutFd?: number;
  /** Component slots of the stream (default SLOTS). */
  slots?: number;
  /** Start bench/tail/traced-portal.js and bench/tail/traced-sink.js (timestamps for bench/tail/tail.ts). */
  traced?: boolean;
  /** The stream's spool settings (the map's `spool`); default none. */
  spool?: Record<string, unknown>;
  /** CURVE on the senders' connections (keys made in the deployment's dir). */
  curve?: boolean;
}

/** Starts the portal (under --cpu-prof when `profileDir` is set) and its sinks; resolves once every slot is connected. */
export async function startDeployment(group: ProcessGroup, dir: string, o: DeploymentOptions): Promise<Deployment> {
  const nSlots = o.slots ?? SLOTS;
  const keyDir = o.curve ? join(dir, 'keys') : undefined;
  if (keyDir) mkdirSync(keyDir, { mode: 0o700 });
  const mapFile = await writeBenchMap(dir, nSlots, o.spool, keyDir);
  const runDir = join(dir, 'run');
  const keyArgs = keyDir ? ['--key', join(keyDir, `${SERVER}.key`)] : [];
  const nodeFlags = [...(o.portalFlags ?? []), ...(o.profileDir ? ['--cpu-prof', '--cpu-prof-dir', o.profileDir] : [])];
  const portal = o.traced
    ? group.start('portal', join(__dirname, 'tail', 'traced-portal.js'), [mapFile, SERVER, STREAM], { nodeFlags, cpus: o.portalCpus, ipc: true, stdoutFd: o.portalStdoutFd })
    : group.start('portal', join(DIST, 'portal', 'main.js'), ['--map', mapFile, '--server', SERVER, '--stream', STREAM, ...keyArgs], { nodeFlags, cpus: o.portalCpus, stdoutFd: o.portalStdoutFd });
  const sinks = Array.from({ length: nSlots }, (_, slot) =>
    group.start(`sink ${slot}`, o.traced ? join(__dirname, 'tail', 'traced-sink.js') : join(__dirname, 'sink.js'), [mapFile, SERVER, STREAM, String(slot)], {
      nodeFlags: o.sinkFlags,
      cpus: o.sinkCpus,
      ipc: o.traced,
      stdoutFd: o.sinkStdoutFd,
    }),
  );
  const stats = () => portalStats(runDir, STREAM, 2000);
  const deadline = Date.now() + 20_000;
  for (;;) {
    for (const c of [portal, ...sinks]) if (!c.running) throw new Error(`${c.name} exited during start-up\n${c.stderrTail}`);
    const s = await stats().catch(() => null);
    if (s && s.slots.filter((x) => x.connected).length === nSlots) break;
    if (Date.now() > deadline) throw new Error(`the portal did not see ${nSlots} connected slots within 20 s\n${portal.stderrTail}`);
    await sleep(50);
  }
  return { mapFile, env: keyDir ? { FLOTILLA_KEY: join(keyDir, 'bench.key') } : {}, runDir, portal, sinks, stats };
}
