/**
 * Demo producer: sends clicks from 10,000 users on 100 pages, as fast as flow control allows or
 * at --rate records/s, until --seconds pass or SIGTERM; then flushes (waits until every record
 * sent is acknowledged) and prints one JSON line with its counts.
 *
 *   node dist/examples/producer.js --map MAP [--rate N] [--seconds N]
 */
import { parseArgs } from 'node:util';
import { Sender } from '../src/sender/sender';

const { values } = parseArgs({ options: { map: { type: 'string' }, rate: { type: 'string' }, seconds: { type: 'string' } } });
const rate = values.rate ? Number(values.rate) : 0;
const seconds = values.seconds ? Number(values.seconds) : Infinity;
const sender = new Sender({ map: values.map! });
let stopping = false;
process.once('SIGTERM', () => (stopping = true));
process.once('SIGINT', () => (stopping = true));

async function main(): Promise<void> {
  const start = Date.now();
  const until = start + seconds * 1000;
  let n = 0;
  while (!stopping && Date.now() < until) {
    // Send in slices of 1,000 and let the event loop run between them (acks arrive there).
    const target = rate > 0 ? Math.min(n + 1000, Math.floor(((Date.now() - start) / 1000) * rate)) : n + 1000;
    for (; n < target; n++) {
      const click = { user: `u${(n * 7919) % 10_000}`, page: `/p${n % 100}`, at: Date.now() };
      if (!sender.send('clicks', click)) await sender.writable();
    }
    await new Promise((r) => (rate > 0 && n >= target ? setTimeout(r, 5) : setImmediate(r)));
  }
  await sender.flush();
  sender.close();
  process.stdout.write(JSON.stringify({ sent: n, acked: sender.stats.acked, refused: sender.stats.refused, ms: Date.now() - start }) + '\n');
}

void main();
