/**
 * Flotilla load generator: one process, one `Sender`, pre-encoded 100-byte payloads sent with
 * `sendEncoded` over KEYS keys in turn.
 *
 *   usage: load.js MAP_FILE throughput LINGER_MS BATCH_BYTES BATCH_RECORDS
 *          load.js MAP_FILE paced      LINGER_MS BATCH_BYTES BATCH_RECORDS RATE
 *
 * throughput: sends as fast as the sender lets it (awaiting `writable()` when the window is full).
 * paced: every millisecond tick sends the records due at RATE per second, and measures each
 * record's latency from its `sendEncoded` call to the acknowledgement of its batch.
 *
 * requests: start; count -> Counts; mark (latency window starts now); endmark (it ends now);
 * latency -> histogram (once everything sent in the window is settled); stop -> Counts (after
 * flushing what is in flight); trace and dump: see bench/tail/tail.ts.
 */
import { Sender } from '../src/sender/sender';
import { createLogger } from '../src/log';
import { serve, yieldToIo } from './child';
import { Histogram } from './histogram';
import { encodedPayloads, KEYS, STREAM } from './payload';
import { toClock, traceSender, Tracer } from './tail/trace';

export interface Counts {
  sent: number;
  acked: number;
  refused: number;
  batches: number;
}

const [mapFile, mode, linger, batchBytes, batchRecords, rate] = process.argv.slice(2) as string[];
const { keys, payloads } = encodedPayloads();
const sender = new Sender({
  map: mapFile!,
  lingerMs: Number(linger),
  batchBytes: Number(batchBytes),
  batchRecords: Number(batchRecords),
  log: createLogger('bench-load'),
});
let next = Math.floor(Math.random() * KEYS);
let running = false;
/**
 * Set by bench/tail/tail.ts (BENCH_TRACE=1): timestamps of ticks [tick, records due, records
 * sent before it], and of batches and acks through the Sender's named hooks.
 */
const tr = process.env.BENCH_TRACE === '1' ? new Tracer() : null;
if (tr) traceSender(tr);
const tickLog = tr?.log('tick', 3);

/** Records in flight, oldest first: the time their send() was called and how many. */
const sentAt: { t: number; n: number }[] = [];
let head = 0;
/** Per record (paced) or per batch (throughput), send to ack, ms. */
const latency = new Histogram();
let markedAt = Infinity;
/** End of the measured window ('endmark'), and how many records had been sent by then. */
let endedAt = Infinity;
let sentByEnd = -1;

sender.onAck = (count, batchMs) => {
  const now = performance.now();
  if (mode !== 'paced') {
    if (now - batchMs >= markedAt && now - batchMs < endedAt) latency.add(batchMs);
    return;
  }
  // One portal acknowledges batches in the order they were sent (each batch touches every slot,
  // and slots finish deliveries in order), so the oldest `count` records are the ones settled.
  let left = count;
  while (left > 0 && head < sentAt.length) {
    const chunk = sentAt[head]!;
    const n = Math.min(left, chunk.n);
    if (chunk.t >= markedAt && chunk.t < endedAt) latency.add(now - chunk.t, n);
    chunk.n -= n;
    left -= n;
    if (chunk.n === 0) head++;
  }
  if (head > 4096) {
    sentAt.splice(0, head);
    head = 0;
  }
};

function sendOne(): boolean {
  const k = next;
  next = next + 1 === KEYS ? 0 : next + 1;
  return sender.sendEncoded(STREAM, keys[k]!, payloads[k]!);
}

async function blast(): Promise<void> {
  while (running) {
    for (let n = 0; n < 1024 && running; n++) if (!sendOne()) await sender.writable();
    await yieldToIo();
  }
}

function paced(perSecond: number): void {
  const start = performance.now();
  let sent = 0;
  const timer = setInterval(() => {
    if (!running) return clearInterval(timer);
    const now = performance.now();
    const due = Math.floor(((now - start) * perSecond) / 1000) - sent;
    if (due <= 0) return;
    tickLog?.add(toClock(now), due, sent);
    for (let n = 0; n < due; n++) sendOne();
    sent += due;
    sentAt.push({ t: now, n: due });
  }, 1);
}

function counts(): Counts {
  const s = sender.stats;
  return { sent: s.records, acked: s.acked, refused: s.refused, batches: s.batches };
}

serve({
  start: () => {
    running = true;
    if (mode === 'paced') paced(Number(rate));
    else void blast();
  },
  count: counts,
  mark: () => {
    markedAt = performance.now();
    endedAt = Infinity;
    sentByEnd = -1;
    latency.reset();
    return counts();
  },
  endmark: () => {
    endedAt = performance.now();
    sentByEnd = sender.stats.records;
    return counts();
  },
  // After 'endmark', waits (up to 2 s) until every record sent in the window is settled, so
  // that the slowest ones are counted too.
  latency: async () => {
    const deadline = performance.now() + 2000;
    while (sentByEnd >= 0 && sender.stats.acked + sender.stats.refused < sentByEnd && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    return latency.toSparse();
  },
  trace: () => tr?.start(),
  dump: () => tr?.dump() ?? null,
  stop: async () => {
    running = false;
    await Promise.race([sender.flush(), new Promise((r) => setTimeout(r, 5000))]);
    const final = counts();
    sender.close();
    return final;
  },
});
