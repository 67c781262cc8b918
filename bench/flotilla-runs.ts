/** The two Flotilla measurements: saturated throughput, and latency at a paced rate. */
import { join } from 'node:path';
import type { Deployment } from './deployment';
import { Histogram } from './histogram';
import type { Counts } from './load';
import { measureRate, type RateWindow, sum } from './measure';
import type { BenchOptions } from './options';
import type { Child, ProcessGroup } from './procs';

export interface ThroughputResult {
  window: RateWindow;
  /** Records the portal itself reports forwarded over the same window, per second. */
  portalPerSecond: number;
  /** Batch latency (transmit to ack) under saturation, ms. */
  batchP50Ms: number;
  batchP99Ms: number;
  refused: number;
}

export interface LatencyResult {
  window: RateWindow;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Records whose latency was measured. */
  samples: number;
}

export async function startLoads(
  group: ProcessGroup,
  d: Deployment,
  n: number,
  args: string[],
  opts: { nodeFlags?: string[]; cpus?: string; env?: Record<string, string> } = {},
): Promise<Child[]> {
  const env = { ...d.env, ...opts.env };
  const loads = Array.from({ length: n }, (_, i) => group.start(`load ${i}`, join(__dirname, 'load.js'), [d.mapFile, ...args], { ipc: true, ...opts, env }));
  await Promise.all(loads.map((l) => l.ready));
  await Promise.all(loads.map((l) => l.request('start')));
  return loads;
}

export async function stopLoads(loads: Child[]): Promise<Counts[]> {
  const finals = await Promise.all(loads.map((l) => l.request<Counts>('stop')));
  await Promise.all(loads.map((l) => l.stop()));
  return finals;
}

function pidsOf(d: Deployment, loads: Child[]): Record<string, number[]> {
  return { portal: [d.portal.pid], components: d.sinks.map((s) => s.pid), senders: loads.map((l) => l.pid) };
}

async function mergedLatency(loads: Child[]): Promise<Histogram> {
  const h = new Histogram();
  for (const l of loads) h.merge(await l.request<ReturnType<Histogram['toSparse']>>('latency'));
  return h;
}

/** Records/s acknowledged to `o.senders` load generators sending as fast as they can. */
export async function runThroughput(group: ProcessGroup, d: Deployment, o: BenchOptions): Promise<ThroughputResult> {
  const loads = await startLoads(group, d, o.senders, ['throughput', String(o.lingerMs), String(o.batchBytes), String(o.batchRecords)], {
    nodeFlags: o.senderFlags,
  });
  let portalOut0 = 0;
  const window = await measureRate(
    async () => sum(await Promise.all(loads.map((l) => l.request<Counts>('count'))), (c) => c.acked),
    o.seconds,
    o.warmup,
    pidsOf(d, loads),
    async () => {
      await Promise.all(loads.map((l) => l.request('mark')));
      portalOut0 = (await d.stats()).recordsOut;
    },
    async () => void (await Promise.all(loads.map((l) => l.request('endmark')))),
  );
  const portalOut1 = (await d.stats()).recordsOut;
  const h = await mergedLatency(loads);
  const finals = await stopLoads(loads);
  return {
    window,
    portalPerSecond: (portalOut1 - portalOut0) / window.seconds,
    batchP50Ms: h.quantile(0.5),
    batchP99Ms: h.quantile(0.99),
    refused: sum(finals, (c) => c.refused),
  };
}

/** Per-record latency, send() to ack, from one load generator paced at `o.rate` records/s. */
export async function runLatency(group: ProcessGroup, d: Deployment, o: BenchOptions): Promise<LatencyResult> {
  const loads = await startLoads(group, d, 1, ['paced', String(o.latencyLingerMs), String(o.batchBytes), String(o.batchRecords), String(o.rate)], {
    nodeFlags: o.senderFlags,
  });
  const window = await measureRate(
    async () => sum(await Promise.all(loads.map((l) => l.request<Counts>('count'))), (c) => c.acked),
    o.seconds,
    o.warmup,
    pidsOf(d, loads),
    async () => void (await Promise.all(loads.map((l) => l.request('mark')))),
    async () => void (await Promise.all(loads.map((l) => l.request('endmark')))),
  );
  const h = await mergedLatency(loads);
  await stopLoads(loads);
  return { window, p50Ms: h.quantile(0.5), p90Ms: h.quantile(0.9), p99Ms: h.quantile(0.99), maxMs: h.max, samples: h.total };
}
