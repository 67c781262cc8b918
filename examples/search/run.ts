/**
 * `npm run demo -- --example search --seconds N`: scatter/gather search on one host (binglide's
 * shape), with live output and a summary line.
 *
 *   client (this process) --requests--> splitter --chunks--> 4 workers --results--> 2 aggregators
 *   client <--answers (early, then complete)-- aggregators
 *   client --Sender.cancel(root)--> agent --> every portal (drop) --> every component (ctx.cancelled)
 *
 * The client sends a request every 100 ms and cancels every fourth once its early answer has
 * come. A third of the way in it changes the chunk size (`portalctl configure requests --set
 * chunk_size=3`), two thirds in it turns the aggregators' cache off (`configure results --set
 * cache=false`): the management bus, while records flow. At the end it checks that every request
 * not cancelled was answered twice, and, from the workers' logs, that no chunk of a cancelled
 * request was done after its cancel returned.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { parseDocument } from 'yaml';
import { stopChildren } from '../../daemon/children';
import { Component } from '../../src/component/component';
import { loadMap } from '../../src/map/load';
import { portalStats } from '../../src/portal/client';
import { Sender } from '../../src/sender/sender';

const ROOT = join(__dirname, '..', '..', '..');
const DIST = join(ROOT, 'dist');
const STREAMS = ['requests', 'chunks', 'results', 'answers'];
const QUERIES = ['ferry', 'harbour', 'lighthouse', 'tide', 'anchor'];
const CANCEL_EVERY = 4;

/** A port the OS says is free now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** The example's map on free ports, with a run dir of its own, in `dir`. */
async function writeMap(dir: string): Promise<string> {
  const doc = parseDocument(readFileSync(join(ROOT, 'examples', 'search', 'map.yaml'), 'utf8'));
  const raw = doc.toJS() as { run_dir: string; servers: Record<string, unknown>[]; streams: Record<string, unknown>[] };
  raw.run_dir = join(dir, 'run');
  raw.servers[0]!.agent_port = await freePort();
  for (const s of raw.streams) s.port = await freePort();
  doc.contents = doc.createNode(raw) as typeof doc.contents;
  const file = join(dir, 'search.yaml');
  writeFileSync(file, doc.toString());
  return file;
}

interface RequestState {
  root: string;
  /** Date.now() when it was sent, and the chunks its complete answer was made of. */
  sentAt: number;
  chunks: number;
  early: boolean;
  complete: boolean;
  /** Date.now() when the cancel returned (every agent has it, every live component confirmed). */
  cancelledAt: number | null;
}

/** Runs the example for `seconds` (default until Ctrl-C); resolves with the exit status. */
export async function runSearch(o: { seconds?: number }): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-search-'));
  const mapFile = await writeMap(dir);
  const map = loadMap(mapFile);
  const server = map.servers[0]!.name;
  mkdirSync(map.runDir, { recursive: true });
  const logFile = join(dir, 'search.log');
  const children: ChildProcess[] = [];
  const launch = (args: string[]) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d: Buffer) => appendFileSync(logFile, d));
    child.stderr!.on('data', (d: Buffer) => appendFileSync(logFile, d));
    children.push(child);
  };
  const stop = () => stopChildren(children);
  process.once('exit', () => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')));

  console.log(`flotilla search example: map ${mapFile}; logs in ${logFile}`);
  launch([join(DIST, 'agent', 'main.js'), '--map', mapFile, '--server', server]);
  for (const s of STREAMS) launch([join(DIST, 'portal', 'main.js'), '--map', mapFile, '--server', server, '--stream', s]);
  const script = join(DIST, 'examples', 'search', 'components.js');
  const workerLogs = [0, 1, 2, 3].map((slot) => join(dir, `worker-${slot}.log`));
  launch([script, 'splitter', mapFile, server, '0', map.runDir]);
  for (let slot = 0; slot < 4; slot++) launch([script, 'worker', mapFile, server, String(slot), map.runDir, '--log', workerLogs[slot]!]);
  for (let slot = 0; slot < 2; slot++) launch([script, 'aggregator', mapFile, server, String(slot), map.runDir]);

  const requests = new Map<string, RequestState>();
  const sender = new Sender({ map: mapFile, lingerMs: 1 });
  const cancels: Promise<void>[] = [];
  const cancel = (id: string, r: RequestState) => {
    cancels.push(
      sender.cancel(r.root, { stream: 'requests' }).then(
        () => void (r.cancelledAt = Date.now()),
        (err: unknown) => console.error(`cancel of ${id} failed: ${(err as Error).message}`),
      ),
    );
  };
  const client = new Component<{ request: string; kind: string; hits: number; cached: boolean; chunks: number }>({
    map: mapFile,
    server,
    stream: 'answers',
    slot: 0,
    runDir: map.runDir,
    log: pino({ name: 'search-client' }, pino.destination({ dest: logFile, append: true, sync: true })),
    onBatch: (records) => {
      for (const a of records) {
        const r = requests.get(a.value.request);
        if (!r) continue;
        if (a.value.kind === 'early' && !r.early) {
          r.early = true;
          // Every fourth request is cancelled once its early answer is in: the rest is not wanted.
          if (Number(a.value.request.slice(1)) % CANCEL_EVERY === 0) cancel(a.value.request, r);
        } else if (a.value.kind === 'complete') {
          r.complete = true;
          r.chunks = a.value.chunks;
        }
      }
    },
  });
  client.start();
  await waitReady(map.runDir, { requests: 1, chunks: 4, results: 2, answers: 1 });

  let sent = 0;
  const started = Date.now();
  const sending = setInterval(() => {
    const id = `r${sent}`;
    sender.send('requests', { request: id, client: 'c1', query: QUERIES[sent % QUERIES.length]!, size: 6 + (sent % 6) });
    requests.set(id, { root: sender.lastId, sentAt: Date.now(), chunks: 0, early: false, complete: false, cancelledAt: null });
    sent++;
  }, 100);
  const count = () => {
    const all = [...requests.values()];
    return { early: all.filter((r) => r.early).length, complete: all.filter((r) => r.complete && r.cancelledAt === null).length, cancelled: all.filter((r) => r.cancelledAt !== null).length };
  };
  // Chunks dropped: by the chunks portal (waiting), by the workers' SDK (delivered, not begun), by the workers (stopped mid-way).
  const dropped = async () => {
    const st = await portalStats(map.runDir, 'chunks', 2000).catch(() => null);
    const stopped = workerLines(workerLogs).filter((l) => l[0] === 'stopped').length;
    return (st?.cancelled?.dropped ?? 0) + (st?.cancelled?.skipped ?? 0) + stopped;
  };
  console.log(`${'time'.padStart(5)} ${'sent'.padStart(6)} ${'early'.padStart(6)} ${'complete'.padStart(9)} ${'cancelled'.padStart(10)} ${'chunks dropped'.padStart(15)}`);
  const ticker = setInterval(() => {
    void dropped().then((n) => {
      const c = count();
      console.log(`${`${Math.round((Date.now() - started) / 1000)}s`.padStart(5)} ${String(sent).padStart(6)} ${String(c.early).padStart(6)} ${String(c.complete).padStart(9)} ${String(c.cancelled).padStart(10)} ${String(n).padStart(15)}`);
    });
  }, 1000);

  // The tuning, changed while it runs (the management bus): chunk size, then the cache.
  const seconds = o.seconds ?? 30;
  let resized = 0;
  const configured: Promise<boolean>[] = [];
  const configure = (stream: string, set: string, then?: () => void) =>
    configured.push(
      portalctl(['configure', stream, '--set', set, '--map', mapFile]).then((r) => {
        then?.();
        console.log(`  portalctl configure ${stream} --set ${set}: ${r.ok ? 'taken by every component' : `FAILED: ${r.out.trim()}`}`);
        return r.ok;
      }),
    );
  const tunings = [setTimeout(() => configure('requests', 'chunk_size=3', () => (resized = Date.now())), (seconds * 1000) / 3), setTimeout(() => configure('results', 'cache=false'), (seconds * 2000) / 3)];
  await new Promise<void>((resolve) => {
    if (o.seconds) setTimeout(resolve, o.seconds * 1000);
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => resolve());
  });
  clearInterval(sending);
  tunings.forEach(clearTimeout);
  const tuned = (await Promise.all(configured)).filter(Boolean).length;
  // Every request not cancelled is answered twice: wait for the last answers (bounded).
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline && [...requests.values()].some((r) => !r.complete && r.cancelledAt === null)) await sleep(100);
  await Promise.all(cancels);
  clearInterval(ticker);

  const c = count();
  const uncancelled = [...requests.values()].filter((r) => r.cancelledAt === null);
  const twice = uncancelled.filter((r) => r.early && r.complete).length;
  const late = lateChunks(workerLogs, requests);
  const droppedChunks = await dropped();
  const ok = twice === uncancelled.length && late.length === 0 && tuned === configured.length;
  const avg = (list: RequestState[]) => (list.length === 0 ? 0 : list.reduce((n, r) => n + r.chunks, 0) / list.length).toFixed(1);
  const done = uncancelled.filter((r) => r.complete);
  const before = done.filter((r) => resized === 0 || r.sentAt < resized - 200);
  const after = done.filter((r) => resized > 0 && r.sentAt > resized);
  console.log(
    `\nsummary: ${sent} requests sent, ${c.early} answered early, ${c.complete} answered complete (${twice} of ${uncancelled.length} not cancelled answered twice), ` +
      `${c.cancelled} cancelled, ${droppedChunks} chunks dropped by cancellation, ${late.length} cancelled chunks done after their cancel returned; ` +
      `${tuned} of ${configured.length} configurations taken (chunks per request ${avg(before)} before chunk_size=3, ${avg(after)} after); ${ok ? 'ok' : 'MISMATCH: see ' + logFile}`,
  );
  if (late.length > 0) console.log(`  done after the cancel: ${late.slice(0, 5).join(', ')}`);
  await client.stop();
  sender.close();
  await stop();
  return ok ? 0 : 1;
}

function workerLines(files: string[]): string[][] {
  return files.flatMap((f) => (existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => l.split('\t')) : []));
}

/** Chunks of cancelled requests a worker finished after the cancel returned. */
function lateChunks(files: string[], requests: Map<string, RequestState>): string[] {
  const cancelledAt = new Map<string, number>();
  for (const r of requests.values()) if (r.cancelledAt !== null) cancelledAt.set(r.root, r.cancelledAt);
  return workerLines(files)
    .filter(([what, root, , at]) => what === 'done' && cancelledAt.has(root!) && Number(at) > cancelledAt.get(root!)!)
    .map(([, , chunk, at]) => `${chunk} at ${at}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits (up to 60 s: a loaded machine starts a dozen processes slowly) until each portal answers and all its slots have registered. */
async function waitReady(runDir: string, slots: Record<string, number>): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (const [s, n] of Object.entries(slots)) {
    for (;;) {
      const st = await portalStats(runDir, s, 500).catch(() => null);
      if (st && st.slots.filter((x) => x.connected).length === n) break;
      if (Date.now() > deadline) throw new Error(`the ${s} portal or its components did not come up within 60 s`);
      await sleep(50);
    }
  }
}

/** Runs portalctl (this build's) and resolves with whether it exited 0 and what it said. */
function portalctl(args: string[]): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [join(DIST, 'agent', 'portalctl.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    p.on('close', (status) => resolve({ ok: status === 0, out }));
  });
}
