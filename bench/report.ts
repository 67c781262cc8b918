/** The bench's results: one JSON object for scripts, or a readable summary for people. */
import type { LatencyResult, ThroughputResult } from './flotilla-runs';
import type { Machine } from './machine';
import type { PauseResumeResult } from './pause-resume';
import type { MapChangeResult } from './map-change';
import type { RateWindow } from './measure';
import type { BenchOptions } from './options';
import type { HotFunction } from './profile-summary';
import { RECORD_BYTES } from './payload';
import { WINDOW } from './deployment';

export const TARGETS = {
  records_per_second: 1_000_000,
  speedup_vs_baseline: 8,
  p99_ms: 5,
  portal_rss_mb: 200,
  pause_resume_ms: 1000,
  /** spool_records_per_second / records_per_second, at least. */
  spool_ratio: 0.5,
  /** A map change in etcd moving a quarter of the buckets, apply to the last handover released. */
  map_change_ms: 2000,
  /** Records/s of unmoved buckets during a map change against before it, at least. */
  unmoved_throughput_ratio: 0.9,
  /** curve_records_per_second / records_per_second, at least. */
  curve_ratio: 0.7,
};

export interface Results {
  throughput: ThroughputResult;
  /** The same throughput run with the spool in mode always; null when skipped. */
  spooled: ThroughputResult | null;
  /** The same throughput run with CURVE on the senders' connections (keys from the map). */
  curve: ThroughputResult;
  latency: LatencyResult;
  baseline: RateWindow | null;
  portalRssMb: number;
  pauseResume: PauseResumeResult;
  /** A map change with the map in etcd; null when skipped. */
  mapChange: MapChangeResult | null;
  machine: Machine;
  profile: { file: string; hot: HotFunction[]; idlePercent: number } | null;
  /** Wall time of the whole bench, seconds. */
  totalSeconds: number;
}

/** CPU microseconds per record for each role, from a window's CPU % and rate. */
function cpuPerRecord(w: RateWindow): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [role, pct] of Object.entries(w.cpuPercent)) {
    if (role !== 'other') out[role] = Math.round((pct / 100 / w.perSecond) * 1e6 * 100) / 100;
  }
  return out;
}

const round = (n: number, digits = 0) => (Number.isFinite(n) ? Math.round(n * 10 ** digits) / 10 ** digits : null);

/** The JSON object `--json` prints. */
export function toJson(r: Results, o: BenchOptions): Record<string, unknown> {
  const base = r.baseline?.perSecond ?? NaN;
  return {
    records_per_second: round(r.throughput.window.perSecond),
    baseline_records_per_second: round(base),
    speedup_vs_baseline: round(r.throughput.window.perSecond / base, 2),
    spool_records_per_second: r.spooled ? round(r.spooled.window.perSecond) : null,
    spool_ratio: r.spooled ? round(r.spooled.window.perSecond / r.throughput.window.perSecond, 2) : null,
    spool_settings: r.spooled ? { mode: 'always', fsync: 'interval', fsync_interval_ms: 1000 } : null,
    curve_records_per_second: round(r.curve.window.perSecond),
    curve_ratio: round(r.curve.window.perSecond / r.throughput.window.perSecond, 2),
    p50_ms: round(r.latency.p50Ms, 3),
    p99_ms: round(r.latency.p99Ms, 3),
    p90_ms: round(r.latency.p90Ms, 3),
    max_ms: round(r.latency.maxMs, 3),
    latency_kind: 'per record, sendEncoded() call to the ack of its batch',
    latency_target_rate: o.rate,
    latency_achieved_rate: round(r.latency.window.perSecond),
    latency_samples: r.latency.samples,
    portal_rss_mb: round(r.portalRssMb, 1),
    pause_resume_ms: round(r.pauseResume.pauseResumeMs, 1),
    pause_resume_runs_ms: r.pauseResume.runsMs,
    map_change_ms: r.mapChange ? round(r.mapChange.mapChangeMs, 1) : null,
    map_change_runs_ms: r.mapChange?.runsMs ?? null,
    unmoved_throughput_ratio: r.mapChange?.unmovedThroughputRatio ?? null,
    unmoved_throughput_ratios: r.mapChange?.ratios ?? null,
    portal_records_per_second: round(r.throughput.portalPerSecond),
    saturated_batch_p50_ms: round(r.throughput.batchP50Ms, 3),
    saturated_batch_p99_ms: round(r.throughput.batchP99Ms, 3),
    refused_records: r.throughput.refused,
    cpu_percent: {
      throughput: r.throughput.window.cpuPercent,
      spooled: r.spooled?.window.cpuPercent ?? null,
      curve: r.curve.window.cpuPercent,
      latency: r.latency.window.cpuPercent,
      baseline: r.baseline?.cpuPercent ?? null,
    },
    cpu_us_per_record: {
      throughput: cpuPerRecord(r.throughput.window),
      latency: cpuPerRecord(r.latency.window),
      baseline: r.baseline ? cpuPerRecord(r.baseline) : null,
    },
    seconds: o.seconds,
    total_seconds: round(r.totalSeconds, 1),
    settings: {
      senders: o.senders,
      slots: o.slots,
      payload_bytes: RECORD_BYTES,
      window_batches: WINDOW,
      linger_ms: o.lingerMs,
      batch_bytes: o.batchBytes,
      batch_records: o.batchRecords,
      latency_linger_ms: o.latencyLingerMs,
    },
    targets: TARGETS,
    machine: r.machine,
    ...(r.profile ? { portal_profile: r.profile } : {}),
  };
}

const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : 'n/a');
const mark = (ok: boolean) => (ok ? 'met' : 'NOT met');

/** A readable summary, with each figure against its target. */
export function toText(r: Results, o: BenchOptions): string {
  const t = r.throughput;
  const base = r.baseline?.perSecond ?? NaN;
  const speedup = t.window.perSecond / base;
  const cpu = (w: RateWindow) => {
    const us = cpuPerRecord(w);
    return Object.entries(w.cpuPercent)
      .map(([k, v]) => (k === 'other' ? `other processes ${v}%` : `${k} ${v}% (${us[k]} us/record)`))
      .join(', ');
  };
  const lines = [
    `Flotilla bench: ${r.machine.nproc} cores (${r.machine.cpu_model}), node ${r.machine.node}, load ${r.machine.loadavg_1m.toFixed(2)} at start`,
    ...(r.machine.calibration
      ? [
          `machine speed at start: JS loop ${r.machine.calibration.js_ns_per_byte} ns/byte, pipe round trip to another process p50 ${r.machine.calibration.pipe_rtt_us_p50} us, p99 ${r.machine.calibration.pipe_rtt_us_p99} us`,
        ]
      : []),
    `${RECORD_BYTES}-byte records, ${o.slots} ack-at-once slots, ${o.senders} sender process(es), ${o.seconds} s windows`,
    `sender: lingerMs ${o.lingerMs}, batchBytes ${o.batchBytes}, batchRecords ${o.batchRecords}; latency run lingerMs ${o.latencyLingerMs}`,
    '',
    `  throughput, acks on      ${fmt(t.window.perSecond).padStart(12)} records/s   target 1,000,000: ${mark(t.window.perSecond >= TARGETS.records_per_second)}`,
    `  baseline zeromq.js proxy ${fmt(base).padStart(12)} records/s`,
    `  speed-up over baseline   ${fmt(speedup, 1).padStart(12)} x           target 8x: ${r.baseline ? mark(speedup >= TARGETS.speedup_vs_baseline) : 'n/a'}`,
    ...(r.spooled
      ? [
          `  spool always, fsync 1 s  ${fmt(r.spooled.window.perSecond).padStart(12)} records/s   target half of memory mode: ${mark(r.spooled.window.perSecond >= TARGETS.spool_ratio * t.window.perSecond)} (${fmt((100 * r.spooled.window.perSecond) / t.window.perSecond)}%)`,
        ]
      : []),
    `  CURVE on, acks on        ${fmt(r.curve.window.perSecond).padStart(12)} records/s   target 70% of plain: ${mark(r.curve.window.perSecond >= TARGETS.curve_ratio * t.window.perSecond)} (${fmt((100 * r.curve.window.perSecond) / t.window.perSecond)}%)`,
    `  latency p50 at ${fmt(o.rate)}/s ${fmt(r.latency.p50Ms, 2).padStart(7)} ms`,
    `  latency p99 at ${fmt(o.rate)}/s ${fmt(r.latency.p99Ms, 2).padStart(7)} ms          target < 5 ms: ${mark(r.latency.p99Ms < TARGETS.p99_ms)}`,
    `  portal peak RSS (VmHWM)  ${fmt(r.portalRssMb, 1).padStart(12)} MB          target < 200 MB: ${mark(r.portalRssMb < TARGETS.portal_rss_mb)}`,
    `  pause -> idle -> resume  ${fmt(r.pauseResume.pauseResumeMs, 1).padStart(12)} ms          target < 1 s: ${mark(r.pauseResume.pauseResumeMs < TARGETS.pause_resume_ms)} (3 servers, 250 ms heartbeats, median of ${r.pauseResume.runsMs.length})`,
    ...(r.mapChange
      ? [
          `  map change (etcd)        ${fmt(r.mapChange.mapChangeMs, 1).padStart(12)} ms          target < 2 s: ${mark(r.mapChange.mapChangeMs < TARGETS.map_change_ms)} (${r.mapChange.movedBuckets} of 1024 buckets move, 3 servers, 250 ms heartbeats, median of ${r.mapChange.runsMs.length})`,
          `  unmoved throughput ratio ${fmt(r.mapChange.unmovedThroughputRatio, 2).padStart(12)}             target >= 0.9: ${mark(r.mapChange.unmovedThroughputRatio >= TARGETS.unmoved_throughput_ratio)} (records/s of unmoved buckets during the change / before)`,
        ]
      : []),
    '',
    `  portal's own count over the throughput window: ${fmt(t.portalPerSecond)} records/s; batch ack p50/p99 under saturation ${fmt(t.batchP50Ms, 1)}/${fmt(t.batchP99Ms, 1)} ms`,
    `  latency run: ${fmt(r.latency.window.perSecond)} records/s achieved, p90 ${fmt(r.latency.p90Ms, 2)} ms, max ${fmt(r.latency.maxMs, 2)} ms, ${fmt(r.latency.samples)} records measured`,
    `  CPU (% of one core), throughput run: ${cpu(t.window)}`,
    ...(r.spooled ? [`  CPU, spooled throughput run: ${cpu(r.spooled.window)}`] : []),
    `  CPU, CURVE throughput run: ${cpu(r.curve.window)}`,
    `  CPU, latency run: ${cpu(r.latency.window)}`,
    ...(r.baseline ? [`  CPU, baseline: ${cpu(r.baseline)}`] : []),
  ];
  if (r.profile) {
    lines.push('', `portal CPU profile ${r.profile.file} (${r.profile.idlePercent}% idle), top self time:`);
    for (const h of r.profile.hot) lines.push(`  ${String(h.selfPercent).padStart(5)}%  ${h.where}`);
  }
  return lines.join('\n') + '\n';
}
