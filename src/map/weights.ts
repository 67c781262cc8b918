/**
 * Rates guide the map (Hume: the portals measure processing rates, and the map follows them):
 * from what the portals measured, each server's capacity, the weights that would spread the load
 * by capacity, and what applying them would do. Applying stays the operator's choice.
 *
 *   per stream:  bucket rate     = records accepted for the bucket / seconds measured
 *                server capacity = sum over its slots of records processed / busy seconds
 *   per server:  utilization     = sum over streams of its buckets' rates / its capacity
 *                suggested weight ~ its capacity (streams weighted by their share of the load),
 *                scaled so the weights keep their sum
 *   predicted:   the buckets placed again with the suggested weights (placement.ts): utilization
 *                per server, and how many buckets would move
 */
import type { LoadReport } from '../protocol/control';
import { placeBuckets } from './placement';
import type { FlotillaMap } from './types';

/** One server in a suggestion. */
export interface ServerWeight {
  name: string;
  weight: number;
  suggested: number;
  /** Records per second its slots can take when busy, all streams (weighted by their load); null if not measured. */
  capacity: number | null;
  /** Records per second its buckets get now, and would get with the suggested weights. */
  load: number;
  predictedLoad: number;
  /** Load over capacity (0..), now and with the suggested weights; null without a capacity. */
  utilization: number | null;
  predictedUtilization: number | null;
}

export interface WeightSuggestion {
  servers: ServerWeight[];
  /** Buckets that would change owner, all streams. */
  moved: number;
  /** Highest minus lowest utilization, now and predicted (servers with a capacity). */
  spread: number;
  predictedSpread: number;
}

/** A bucket's load: which stream, which bucket, records per second, and its owner now. */
export interface BucketLoad {
  stream: string;
  bucket: number;
  perSec: number;
  owner: string;
}

/** Records per second of every bucket of every stream, from the reports (heaviest first). */
export function bucketLoads(map: FlotillaMap, reports: readonly LoadReport[]): BucketLoad[] {
  const out: BucketLoad[] = [];
  for (const s of map.streams) {
    const rate = bucketRates(s.name, s.buckets, reports);
    rate.forEach((perSec, bucket) => out.push({ stream: s.name, bucket, perSec, owner: map.servers[s.owner[bucket]!]!.name }));
  }
  return out.sort((a, b) => b.perSec - a.perSec);
}

/** The weights that would spread the measured load over the servers by their measured capacity. */
export function suggestWeights(map: FlotillaMap, reports: readonly LoadReport[]): WeightSuggestion {
  const names = map.servers.map((s) => s.name);
  const rates = map.streams.map((s) => bucketRates(s.name, s.buckets, reports));
  const totals = rates.map((r) => r.reduce((a, b) => a + b, 0));
  const all = totals.reduce((a, b) => a + b, 0);
  // caps[stream][server]: records per busy second, null where not measured.
  const caps = map.streams.map((s) => names.map((n) => capacityOf(reports.filter((r) => r.stream === s.name && r.server === n))));
  const filled = caps.map((row) => {
    const known = row.filter((c): c is number => c !== null);
    const mean = known.length > 0 ? known.reduce((a, b) => a + b, 0) / known.length : null;
    return row.map((c) => c ?? mean);
  });
  const capacity = names.map((_, i) => {
    if (all === 0) return null;
    let c = 0;
    for (let j = 0; j < map.streams.length; j++) {
      const v = filled[j]![i];
      if (v === null || v === undefined) return null;
      c += (totals[j]! / all) * v;
    }
    return c;
  });
  const weightSum = map.servers.reduce((a, s) => a + s.weight, 0);
  const capSum = map.servers.reduce((a, s, i) => a + (s.weight > 0 ? (capacity[i] ?? 0) : 0), 0);
  const suggested = map.servers.map((s, i) => (s.weight === 0 || capSum === 0 || capacity[i] === null ? s.weight : round2((capacity[i]! / capSum) * weightSum)));
  const owners = map.streams.map((s) => placeBuckets(s.name, s.buckets, map.servers.map((x, i) => ({ name: x.name, weight: suggested[i]! }))));
  let moved = 0;
  map.streams.forEach((s, j) => s.owner.forEach((o, b) => (moved += o !== owners[j]![b]! ? 1 : 0)));
  const loadOf = (i: number, owner: (j: number) => ArrayLike<number>) => map.streams.map((_, j) => sumOwned(rates[j]!, owner(j), i));
  const utilization = (perStream: number[], i: number) => {
    let u = 0;
    for (let j = 0; j < perStream.length; j++) {
      if (perStream[j] === 0) continue;
      const c = filled[j]![i];
      if (c === null || c === undefined || c === 0) return null;
      u += perStream[j]! / c;
    }
    return u;
  };
  const servers = map.servers.map((s, i): ServerWeight => {
    const now = loadOf(i, (j) => map.streams[j]!.owner);
    const then = loadOf(i, (j) => owners[j]!);
    return {
      name: s.name,
      weight: s.weight,
      suggested: suggested[i]!,
      capacity: capacity[i] === null ? null : Math.round(capacity[i]!),
      load: round2(now.reduce((a, b) => a + b, 0)),
      predictedLoad: round2(then.reduce((a, b) => a + b, 0)),
      utilization: utilization(now, i),
      predictedUtilization: utilization(then, i),
    };
  });
  const active = servers.filter((s) => s.suggested > 0 || s.weight > 0);
  return { servers, moved, spread: spreadOf(active.map((s) => s.utilization)), predictedSpread: spreadOf(active.map((s) => s.predictedUtilization)) };
}

/** Records per second per bucket of `stream`: each report's counts over its own time. */
function bucketRates(stream: string, buckets: number, reports: readonly LoadReport[]): number[] {
  const rate = new Array<number>(buckets).fill(0);
  for (const r of reports) {
    if (r.stream !== stream || r.sinceMs <= 0) continue;
    for (let b = 0; b < buckets && b < r.buckets.length; b++) rate[b]! += r.buckets[b]! / (r.sinceMs / 1000);
  }
  return rate;
}

/** Records per busy second of the slots in `reports`, summed; null if none was ever busy. */
function capacityOf(reports: readonly LoadReport[]): number | null {
  let c = 0;
  let seen = false;
  for (const r of reports) {
    for (const s of r.slots) {
      if (s.busyMs <= 0 || s.processed === 0) continue;
      c += s.processed / (s.busyMs / 1000);
      seen = true;
    }
  }
  return seen ? c : null;
}

function sumOwned(rates: number[], owner: ArrayLike<number>, server: number): number {
  let sum = 0;
  for (let b = 0; b < rates.length; b++) if (owner[b] === server) sum += rates[b]!;
  return sum;
}

function spreadOf(values: (number | null)[]): number {
  const known = values.filter((v): v is number => v !== null);
  return known.length < 2 ? 0 : Math.max(...known) - Math.min(...known);
}

function round2(v: number): number {
  return Math.round(v * 100) / 100;
}
