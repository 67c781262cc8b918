/**
 * Turns the traces of bench/tail/tail.ts into a per-stage account of each record's latency: where
 * the time between a record's send() and the ack of its batch went, on average and for the
 * slowest 1% and 0.1% of records, and how much of it overlapped garbage collection.
 */
import type { TraceDump } from './trace';

/** The stages of one record's trip, in order; their sum is the record's latency. */
export const STAGES = [
  ['sender_wait', 'record waits in the open batch (linger, or the in-flight batch\'s ack)'],
  ['sender_queue', 'closed batch waits for the window'],
  ['sender_outbox', 'batch waits for the sender socket (earlier sends)'],
  ['to_portal', 'sender socket.send -> portal handler entered (libzmq, TCP, portal wake-up)'],
  ['portal_route', 'portal handler -> DELIVER pushed, slowest slot (split, slot window)'],
  ['portal_outbox', 'DELIVER waits in the portal\'s egress outbox'],
  ['to_sink', 'portal socket.send -> sink handler (ipc, sink wake-up)'],
  ['sink', 'sink handler -> DONE socket.send'],
  ['to_portal_done', 'sink socket.send -> portal DONE handler (ipc, portal wake-up)'],
  ['portal_ack', 'last DONE -> ACK pushed'],
  ['ack_outbox', 'ACK waits in the portal\'s ingress outbox'],
  ['to_sender', 'portal socket.send of ACK -> sender onAck (libzmq, TCP, sender wake-up)'],
] as const;
export type Stage = (typeof STAGES)[number][0];

export interface Traces {
  load: TraceDump;
  portal: TraceDump;
  sinks: TraceDump[];
  /** The measured window, shared clock: records sent in it are accounted. */
  from: number;
  to: number;
}

interface Delivery {
  id: number;
  slot: number;
  push: number;
  call?: number;
  sink?: number;
  doneCall?: number;
  doneIn?: number;
}

interface Batch {
  seq: number;
  count: number;
  firstRecord: number;
  close: number;
  tx?: number;
  sendCall?: number;
  recvIn?: number;
  recvOut?: number;
  deliveries: Delivery[];
  ack?: number;
  ackCall?: number;
  ackRx?: number;
}

export interface StageSummary {
  records: number;
  latency_ms: number;
  stages_ms: Record<Stage, number>;
  /** How often each stage was the largest part of the record's latency. */
  largest: Partial<Record<Stage, number>>;
  /** Mean GC ms overlapping the record's trip, per process. */
  gc_overlap_ms: Record<string, number>;
  /** Share of these records whose trip overlapped a GC pause of 1 ms or more anywhere. */
  with_gc_1ms: number;
}

export interface TailReport {
  batches: number;
  batches_per_second: number;
  records_per_batch: number;
  acks_out_of_order: number;
  records: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
  all: StageSummary;
  p99_tail: StageSummary;
  p999_tail: StageSummary;
  /** Each stage's own p50 and p99 over records (how slow each hop gets by itself), ms. */
  stage_quantiles_ms: Record<Stage, { p50: number; p99: number }>;
  /** Slowest slot's DONE minus fastest slot's DONE, per batch, ms. */
  slot_spread_ms: { p50: number; p99: number };
  gc: Record<string, { count: number; total_ms: number; max_ms: number; over_1ms: number; scavenges: number }>;
  /** Gaps between the load generator's 1 ms ticks, ms. */
  tick_gap_ms: { p50: number; p99: number; max: number; over_3ms: number };
}

const r3 = (n: number) => Math.round(n * 1000) / 1000;

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function rows(d: TraceDump, kind: string): number[][] {
  return d.events[kind] ?? [];
}

/** Joins the traces of every process into batches with a time for each stage. */
function joinBatches(t: Traces): Batch[] {
  const batches = new Map<number, Batch>();
  for (const [seq, close, count, before] of rows(t.load, 'close')) batches.set(seq!, { seq: seq!, count: count!, firstRecord: before!, close: close!, deliveries: [] });
  for (const [seq, tx] of rows(t.load, 'tx')) {
    const b = batches.get(seq!);
    if (b && b.tx === undefined) b.tx = tx;
  }
  for (const [seq, call] of rows(t.load, 'send')) {
    const b = batches.get(seq!);
    if (b && b.sendCall === undefined) b.sendCall = call;
  }
  for (const [seq, tin, tout] of rows(t.portal, 'recv')) {
    const b = batches.get(seq!);
    if (b) [b.recvIn, b.recvOut] = [tin, tout];
  }
  const byId = new Map<number, Delivery>();
  const bySlotOrdinal = new Map<string, Delivery>();
  for (const [id, seq, slot, ordinal, push] of rows(t.portal, 'deliver')) {
    const d: Delivery = { id: id!, slot: slot!, push: push! };
    batches.get(seq!)?.deliveries.push(d);
    byId.set(id!, d);
    bySlotOrdinal.set(`${slot}/${ordinal}`, d);
  }
  for (const [id, call] of rows(t.portal, 'egress')) {
    const d = byId.get(id!);
    if (d) d.call = call;
  }
  t.sinks.forEach((s, slot) => {
    for (const [ordinal, at] of rows(s, 'sink')) {
      const d = bySlotOrdinal.get(`${slot}/${ordinal}`);
      if (d) d.sink = at;
    }
    for (const [id, call] of rows(s, 'done')) {
      const d = byId.get(id!);
      if (d && d.slot === slot) d.doneCall = call;
    }
  });
  for (const [id, tin] of rows(t.portal, 'done')) {
    const d = byId.get(id!);
    if (d) d.doneIn = tin;
  }
  for (const [seq, at] of rows(t.portal, 'ack')) {
    const b = batches.get(seq!);
    if (b) b.ack = at;
  }
  for (const [seq, call] of rows(t.portal, 'ingress')) {
    const b = batches.get(seq!);
    if (b) b.ackCall = call;
  }
  for (const [seq, at] of rows(t.load, 'ackrx')) {
    const b = batches.get(seq!);
    if (b) b.ackRx = at;
  }
  const complete = (b: Batch) =>
    [b.tx, b.sendCall, b.recvIn, b.ack, b.ackCall, b.ackRx].every((x) => x !== undefined) &&
    b.deliveries.length > 0 &&
    b.deliveries.every((d) => [d.call, d.sink, d.doneCall, d.doneIn].every((x) => x !== undefined));
  return [...batches.values()].filter(complete).sort((a, b) => a.seq - b.seq);
}

/** The stage durations of a batch (sender_wait excluded: it is per record). */
function batchStages(b: Batch): Omit<Record<Stage, number>, 'sender_wait'> {
  const last = b.deliveries.reduce((a, d) => (d.doneIn! > a.doneIn! ? d : a));
  return {
    sender_queue: b.tx! - b.close,
    sender_outbox: b.sendCall! - b.tx!,
    to_portal: b.recvIn! - b.sendCall!,
    portal_route: last.push - b.recvIn!,
    portal_outbox: last.call! - last.push,
    to_sink: last.sink! - last.call!,
    sink: last.doneCall! - last.sink!,
    to_portal_done: last.doneIn! - last.doneCall!,
    portal_ack: b.ack! - last.doneIn!,
    ack_outbox: b.ackCall! - b.ack!,
    to_sender: b.ackRx! - b.ackCall!,
  };
}

function gcOverlap(gcs: [number, number, number][], from: number, to: number): { ms: number; max: number } {
  let ms = 0;
  let max = 0;
  for (const [start, dur] of gcs) {
    const o = Math.min(to, start + dur) - Math.max(from, start);
    if (o > 0) {
      ms += o;
      if (dur > max) max = dur;
    }
  }
  return { ms, max };
}

interface RecordGroup {
  /** Records sent in one tick and closed into one batch. */
  n: number;
  sentAt: number;
  latency: number;
  batch: Batch;
  stages: Record<Stage, number>;
}

function summarise(groups: RecordGroup[], procs: Record<string, [number, number, number][]>): StageSummary {
  const stages = Object.fromEntries(STAGES.map(([s]) => [s, 0])) as Record<Stage, number>;
  const largest: Partial<Record<Stage, number>> = {};
  const gc: Record<string, number> = Object.fromEntries(Object.keys(procs).map((p) => [p, 0]));
  let n = 0;
  let latency = 0;
  let withGc = 0;
  for (const g of groups) {
    n += g.n;
    latency += g.latency * g.n;
    let top: Stage = 'sender_wait';
    for (const [s] of STAGES) {
      stages[s] += g.stages[s] * g.n;
      if (g.stages[s] > g.stages[top]) top = s;
    }
    largest[top] = (largest[top] ?? 0) + g.n;
    let big = false;
    for (const [p, list] of Object.entries(procs)) {
      const o = gcOverlap(list, g.sentAt, g.batch.ackRx!);
      gc[p]! += o.ms * g.n;
      if (o.max >= 1) big = true;
    }
    if (big) withGc += g.n;
  }
  const mean = (x: number) => (n > 0 ? r3(x / n) : NaN);
  return {
    records: n,
    latency_ms: mean(latency),
    stages_ms: Object.fromEntries(STAGES.map(([s]) => [s, mean(stages[s])])) as Record<Stage, number>,
    largest: Object.fromEntries(Object.entries(largest).map(([s, c]) => [s, Math.round((c / n) * 1000) / 1000])),
    gc_overlap_ms: Object.fromEntries(Object.entries(gc).map(([p, v]) => [p, mean(v)])),
    with_gc_1ms: n > 0 ? Math.round((withGc / n) * 1000) / 1000 : NaN,
  };
}

/** The stage account of every record sent while tracing. */
export function analyse(t: Traces): TailReport {
  const batches = joinBatches(t);
  // Records are sent only in ticks, in order: record i was sent at the tick whose range holds i.
  const ticks = rows(t.load, 'tick');
  const groups: RecordGroup[] = [];
  let k = 0;
  for (const b of batches) {
    const stages = batchStages(b);
    let i = b.firstRecord;
    const end = b.firstRecord + b.count;
    while (k < ticks.length && ticks[k]![2]! + ticks[k]![1]! <= i) k++;
    let j = k;
    if (j >= ticks.length || ticks[j]![2]! > i) continue; // sent before tracing started
    while (i < end && j < ticks.length) {
      const [at, due, before] = ticks[j]! as [number, number, number];
      const n = Math.min(end, before + due) - i;
      if (n > 0 && at < t.to) {
        groups.push({ n, sentAt: at, latency: b.ackRx! - at, batch: b, stages: { sender_wait: b.close - at, ...stages } });
        i += n;
      }
      j++;
    }
  }
  const procs: Record<string, [number, number, number][]> = { load: t.load.gc, portal: t.portal.gc };
  t.sinks.forEach((s, i) => (procs[`sink${i}`] = s.gc));

  const byLatency = [...groups].sort((a, b) => a.latency - b.latency);
  const total = groups.reduce((a, g) => a + g.n, 0);
  const at = (q: number) => {
    let seen = 0;
    for (const g of byLatency) if ((seen += g.n) >= q * total) return g.latency;
    return NaN;
  };
  const tail = (q: number) => {
    const cut = at(q);
    return byLatency.filter((g) => g.latency >= cut);
  };
  let outOfOrder = 0;
  let lastSeq = -1;
  for (const [seq] of rows(t.load, 'ackrx')) {
    if (seq! < lastSeq) outOfOrder++;
    lastSeq = Math.max(lastSeq, seq!);
  }
  const spreads = batches.map((b) => Math.max(...b.deliveries.map((d) => d.doneIn!)) - Math.min(...b.deliveries.map((d) => d.doneIn!))).sort((a, b) => a - b);
  const gc: TailReport['gc'] = {};
  for (const [p, list] of Object.entries(procs)) {
    gc[p] = {
      count: list.length,
      total_ms: r3(list.reduce((a, g) => a + g[1], 0)),
      max_ms: r3(list.reduce((a, g) => Math.max(a, g[1]), 0)),
      over_1ms: list.filter((g) => g[1] >= 1).length,
      scavenges: list.filter((g) => g[2] === 1).length,
    };
  }
  const stageQ = {} as Record<Stage, { p50: number; p99: number }>;
  for (const [st] of STAGES) {
    const xs = groups.map((g) => [g.stages[st], g.n] as const).sort((a, b) => a[0] - b[0]);
    const q = (p: number) => {
      let seen = 0;
      for (const [x, n] of xs) if ((seen += n) >= p * total) return r3(x);
      return NaN;
    };
    stageQ[st] = { p50: q(0.5), p99: q(0.99) };
  }
  const gaps: number[] = [];
  for (let i = 1; i < ticks.length; i++) gaps.push(ticks[i]![0]! - ticks[i - 1]![0]!);
  gaps.sort((a, b) => a - b);
  const seconds = (t.to - t.from) / 1000;
  return {
    batches: batches.length,
    batches_per_second: Math.round(batches.length / seconds),
    records_per_batch: Math.round((total / Math.max(1, batches.length)) * 10) / 10,
    acks_out_of_order: outOfOrder,
    records: total,
    p50_ms: r3(at(0.5)),
    p90_ms: r3(at(0.9)),
    p99_ms: r3(at(0.99)),
    p999_ms: r3(at(0.999)),
    max_ms: r3(byLatency.at(-1)?.latency ?? NaN),
    all: summarise(groups, procs),
    p99_tail: summarise(tail(0.99), procs),
    p999_tail: summarise(tail(0.999), procs),
    stage_quantiles_ms: stageQ,
    slot_spread_ms: { p50: r3(quantile(spreads, 0.5)), p99: r3(quantile(spreads, 0.99)) },
    gc,
    tick_gap_ms: { p50: r3(quantile(gaps, 0.5)), p99: r3(quantile(gaps, 0.99)), max: r3(gaps.at(-1) ?? NaN), over_3ms: gaps.filter((g) => g > 3).length },
  };
}

/** A readable table of the report. */
export function tailText(r: TailReport): string {
  const lines = [
    `${r.records} records in ${r.batches} batches (${r.batches_per_second}/s, ${r.records_per_batch} records each); acks out of order: ${r.acks_out_of_order}`,
    `latency from the trace: p50 ${r.p50_ms}  p90 ${r.p90_ms}  p99 ${r.p99_ms}  p99.9 ${r.p999_ms}  max ${r.max_ms} ms`,
    '',
    `ms per stage: mean over all records, over those >= p99 and >= p99.9; the stage's own p50 and p99`,
    `                      all   >=p99 >=p99.9 |  own p50  own p99`,
  ];
  for (const [s, what] of STAGES) {
    const q = r.stage_quantiles_ms[s];
    lines.push(
      `  ${s.padEnd(16)} ${String(r.all.stages_ms[s]).padStart(7)} ${String(r.p99_tail.stages_ms[s]).padStart(7)} ${String(r.p999_tail.stages_ms[s]).padStart(7)} | ${String(q.p50).padStart(8)} ${String(q.p99).padStart(8)}   ${what}`,
    );
  }
  lines.push(`  ${'total'.padEnd(16)} ${String(r.all.latency_ms).padStart(7)} ${String(r.p99_tail.latency_ms).padStart(7)} ${String(r.p999_tail.latency_ms).padStart(7)}`);
  lines.push('', `largest stage of each record >= p99: ${JSON.stringify(r.p99_tail.largest)}`);
  lines.push(`GC ms overlapping a record's trip, mean: all ${JSON.stringify(r.all.gc_overlap_ms)}`);
  lines.push(`                                        >=p99 ${JSON.stringify(r.p99_tail.gc_overlap_ms)}`);
  lines.push(`records whose trip overlapped a GC pause >= 1 ms: all ${r.all.with_gc_1ms}, >=p99 ${r.p99_tail.with_gc_1ms}, >=p99.9 ${r.p999_tail.with_gc_1ms}`);
  lines.push(`slot spread (last DONE - first DONE of a batch): p50 ${r.slot_spread_ms.p50} ms, p99 ${r.slot_spread_ms.p99} ms`);
  lines.push(`load generator tick gaps: p50 ${r.tick_gap_ms.p50}, p99 ${r.tick_gap_ms.p99}, max ${r.tick_gap_ms.max} ms, ${r.tick_gap_ms.over_3ms} over 3 ms`);
  lines.push('GC per process over the window:');
  for (const [p, g] of Object.entries(r.gc)) {
    lines.push(`  ${p.padEnd(7)} ${String(g.count).padStart(5)} GCs (${g.scavenges} scavenges), ${g.total_ms} ms in all, max ${g.max_ms} ms, ${g.over_1ms} >= 1 ms`);
  }
  return lines.join('\n') + '\n';
}
