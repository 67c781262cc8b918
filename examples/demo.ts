/**
 * `npm run demo`: a one-host Flotilla deployment with live output.
 *
 *   producer --clicks--> clicks portal --> 4 click-counter slots --pages--> pages portal --> 4 page-counter slots
 *
 * Starts the agent, the two portals and eight components of config/demo.yaml as real processes, a producer
 * sending clicks, and prints each portal's rates every second. Ctrl-C (or --seconds N) stops the
 * producer, waits until everything it sent is acknowledged (so processed on both hops), stops
 * the rest and prints a summary line. Exit 0 when nothing was lost or refused.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { parseDocument } from 'yaml';
import { stopChildren } from '../daemon/children';
import { die } from '../daemon/process';
import { packageVersion } from '../daemon/version';
import { describeTransport } from '../src/map/security';
import { FlotillaError } from '../src/errors';
import { portalStats } from '../src/portal/client';
import { loadMap } from '../src/map/load';
import { portalPort, serverOf, slotCount } from '../src/map/lookup';
import type { PortalStats } from '../src/portal/portal';
import { runSearch } from './search/run';

const ROOT = join(__dirname, '..', '..');
const DIST = join(ROOT, 'dist');

const portBase = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1024 || n > 65000) throw new InvalidArgumentError('must be a port number from 1024 to 65000');
  return n;
};

const positive = (v: string) => {
  const n = Number(v);
  if (!(n > 0)) throw new InvalidArgumentError('must be a positive number');
  return n;
};

const program = new Command('demo')
  .description('Run a one-host Flotilla deployment (two streams, two hops) with live rates.')
  .version(packageVersion(), '-V, --version')
  .option('--seconds <n>', 'run this long, print a summary and exit (default: until Ctrl-C)', positive)
  .option('--rate <n>', 'records per second the producer sends (default: as fast as flow control allows)', positive)
  .option('--map <file>', 'map file', join(ROOT, 'config', 'demo.yaml'))
  .option('--server <name>', 'server of the map to run', 'local')
  .option('--example <name>', 'run another example instead: search (scatter/gather with early answers and cancellation, examples/search/)')
  .option('--port-base <port>', "run on ports from this one up (the agent's, then each stream's, then the rest), with a run dir of its own, so two demos can run side by side", portBase)
  .addHelpText(
    'after',
    `
Examples:
  npm run demo                                   the shipped map (config/demo.yaml), until Ctrl-C
  npm run demo -- --seconds 10 --rate 20000      ten seconds at 20,000 clicks/s, then a summary
  npm run demo -- --port-base 9400               on ports 9400 and up (another demo has 7400)
  npm run demo -- --map my-demo.yaml             your own map (it needs streams clicks and pages)
  npm run demo -- --example search --seconds 10  the search example: requests cut into chunks, answered twice, some cancelled`,
  )
  .showHelpAfterError();

interface Options {
  seconds?: number;
  rate?: number;
  map: string;
  server: string;
  portBase?: number;
  example?: string;
}

/**
 * The map moved to ports from `base` up: every server's agent_port is `base`, each stream's
 * port follows in map order (servers' per-stream overrides dropped), any other *_port field
 * after; the run dir gets the base in its name. Written next to nothing else, in a temp dir.
 */
function movePorts(file: string, base: number): string {
  const doc = parseDocument(readFileSync(file, 'utf8'));
  const raw = doc.toJS() as { run_dir?: string; instance: string; servers: Record<string, unknown>[]; streams: Record<string, unknown>[] };
  let next = base + 1;
  raw.streams.forEach((s) => (s.port = next++));
  for (const server of raw.servers) {
    delete server.ports;
    for (const key of Object.keys(server).filter((k) => k.endsWith('_port')).sort()) server[key] = key === 'agent_port' ? base : next++;
  }
  raw.run_dir = `${raw.run_dir ?? join(tmpdir(), `flotilla-${raw.instance}`)}-${base}`;
  const out = join(mkdtempSync(join(tmpdir(), 'flotilla-demo-map-')), 'demo.yaml');
  doc.contents = doc.createNode(raw) as typeof doc.contents;
  writeFileSync(out, doc.toString());
  return out;
}

/** Throws BIND_FAILED naming the first of `ports` that something on this host already listens on. */
async function checkPortsFree(ports: { host: string; port: number; what: string }[]): Promise<void> {
  for (const p of ports) {
    await new Promise<void>((resolve, reject) => {
      const probe = createServer();
      probe.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new FlotillaError(
            'BIND_FAILED',
            `${p.what} cannot listen on ${p.host}:${p.port}: ${err.code === 'EADDRINUSE' ? 'the address is in use (another demo, or another program); pick other ports with --port-base, e.g. --port-base 9400' : err.message}`,
          ),
        ),
      );
      probe.listen(p.port, p.host, () => probe.close(() => resolve()));
    });
  }
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const pad = (s: string, n: number) => s.padStart(n);

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<Options>();
  if (o.example !== undefined) {
    if (o.example !== 'search') throw new FlotillaError('CONFIG_INVALID', `no example "${o.example}"; examples: search`);
    process.exit(await runSearch({ seconds: o.seconds }));
  }
  if (o.portBase !== undefined) o.map = movePorts(o.map, o.portBase);
  const map = loadMap(o.map);
  const server = serverOf(map, o.server);
  const streams = ['clicks', 'pages'];
  for (const name of streams) {
    if (!map.streams.some((s) => s.name === name)) throw new Error(`the demo needs a stream "${name}" in ${o.map}`);
  }
  const listeners = streams.map((s) => ({ host: server.host, port: portalPort(server, map.streams.find((x) => x.name === s)!), what: `the ${s} portal` }));
  if (server.agentPort !== undefined) listeners.unshift({ host: server.host, port: server.agentPort, what: 'the agent' });
  if (server.httpPort !== undefined) listeners.push({ host: server.httpHost, port: server.httpPort, what: "the agent's HTTP server" });
  await checkPortsFree(listeners);
  const runDir = map.runDir;
  mkdirSync(runDir, { recursive: true });
  const logFile = join(runDir, 'demo.log');
  const log = createWriteStream(logFile, { flags: 'w' });
  const children: ChildProcess[] = [];
  let stopping = false;

  const launch = (what: string, args: string[], stdout?: (s: string) => void): ChildProcess => {
    // Own process group: Ctrl-C reaches only the demo, which stops everything in order.
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child.stdout!.on('data', (d: Buffer) => (stdout ? stdout(d.toString()) : log.write(d)));
    child.stderr!.on('data', (d: Buffer) => {
      log.write(d);
      // Warnings and errors (pino level >= 40) also go to the screen.
      for (const line of d.toString().split('\n')) {
        const m = /"level":(\d+).*?"msg":"([^"]*)"/.exec(line);
        if (m && Number(m[1]) >= 40) process.stderr.write(`  [${what}] ${m[2]}\n`);
        else if (line && !line.startsWith('{')) process.stderr.write(`  [${what}] ${line}\n`);
      }
    });
    child.on('exit', (code, signal) => {
      if (!stopping && what !== 'producer') {
        process.stderr.write(`demo: ${what} exited (${signal ?? `code ${code}`}) unexpectedly; see ${logFile}\n`);
        void shutdown(1);
      }
    });
    children.push(child);
    return child;
  };

  const shutdown = async (code: number) => {
    stopping = true;
    await stopChildren(children);
    log.end();
    process.exit(code);
  };

  // Until the producer runs, a signal just stops everything; after, it stops the producer first.
  let onSignal = () => void shutdown(130);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => onSignal());
  // Whatever happens to the demo, its processes do not outlive it.
  process.once('exit', () => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')));

  const shown = relative(process.cwd(), o.map).startsWith('..') ? o.map : relative(process.cwd(), o.map) || o.map;
  console.log(`flotilla demo: map ${shown} (instance ${map.instance}, epoch ${map.epoch}), server ${server.name}`);
  console.log(`  listening: ${listeners.map((l) => `${l.what.replace(/^the /, '')} ${l.host}:${l.port}`).join(', ')}`);
  // One host, loopback only: no keys, and the banner says so (docs/security.md for a deployment).
  console.log(`  transport: ${describeTransport(map)}${map.security.curve ? '' : ' (one host; a deployment across hosts needs keys: docs/security.md)'}`);
  if (server.httpPort !== undefined) {
    const url = `http://${server.httpHost}:${server.httpPort}/`;
    console.log(`  status page: ${url}   metrics: ${url}metrics   health: ${url}healthz`);
  }
  console.log(`  run dir ${runDir}; logs in ${logFile}`);

  launch('agent', [join(DIST, 'agent', 'main.js'), '--map', o.map, '--server', server.name]);
  for (const s of streams) launch(`${s} portal`, [join(DIST, 'portal', 'main.js'), '--map', o.map, '--server', server.name, '--stream', s]);
  const components = { clicks: 'click-counter.js', pages: 'page-counter.js' } as const;
  for (const s of streams) {
    const n = slotCount(server, map.streams.find((x) => x.name === s)!);
    for (let slot = 0; slot < n; slot++) {
      launch(`${s}/${slot}`, [join(DIST, 'examples', components[s as keyof typeof components]), o.map, server.name, String(slot), runDir]);
    }
  }
  await waitReady(runDir, streams, (s) => slotCount(server, map.streams.find((x) => x.name === s)!));
  console.log(`  ${children.length} processes up; producer sending clicks${o.rate ? ` at ${fmt(o.rate)}/s` : ''}; ${o.seconds ? `running ${o.seconds} s` : 'Ctrl-C stops'}`);
  console.log(`  in another terminal: node dist/agent/portalctl.js status --map ${shown} (or pause --wait, resume)\n`);

  let producerReport = '';
  const producerArgs = [join(DIST, 'examples', 'producer.js'), '--map', o.map];
  if (o.rate) producerArgs.push('--rate', String(o.rate));
  if (o.seconds) producerArgs.push('--seconds', String(o.seconds));
  const started = Date.now();
  const producer = launch('producer', producerArgs, (s) => (producerReport += s));
  const producerDone = new Promise<void>((resolve) => producer.once('exit', () => resolve()));
  onSignal = () => {
    process.stdout.write('\nstopping: the producer flushes what it sent...\n');
    producer.kill('SIGTERM');
  };

  console.log(`${pad('time', 6)} ${pad('clicks in/s', 12)} ${pad('out/s', 10)} ${pad('queued', 8)}   ${pad('pages in/s', 11)} ${pad('out/s', 10)} ${pad('queued', 8)}  errors`);
  const ticker = setInterval(() => {
    void Promise.all(streams.map((s) => portalStats(runDir, s, 800).catch(() => null))).then(([c, p]) => {
      if (!c || !p || stopping) return;
      const errors = Object.values(c.errors).concat(Object.values(p.errors)).reduce((a, b) => a + b, 0);
      const t = `${Math.round((Date.now() - started) / 1000)}s`;
      console.log(
        `${pad(t, 6)} ${pad(fmt(c.rates.inPerSec), 12)} ${pad(fmt(c.rates.outPerSec), 10)} ${pad(fmt(c.queuedRecords), 8)}   ` +
          `${pad(fmt(p.rates.inPerSec), 11)} ${pad(fmt(p.rates.outPerSec), 10)} ${pad(fmt(p.queuedRecords), 8)}  ${errors}`,
      );
    });
  }, 1000);

  await producerDone;
  clearInterval(ticker);
  const elapsed = (Date.now() - started) / 1000;
  const final = await Promise.all(streams.map((s) => portalStats(runDir, s, 2000).catch(() => null)));
  const report = JSON.parse(producerReport.trim().split('\n').pop() || '{}') as { sent?: number; acked?: number; refused?: number };
  const [c, p] = final as [PortalStats | null, PortalStats | null];
  const ok = report.sent !== undefined && report.acked === report.sent && report.refused === 0 && p?.recordsOut === report.sent;
  console.log(
    `\nsummary: ${elapsed.toFixed(1)} s, ${fmt(report.sent ?? 0)} clicks sent, ${fmt(report.acked ?? 0)} acknowledged ` +
      `(${fmt((report.acked ?? 0) / elapsed)} records/s end to end); clicks processed ${fmt(c?.recordsOut ?? 0)}, ` +
      `pages processed ${fmt(p?.recordsOut ?? 0)}; ${ok ? 'nothing lost' : 'MISMATCH: see ' + logFile}`,
  );
  await shutdown(ok ? 0 : 1);
}

/** Waits (up to 20 s) until each portal answers and all its slots have registered. */
async function waitReady(runDir: string, streams: string[], slots: (s: string) => number): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (const s of streams) {
    for (;;) {
      const st = await portalStats(runDir, s, 500).catch(() => null);
      if (st && st.slots.filter((x) => x.connected).length === slots(s)) break;
      if (Date.now() > deadline) throw new Error(`the ${s} portal or its components did not come up within 20 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

main().catch((err: unknown) => die(err));
