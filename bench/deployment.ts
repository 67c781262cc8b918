/**
 * A one-host Flotilla deployment for the bench: a map in a temp dir (OS-chosen port, run_dir
 * in the temp dir), the portal daemon, and one sink component per slot.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { portalStats } from '../src/control-client';
import type { PortalStats } from '../src/portal';
import { sleep } from './measure';
import { BENCH_SCHEMA, STREAM } from './payload';
import { freePorts } from './ports';
import type { Child, ProcessGroup } from './procs';

export const SERVER = 'solo';
export const SLOTS = 4;
/** Batches a sender may have unacknowledged at the portal (the map's stream `window`). */
export const WINDOW = 16;
const DIST = join(__dirname, '..');

export interface Deployment {
  mapFile: string;
  runDir: string;
  portal: Child;
  sinks: Child[];
  stats(): Promise<PortalStats>;
}

/** Writes the bench map into `dir` and returns its path. */
export async function writeBenchMap(dir: string): Promise<string> {
  const [port] = await freePorts(1);
  const map = {
    instance: 'bench',
    epoch: 1,
    run_dir: join(dir, 'run'),
    servers: [{ name: SERVER, host: '127.0.0.1' }],
    streams: [{ name: STREAM, key: 'key', port, buckets: 1024, slots: SLOTS, window: WINDOW, schema: BENCH_SCHEMA }],
  };
  const mapFile = join(dir, 'map.json');
  writeFileSync(mapFile, JSON.stringify(map, null, 2));
  return mapFile;
}

/** Starts the portal (under --cpu-prof when `profileDir` is set) and its sinks; resolves once every slot is connected. */
export async function startDeployment(group: ProcessGroup, dir: string, profileDir: string | null): Promise<Deployment> {
  const mapFile = await writeBenchMap(dir);
  const runDir = join(dir, 'run');
  const nodeFlags = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const portal = group.start('portal', join(DIST, 'portal', 'main.js'), ['--map', mapFile, '--server', SERVER, '--stream', STREAM], { nodeFlags });
  const sinks = Array.from({ length: SLOTS }, (_, slot) =>
    group.start(`sink ${slot}`, join(__dirname, 'sink.js'), [mapFile, SERVER, STREAM, String(slot)]),
  );
  const stats = () => portalStats(runDir, STREAM, 2000);
  const deadline = Date.now() + 20_000;
  for (;;) {
    for (const c of [portal, ...sinks]) if (!c.running) throw new Error(`${c.name} exited during start-up\n${c.stderrTail}`);
    const s = await stats().catch(() => null);
    if (s && s.slots.filter((x) => x.connected).length === SLOTS) break;
    if (Date.now() > deadline) throw new Error(`the portal did not see ${SLOTS} connected slots within 20 s\n${portal.stderrTail}`);
    await sleep(50);
  }
  return { mapFile, runDir, portal, sinks, stats };
}
