/**
 * Demo producer: sends clicks from 10,000 users on 100 pages, as fast as flow control allows or
 * at --rate records/s, until --seconds pass or SIGTERM; then flushes (waits until every record
 * sent is acknowledged) and prints one JSON line with its counts.
 *
 *   node dist/examples/producer.js --map MAP [--rate N] [--seconds N]
 */
import { parseArgs } from 'node:util';
import { Sender } from '../src/sender/sender';

const USAGE = `Usage: producer --map MAP [--rate N] [--seconds N]

Sends demo clicks (10,000 users on 100 pages) on stream "clicks" of MAP, as fast as flow control
allows or at --rate records/s, until --seconds pass or SIGTERM; then waits until every record is
acknowledged and prints {"sent", "acked", "refused", "ms"} as one JSON line.
`;

/** The options, or a usage message and exit 2 (0 for --help) instead of a stack trace. */
function options(): { map: string; rate: number; seconds: number } {
  let values;
  try {
    values = parseArgs({ options: { map: { type: 'string' }, rate: { type: 'string' }, seconds: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }).values;
  } catch (err) {
    process.stderr.write(`producer: ${(err as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const rate = values.rate ? Number(values.rate) : 0;
  const seconds = values.seconds ? Number(values.seconds) : Infinity;
  const problem = !values.map ? '--map is required' : !(rate >= 0) ? '--rate must be a number' : !(seconds > 0) ? '--seconds must be a positive number' : '';
  if (problem) {
    process.stderr.write(`producer: ${problem}\n\n${USAGE}`);
    process.exit(2);
  }
  return { map: values.map!, rate, seconds };
}

const { map, rate, seconds } = options();
const sender = new Sender({ map });
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
