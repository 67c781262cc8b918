/**
 * A load generator of the map-change bench: one Sender of its own (as a client of the fleet is),
 * offering `rate` records/s over `keys`, paced; it samples its acknowledged count every 2 ms so
 * that the bench can read, after a change, how many records were acknowledged by a given time
 * without asking at that time (a busy bench process would read late).
 *
 *   usage: map-change-load.js ETCD_URL
 *   requests: start { keys, rate }; acked -> number; ackedAt { at: ms[] } -> number[];
 *             perServer { from, to } -> per server, records acked/sent per 50 ms; stop
 *
 * Times are `performance.timeOrigin + performance.now()` in every process of the bench.
 */
import { subscribe } from 'node:diagnostics_channel';
import type { SenderBatchEvent } from '../src/sender/channel';
import { Sender } from '../src/sender/sender';
import { openMap } from '../src/map/open';
import { serve } from './child';

const [url] = process.argv.slice(2) as [string];
const SAMPLE_MS = 2;
const now = () => performance.timeOrigin + performance.now();

let sender: Sender | null = null;
let sending = false;
let loop: Promise<void> = Promise.resolve();
const times: number[] = [];
const counts: number[] = [];
let sampler: NodeJS.Timeout | null = null;

/** With FLOTILLA_BENCH_TRACE: per server, [time, records] of each batch transmitted and acknowledged (the sender's named hooks). */
const perServer: Record<string, { acked: number[]; sent: number[] }> = {};
if (process.env.FLOTILLA_BENCH_TRACE) {
  const record = (kind: 'acked' | 'sent') => (m: unknown) => {
    const e = m as SenderBatchEvent;
    (perServer[e.server] ??= { acked: [], sent: [] })[kind].push(performance.timeOrigin + e.at, e.count);
  };
  subscribe('flotilla:sender:ack', record('acked'));
  subscribe('flotilla:sender:transmit', record('sent'));
}

/** Records of `rows` ([time, records, ...]) per 50 ms from `from` to `to`. */
function bins(rows: number[], from: number, to: number): number[] {
  const out = new Array<number>(Math.ceil((to - from) / 50)).fill(0);
  for (let i = 0; i < rows.length; i += 2) {
    const t = rows[i]!;
    if (t >= from && t < to) out[Math.floor((t - from) / 50)]! += rows[i + 1]!;
  }
  return out;
}

async function start(args: unknown): Promise<void> {
  const { keys, rate } = args as { keys: string[]; rate: number };
  sender = new Sender({ map: await openMap(url), log: undefined });
  const s = sender;
  sending = true;
  sampler = setInterval(() => {
    times.push(now());
    counts.push(s.stats.acked);
  }, SAMPLE_MS);
  loop = (async () => {
    const started = Date.now();
    let n = 0;
    while (sending) {
      const due = Math.floor(((Date.now() - started) / 1000) * rate);
      for (; n < due; n++) s.send('bench', { key: keys[n % keys.length]!, n });
      await s.writable();
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
}

/** The acknowledged count as of time `t`: the last sample taken at or before it. */
function ackedAt(t: number): number {
  let lo = 0;
  let hi = times.length - 1;
  if (hi < 0 || times[0]! > t) return 0;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (times[mid]! <= t) lo = mid;
    else hi = mid - 1;
  }
  return counts[lo]!;
}

serve({
  start,
  acked: () => sender?.stats.acked ?? 0,
  /** Per server, "acked/sent" records per 50 ms from `from` to `to` (FLOTILLA_BENCH_TRACE). */
  perServer(args) {
    const { from, to } = args as { from: number; to: number };
    const out: Record<string, string> = {};
    for (const [server, { acked, sent }] of Object.entries(perServer)) {
      const s = bins(sent, from, to);
      out[server] = bins(acked, from, to).map((a, k) => `${a}/${s[k]}`).join(' ');
    }
    return out;
  },
  async ackedAt(args) {
    const { at } = args as { at: number[] };
    // Once the samples cover the latest of the times asked.
    while (sampler && (times.at(-1) ?? 0) < Math.max(...at)) await new Promise((r) => setTimeout(r, SAMPLE_MS));
    return at.map(ackedAt);
  },
  async stop() {
    sending = false;
    await loop;
    if (sampler) clearInterval(sampler);
    sender?.close();
    await sender?.keeper.store?.close();
  },
});
