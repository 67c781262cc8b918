/** Command-line options of `npm run bench`. */
import { parseArgs } from 'node:util';

export interface BenchOptions {
  /** Print one JSON object on stdout instead of a summary. */
  json: boolean;
  /** Length of each measurement window, seconds. */
  seconds: number;
  /** Warm-up before each window, seconds. */
  warmup: number;
  /** Load-generator processes for the throughput runs (Flotilla and baseline alike). */
  senders: number;
  /** Paced rate for the latency run, records per second. */
  rate: number;
  /** Sender settings (batchBytes and batchRecords apply to both Flotilla runs). */
  lingerMs: number;
  batchBytes: number;
  batchRecords: number;
  /** Linger for the latency run (small: a record waits at most this long for its batch). */
  latencyLingerMs: number;
  /** Skip the zeromq.js baseline. */
  skipBaseline: boolean;
  skipSpool: boolean;
  skipMapChange: boolean;
  /** Directory to write a V8 CPU profile of the portal into (node --cpu-prof), or null. */
  profileDir: string | null;
  /** Component slots of the bench stream: one sink process each. */
  slots: number;
  /** Extra node flags for the portal, the sink components and the load generators. */
  portalFlags: string[];
  sinkFlags: string[];
  senderFlags: string[];
}

const HELP = `usage: npm run bench -- [options]
  --json                 one JSON object on stdout
  --seconds N            length of each measurement window (default 5)
  --warmup N             warm-up before each window, seconds (default 1)
  --senders N            load-generator processes for the throughput runs (default 1)
  --rate N               paced rate of the latency run, records/s (default 100000)
  --linger-ms N          sender lingerMs for the throughput run (default 5)
  --batch-bytes N        sender batchBytes (default 900000, under the map's 1 MB max_batch_bytes)
  --batch-records N      sender batchRecords (default 8192; 900 KB is reached first)
  --latency-linger-ms N  sender lingerMs for the latency run (default 2)
  --slots N              component slots of the stream, one sink process each (default 4)
  --skip-baseline        do not run the zeromq.js proxy baseline
  --skip-spool           do not run the throughput with the spool in mode always
  --skip-map-change      do not run the map change with the map in etcd (needs the etcd binary)
  --profile DIR          write a CPU profile of the portal process into DIR
  --portal-flags='F ...' extra node flags for the portal (e.g. --portal-flags=--max-semi-space-size=16;
                         write the '=': a value starting with '-' is refused otherwise)
  --sink-flags='F ...'   extra node flags for the sink components
  --sender-flags='F ...' extra node flags for the load generators
`;

/** Parses process.argv; prints usage and exits on --help or a bad value. */
export function parseOptions(argv = process.argv.slice(2)): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      json: { type: 'boolean', default: false },
      seconds: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '1' },
      senders: { type: 'string', default: '1' },
      rate: { type: 'string', default: '100000' },
      'linger-ms': { type: 'string', default: '5' },
      'batch-bytes': { type: 'string', default: '900000' },
      'batch-records': { type: 'string', default: '8192' },
      'latency-linger-ms': { type: 'string', default: '2' },
      'skip-baseline': { type: 'boolean', default: false },
      'skip-spool': { type: 'boolean', default: false },
      'skip-map-change': { type: 'boolean', default: false },
      slots: { type: 'string', default: '4' },
      profile: { type: 'string' },
      'portal-flags': { type: 'string', default: '' },
      'sink-flags': { type: 'string', default: '' },
      'sender-flags': { type: 'string', default: '' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const num = (name: keyof typeof values, min: number): number => {
    const n = Number(values[name]);
    if (!Number.isFinite(n) || n < min) {
      process.stderr.write(`error: --${name} must be a number >= ${min}\n${HELP}`);
      process.exit(2);
    }
    return n;
  };
  return {
    json: values.json!,
    seconds: num('seconds', 0.5),
    warmup: num('warmup', 0),
    senders: Math.floor(num('senders', 1)),
    rate: num('rate', 1),
    lingerMs: num('linger-ms', 0),
    batchBytes: num('batch-bytes', 1024),
    batchRecords: num('batch-records', 1),
    latencyLingerMs: num('latency-linger-ms', 0),
    skipBaseline: values['skip-baseline']!,
    skipSpool: values['skip-spool']!,
    skipMapChange: values['skip-map-change']!,
    profileDir: values.profile ?? null,
    slots: Math.floor(num('slots', 1)),
    portalFlags: words(values['portal-flags']!),
    sinkFlags: words(values['sink-flags']!),
    senderFlags: words(values['sender-flags']!),
  };
}

/** Splits a flag list given as one argument on whitespace. */
function words(s: string): string[] {
  return s.split(/\s+/).filter((w) => w.length > 0);
}
