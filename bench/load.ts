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
 * requests: start; count -> Counts; mark (latency window starts now); latency -> histogram;
 * stop -> Counts (after flushing what is in flight).
 */
import { Sender } from '../src/sender';
import { createLogger } from '../src/log';
import { serve, yieldToIo } from './child';
import { Histogram } from './histogram';
import { encodedPayloads, KEYS, STREAM } from './payload';

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

/** Records in flight, oldest first: the time their send() was called and how many. */
const sentAt: { t: number; n: number }[] = [];
let head = 0;
/** Per record (paced) or per batch (throughput), send to ack, ms. */
const latency = new Histogram();
let markedAt = Infinity;

sender.onAck = (count, batchMs) => {
  const now = performance.now();
  if (mode !== 'paced') {
    if (now - batchMs >= markedAt) latency.add(batchMs);
    return;
  }
  // One portal acknowledges batches in the order they were sent (each batch touches every slot,
  // and slots finish deliveries in order), so the oldest `count` records are the ones settled.
  let left = count;
  while (left > 0 && head < sentAt.length) {
    const chunk = sentAt[head]!;
    const n = Math.min(left, chunk.n);
    if (chunk.t >= markedAt) latency.add(now - chunk.t, n);
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
    latency.reset();
    return counts();
  },
  latency: () => latency.toSparse(),
  stop: async () => {
    running = false;
    await Promise.race([sender.flush(), new Promise((r) => setTimeout(r, 5000))]);
    const final = counts();
    sender.close();
    return final;
  },
});
