/**
 * What the latency tail is made of: the bench's latency run (one paced load generator, one
 * portal, 4 ack-at-once sinks) with every process timestamping each batch on a shared clock,
 * so each record's send-to-ack time splits into stages (sender wait, wire, portal, sink, ack),
 * plus the GC pauses of every process and the load generator's timer gaps.
 *
 *   npm run build && node dist/bench/tail/tail.js [options]      (~10 s; --help lists them)
 *
 * The traced portal and sinks are ./traced-portal.ts and ./traced-sink.ts: the same Portal and
 * Component code, with the tracer subscribed to their named hooks (node:diagnostics_channel);
 * the load generator (bench/load.ts) subscribes to its Sender's hooks when BENCH_TRACE=1.
 * Tracing costs a little CPU; compare the p99 printed here with `npm run bench` at the same
 * settings before trusting small effects.
 */
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SLOTS, startDeployment } from '../deployment';
import { startLoads, stopLoads } from '../flotilla-runs';
import { Histogram } from '../histogram';
import type { Counts } from '../load';
import { measureRate, sleep, sum } from '../measure';
import { ProcessGroup, peakRssMb } from '../procs';
import { analyse, tailText } from './tail-analysis';
import { clock, type TraceDump } from './trace';

const HELP = `usage: node dist/bench/tail/tail.js [options]
  --seconds N          traced window (default 5)
  --warmup N           paced load before the window, seconds (default 1)
  --rate N             records/s (default 100000)
  --linger-ms N        sender lingerMs (default 2)
  --batch-bytes N      sender batchBytes (default 900000)
  --batch-records N    sender batchRecords (default 8192)
  --throughput-first N saturate the portal for N s first, as npm run bench does (default 0)
  --portal-flags='F'   node flags for the portal; --sink-flags=, --sender-flags= likewise
  --portal-cpus L      taskset CPU list for the portal; --sink-cpus, --sender-cpus likewise
  --slots N            component slots (sink processes) of the stream (default ${SLOTS})
  --untraced           plain portal and sinks, no timestamps: only the load's own histogram
  --json               print the report as one JSON object
  --out FILE           also write the raw traces to FILE
  --stdout-dir DIR     keep the portal's and sinks' stdout in DIR/portal.out, DIR/sinks.out
                       (with --portal-flags --trace-gc: V8's GC log with each GC's reason)
`;

/** CPU pressure (PSI): µs during which some runnable task waited for a CPU. */
function cpuPressureUs(): number {
  try {
    return Number(/some .*total=(\d+)/.exec(readFileSync('/proc/pressure/cpu', 'utf8'))?.[1]);
  } catch {
    return NaN;
  }
}

async function main(): Promise<void> {
  const { values: v } = parseArgs({
    options: {
      seconds: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '1' },
      rate: { type: 'string', default: '100000' },
      'linger-ms': { type: 'string', default: '2' },
      'batch-bytes': { type: 'string', default: '900000' },
      'batch-records': { type: 'string', default: '8192' },
      'throughput-first': { type: 'string', default: '0' },
      'portal-flags': { type: 'string', default: '' },
      'sink-flags': { type: 'string', default: '' },
      'sender-flags': { type: 'string', default: '' },
      'portal-cpus': { type: 'string' },
      'sink-cpus': { type: 'string' },
      'sender-cpus': { type: 'string' },
      slots: { type: 'string', default: String(SLOTS) },
      untraced: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      out: { type: 'string' },
      'stdout-dir': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (v.help) return void process.stdout.write(HELP);
  const words = (s: string | undefined) => (s ?? '').split(/\s+/).filter(Boolean);
  const traced = !v.untraced;
  const seconds = Number(v.seconds);
  const dir = mkdtempSync(join(tmpdir(), 'flt-'));
  const group = new ProcessGroup();
  const progress = (s: string) => process.stderr.write(`tail: ${s}\n`);
  const outDir = v['stdout-dir'];
  if (outDir) mkdirSync(outDir, { recursive: true });
  try {
    const d = await startDeployment(group, dir, {
      portalStdoutFd: outDir ? openSync(join(outDir, 'portal.out'), 'w') : undefined,
      sinkStdoutFd: outDir ? openSync(join(outDir, 'sinks.out'), 'w') : undefined,
      profileDir: null,
      traced,
      slots: Number(v.slots),
      portalFlags: words(v['portal-flags']),
      sinkFlags: words(v['sink-flags']),
      portalCpus: v['portal-cpus'],
      sinkCpus: v['sink-cpus'],
    });
    const loadOpts = { nodeFlags: words(v['sender-flags']), cpus: v['sender-cpus'] };
    const batchArgs = [v['batch-bytes']!, v['batch-records']!];
    if (Number(v['throughput-first']) > 0) {
      progress(`saturating for ${v['throughput-first']} s`);
      const loads = await startLoads(group, d, 1, ['throughput', '5', ...batchArgs], loadOpts);
      await sleep(Number(v['throughput-first']) * 1000);
      await stopLoads(loads);
    }
    progress(`paced at ${v.rate}/s, lingerMs ${v['linger-ms']}, ${v.warmup} s warm-up, ${seconds} s traced`);
    const [load] = await startLoads(group, d, 1, ['paced', v['linger-ms']!, ...batchArgs, v.rate!], {
      ...loadOpts,
      env: traced ? { BENCH_TRACE: '1' } : undefined,
    });
    const others = traced ? [d.portal, ...d.sinks] : [];
    let from = 0;
    let to = 0;
    let psi0 = 0;
    const window = await measureRate(
      async () => (await load!.request<Counts>('count')).acked,
      seconds,
      Number(v.warmup),
      { portal: [d.portal.pid], components: d.sinks.map((s) => s.pid), senders: [load!.pid] },
      async () => {
        psi0 = cpuPressureUs();
        from = clock();
        await Promise.all([load!.request('mark'), ...(traced ? [load!, ...others].map((c) => c.request('trace')) : [])]);
      },
      async () => {
        to = clock();
        await load!.request('endmark');
      },
    );
    const psi = (cpuPressureUs() - psi0) / 1e4 / window.seconds;
    // Every record sent in the window settled (load keeps running), then the traces: dumping
    // stalls a process for a moment, and no record of the window may be caught by that.
    const h = new Histogram();
    h.merge(await load!.request<ReturnType<Histogram['toSparse']>>('latency'));
    const dumps = traced ? await Promise.all([load!, ...others].map((c) => c.request<TraceDump>('dump'))) : [];
    const sent = sum(await stopLoads([load!]), (c) => c.sent);
    const rss = peakRssMb(d.portal.pid);
    const head = {
      rate: Math.round(window.perSecond),
      linger_ms: Number(v['linger-ms']),
      load_p50_ms: h.quantile(0.5),
      load_p99_ms: h.quantile(0.99),
      load_max_ms: Math.round(h.max * 1000) / 1000,
      cpu_percent: window.cpuPercent,
      cpu_pressure_some_percent: Math.round(psi * 10) / 10,
      portal_rss_mb: Math.round(rss * 10) / 10,
      records_sent: sent,
    };
    const traces = traced ? { load: dumps[0]!, portal: dumps[1]!, sinks: dumps.slice(2), from, to } : null;
    if (v.out && traces) writeFileSync(v.out, JSON.stringify(traces));
    const report = traces ? analyse(traces) : null;
    if (v.json) process.stdout.write(JSON.stringify({ ...head, ...(report ? { trace: report } : {}) }) + '\n');
    else {
      process.stdout.write(
        `achieved ${head.rate}/s; load generator's histogram: p50 ${head.load_p50_ms} ms, p99 ${head.load_p99_ms} ms, max ${head.load_max_ms} ms\n` +
          `CPU % ${JSON.stringify(head.cpu_percent)}; CPU pressure (some task waiting for a CPU) ${head.cpu_pressure_some_percent}% of the time; portal RSS ${head.portal_rss_mb} MB\n`,
      );
      if (report) process.stdout.write(tailText(report));
    }
  } finally {
    await group.stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`tail failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  },
);
