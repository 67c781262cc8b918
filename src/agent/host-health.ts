/**
 * The host's health as the agent sees it: memory and load, free space on the disks of the run
 * directory and of each stream's spool, and the resident memory of the server's Flotilla
 * processes. Sampled every `DEFAULT_HOST_SAMPLE_MS` on a timer of the agent, never on a data
 * path; the cheap sources only: `systeminformation`'s `mem()` (it reads /proc/meminfo),
 * `os.loadavg()`, `statfs` (no `df` process) and /proc/<pid>/status.
 *
 *   every intervalMs:  sample() -> HostHealth -> agent status, /metrics, the status page
 *
 * Two floors raise a warning before anything stops: free memory under `memory floor` (nothing
 * stops on memory; the kernel's OOM killer would), and a spool's disk under twice its
 * `min_free_bytes` (the spool stops taking records at `min_free_bytes`).
 */
import { readFile, statfs } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { dirname } from 'node:path';
import type { Logger } from '../log';
import type { FlotillaMap } from '../map/types';
import type { PortalBeacon } from '../protocol/beacons';
import type { DiskHealth, HostHealth, HostWarning, ProcessHealth } from '../protocol/host';

/** How often the host is sampled. */
export const DEFAULT_HOST_SAMPLE_MS = 5000;
/** Free memory under this share of the total raises MEMORY_LOW... */
export const MEMORY_FLOOR_FRACTION = 0.1;
/** ...or under this many bytes, whichever is larger. */
export const MEMORY_FLOOR_MIN_BYTES = 256 << 20;
/** A spool's disk with less than this many times its min_free_bytes free raises SPOOL_DISK_LOW. */
export const SPOOL_DISK_WARN_FACTOR = 2;

/** A process of the server to measure. */
export type ProcessRef = Omit<ProcessHealth, 'rssBytes'>;

export interface HostSamplerOptions {
  server: string;
  runDir: string;
  /** The map in force (its spools), read at each sample. */
  map: () => FlotillaMap;
  /** The server's portal and component processes, as the beacons name them, read at each sample. */
  processes: () => ProcessRef[];
  log: Logger;
  intervalMs?: number;
}

/** Samples the host on a timer; `latest` is the last sample (null before the first). */
export class HostSampler {
  latest: HostHealth | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private warned = new Set<string>();
  readonly intervalMs: number;

  constructor(private readonly o: HostSamplerOptions) {
    this.intervalMs = o.intervalMs ?? DEFAULT_HOST_SAMPLE_MS;
  }

  /** Takes a first sample now, then one every interval. */
  start(): void {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private async tick(): Promise<void> {
    if (this.running) return; // a slow disk: skip a beat rather than pile up samples
    this.running = true;
    try {
      this.latest = await sampleHost(this.o, this.intervalMs);
      this.logWarnings(this.latest.warnings);
    } catch (err) {
      this.o.log.warn({ err }, `host health: sampling failed: ${(err as Error).message}`);
    } finally {
      this.running = false;
    }
  }

  /** Logs a warning when it appears and when it clears, not at every sample. */
  private logWarnings(warnings: HostWarning[]): void {
    const now = new Set(warnings.map((w) => w.message.split(':')[0]!));
    for (const w of warnings) {
      const key = w.message.split(':')[0]!;
      if (!this.warned.has(key)) this.o.log.warn({ code: w.code }, `host health: ${w.message}`);
    }
    for (const key of this.warned) if (!now.has(key)) this.o.log.info(`host health: cleared: ${key}`);
    this.warned = now;
  }
}

/** One sample of the host. */
export async function sampleHost(o: Pick<HostSamplerOptions, 'server' | 'runDir' | 'map' | 'processes'>, intervalMs: number): Promise<HostHealth> {
  // Loaded on first use: the agent starts without paying for the package's many modules.
  const si = await import('systeminformation');
  const mem = await si.mem();
  const floorBytes = Math.max(MEMORY_FLOOR_MIN_BYTES, Math.floor(mem.total * MEMORY_FLOOR_FRACTION));
  const map = o.map();
  const wanted: { use: string; dir: string; floor: number | null }[] = [{ use: 'run dir', dir: o.runDir, floor: null }];
  for (const s of map.streams) {
    if (s.spool.mode !== 'off') wanted.push({ use: `spool of ${s.name}`, dir: `${s.spool.dir}/${o.server}/${s.name}`, floor: s.spool.minFreeBytes });
  }
  const disks = await Promise.all(wanted.map((w) => disk(w.use, w.dir, w.floor)));
  const refs: ProcessRef[] = [{ role: 'agent', stream: null, slot: null, pid: process.pid }, ...o.processes()];
  const processes = (await Promise.all(refs.map(async (r) => ({ ...r, rssBytes: r.pid === process.pid ? process.memoryUsage.rss() : await rssOf(r.pid) }))))
    .filter((p) => p.rssBytes >= 0);

  const warnings: HostWarning[] = [];
  if (mem.available < floorBytes) {
    warnings.push({ code: 'MEMORY_LOW', message: `memory low: ${mib(mem.available)} available of ${mib(mem.total)}, under the floor of ${mib(floorBytes)}` });
  }
  for (const d of disks) {
    if (d && d.floorBytes !== null && d.freeBytes < SPOOL_DISK_WARN_FACTOR * d.floorBytes) {
      warnings.push({
        code: 'SPOOL_DISK_LOW',
        message: `${d.use} near its floor: ${mib(d.freeBytes)} free on ${d.path}; the spool stops taking records under min_free_bytes ${mib(d.floorBytes)}`,
      });
    }
  }
  const [l1, l5, l15] = loadavg();
  return {
    at: Date.now(),
    intervalMs,
    memory: { totalBytes: mem.total, availableBytes: mem.available, floorBytes },
    load: [round2(l1!), round2(l5!), round2(l15!)],
    cpus: availableParallelism(),
    disks: disks.filter((d): d is DiskHealth => d !== null),
    processes,
    warnings,
  };
}

/** Free and total space of the filesystem holding `dir` (or its nearest existing parent). */
async function disk(use: string, dir: string, floorBytes: number | null): Promise<DiskHealth | null> {
  for (let path = dir; ; path = dirname(path)) {
    try {
      const st = await statfs(path);
      return { use, path, freeBytes: st.bavail * st.bsize, totalBytes: st.blocks * st.bsize, floorBytes };
    } catch {
      if (dirname(path) === path) return null;
    }
  }
}

/** Resident memory of `pid` in bytes (VmRSS in /proc/<pid>/status); -1 if it is gone. */
async function rssOf(pid: number): Promise<number> {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : -1;
  } catch {
    return -1;
  }
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
const round2 = (n: number) => Math.round(n * 100) / 100;

/** A portal's process and its components', as its last beacon names them. */
export function processesOf(stream: string, beacon: PortalBeacon | null): ProcessRef[] {
  if (!beacon) return [];
  const out: ProcessRef[] = [{ role: 'portal', stream, slot: null, pid: beacon.pid }];
  for (const s of beacon.slots) if (s.pid > 0 && s.state !== 'dead' && s.state !== 'missing') out.push({ role: 'component', stream, slot: s.slot, pid: s.pid });
  return out;
}
