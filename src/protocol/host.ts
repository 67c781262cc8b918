/**
 * What an agent says of its host in its status (`host`): memory, load, the disks the server
 * needs, its Flotilla processes' memory, and the warnings raised before anything stops. Sampled
 * by src/agent/host-health.ts; shown by portalctl, the status page and the metrics.
 */

/** A disk the server needs: the run directory's, or a stream's spool's. */
export interface DiskHealth {
  /** `run dir`, or `spool of <stream>`. */
  use: string;
  /** The directory (or its nearest existing parent) whose filesystem was measured. */
  path: string;
  freeBytes: number;
  totalBytes: number;
  /** The spool stops taking records below this much free space (its min_free_bytes); null for the run dir. */
  floorBytes: number | null;
}

/** One of the server's Flotilla processes and its resident memory. */
export interface ProcessHealth {
  role: 'agent' | 'portal' | 'component';
  stream: string | null;
  slot: number | null;
  pid: number;
  rssBytes: number;
}

/** A condition of the host that will stop something if it goes on: memory or a spool's disk near its floor. */
export interface HostWarning {
  code: 'MEMORY_LOW' | 'SPOOL_DISK_LOW';
  message: string;
}

/** What the agent's host sampler saw last (src/agent/host-health.ts). */
export interface HostHealth {
  /** When it was sampled (ms since the Unix epoch), and how often it is. */
  at: number;
  intervalMs: number;
  memory: { totalBytes: number; availableBytes: number; floorBytes: number };
  /** 1, 5 and 15 minute load averages, and the number of CPUs. */
  load: [number, number, number];
  cpus: number;
  disks: DiskHealth[];
  processes: ProcessHealth[];
  warnings: HostWarning[];
}
