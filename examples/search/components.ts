/**
 * The search example's components (examples/search/map.yaml), one process per slot:
 *
 *   requests --splitter--> chunks (keyed by chunk) --worker--> results (keyed by request)
 *     --aggregator--> answers (keyed by client): early (from the cache, or the first partial), then complete
 *
 * Every record derived from a request carries the request's root (ctx.emit with `from`), so a
 * client's cancel reaches them all: the portals drop what waits, and a worker checks
 * `ctx.cancelled` between the steps of its work and stops. Tuning (chunk_size, cache, work_ms)
 * starts from the command line and is changed while running with the management bus:
 * `portalctl configure requests --set chunk_size=3`, `portalctl configure results --set cache=false`
 * (onConfigure below; a bad value is rejected with the reason, which portalctl shows).
 *
 *   node components.js ROLE MAP SERVER SLOT RUN_DIR [--log FILE] [--chunk-size N] [--cache on|off] [--work-ms N]
 */
import { appendFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type ComponentContext, runComponent } from '../../src/component/component';
import type { Delivered } from '../../src/protocol/envelope';
import { rootOf } from '../../src/protocol/root';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { log: { type: 'string' }, 'chunk-size': { type: 'string' }, cache: { type: 'string' }, 'work-ms': { type: 'string' } },
});
const [role, map, server, slotText, runDir] = positionals;

/** The tuning in force; onConfigure changes it while running. */
export const tuning = {
  chunkSize: Number(values['chunk-size'] ?? 1),
  cache: (values.cache ?? 'on') === 'on',
  workMs: Number(values['work-ms'] ?? 30),
};

interface Request {
  request: string;
  client: string;
  query: string;
  size: number;
}
interface Chunk {
  chunk: string;
  request: string;
  client: string;
  query: string;
  index: number;
  of: number;
}
interface Partial {
  request: string;
  client: string;
  query: string;
  index: number;
  of: number;
  hits: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** requests: one chunk record per chunk_size items of the request. */
function split(records: Delivered<Request>[], ctx: ComponentContext): void {
  for (const r of records) {
    const { request, client, query, size } = r.value;
    const of = Math.max(1, Math.ceil(size / Math.max(1, tuning.chunkSize)));
    for (let index = 0; index < of; index++) ctx.emit('chunks', { chunk: `${request}/${index}`, request, client, query, index, of }, r);
  }
}

/**
 * chunks: the work, in three steps with a look at ctx.cancelled between them; a chunk whose
 * request was cancelled is dropped mid-way. Each chunk done is logged (root, chunk, when), the
 * check and the time taken in one synchronous step, so "done after the cancel" is measurable.
 */
async function work(records: Delivered<Chunk>[], ctx: ComponentContext): Promise<void> {
  for (const r of records) {
    let stopped = false;
    for (let step = 0; step < 3 && !stopped; step++) {
      await sleep(tuning.workMs / 3);
      stopped = ctx.cancelled(r);
    }
    if (stopped || ctx.cancelled(r)) {
      if (values.log) appendFileSync(values.log, `stopped\t${rootOf(r)}\t${r.value.chunk}\t${Date.now()}\n`);
      continue;
    }
    const c = r.value;
    // A stand-in for searching chunk `index`: a number that depends on the query and the chunk.
    let hits = 0;
    for (let i = 0; i < c.query.length; i++) hits = (hits * 31 + c.query.charCodeAt(i) + c.index) % 97;
    if (values.log) appendFileSync(values.log, `done\t${rootOf(r)}\t${c.chunk}\t${Date.now()}\n`);
    ctx.emit('results', { request: c.request, client: c.client, query: c.query, index: c.index, of: c.of, hits }, r);
  }
}

/** results: per request, the partials so far; the first gives the early answer, the last the complete one. */
const open = new Map<string, { got: Set<number>; hits: number }>();
const cache = new Map<string, number>();
function aggregate(records: Delivered<Partial>[], ctx: ComponentContext): void {
  for (const r of records) {
    const p = r.value;
    let o = open.get(p.request);
    if (!o) {
      o = { got: new Set(), hits: 0 };
      open.set(p.request, o);
      const cached = tuning.cache ? cache.get(p.query) : undefined;
      ctx.emit('answers', { client: p.client, request: p.request, kind: 'early', hits: cached ?? p.hits, cached: cached !== undefined, chunks: 1 }, r);
    }
    if (o.got.has(p.index)) continue; // a partial delivered again after a restart
    o.got.add(p.index);
    o.hits += p.hits;
    if (o.got.size === p.of) {
      open.delete(p.request);
      if (tuning.cache) cache.set(p.query, o.hits);
      ctx.emit('answers', { client: p.client, request: p.request, kind: 'complete', hits: o.hits, cached: false, chunks: p.of }, r);
    }
  }
}

/** Takes a configuration's known keys (all checked first), or says why not. */
function configure(config: Record<string, unknown>): string | undefined {
  const { chunk_size: size, cache: on, work_ms: ms } = config;
  if (size !== undefined && !(Number.isInteger(size) && (size as number) >= 1 && (size as number) <= 1000)) return `chunk_size must be a whole number from 1 to 1000, not ${JSON.stringify(size)}`;
  if (on !== undefined && typeof on !== 'boolean') return `cache must be true or false, not ${JSON.stringify(on)}`;
  if (ms !== undefined && !(typeof ms === 'number' && ms >= 0 && ms <= 10_000)) return `work_ms must be a number of ms from 0 to 10000, not ${JSON.stringify(ms)}`;
  if (size !== undefined) tuning.chunkSize = size as number;
  if (on !== undefined) tuning.cache = on;
  if (ms !== undefined) tuning.workMs = ms as number;
  return undefined;
}

const handlers = { splitter: ['requests', split], worker: ['chunks', work], aggregator: ['results', aggregate] } as const;
const handler = handlers[role as keyof typeof handlers];
if (!handler || !map || !server || slotText === undefined) {
  process.stderr.write('usage: components.js splitter|worker|aggregator MAP SERVER SLOT [RUN_DIR] [--log FILE] [--chunk-size N] [--cache on|off] [--work-ms N]\n');
  process.exit(2);
}
runComponent({
  map,
  server,
  stream: handler[0],
  slot: Number(slotText),
  runDir,
  onConfigure: (config) => configure(config),
  onBatch: handler[1] as unknown as (records: Delivered<Record<string, unknown>>[], ctx: ComponentContext) => void | Promise<void>,
});
