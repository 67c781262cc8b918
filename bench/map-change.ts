/**
 * A map change on a fleet with the map in etcd: three servers (agents, portals, two sink slots
 * each), 250 ms heartbeats, a real single-member etcd, under load.
 *
 *   t0: write an edit moving a quarter of the buckets (weights 1,1,1 -> 2,2,1) as `map apply`
 *       does (planApply + commitApply); t1: every agent's switch done, every portal at the new
 *       epoch, no handover left. map_change_ms = t1 - t0 (median of RUNS, alternating edits).
 *   unmoved_throughput_ratio: records/s acknowledged of keys whose bucket does not move, during
 *       [t0, t1] against the same length of time just before t0. Two senders, each in a process
 *       of its own (map-change-load.ts), offer RATE records/s together, paced, one the keys of
 *       unmoved buckets, the other the keys of moved ones.
 */
import { join } from 'node:path';
import { stringify } from 'yaml';
import { agentStatus, localAgent } from '../src/agent/client';
import { commitApply, planApply } from '../src/map/apply';
import { bucketOf } from '../src/map/bucket';
import { parseMap } from '../src/map/load';
import { etcdAt } from '../src/map/store-etcd';
import { portalRequest, portalStats } from '../src/portal/client';
import { startEtcd } from '../test/support/etcd';
import { freePorts } from '../test/support/ports';
import { type Child, ProcessGroup } from './procs';

const DIST = join(__dirname, '..');
const SERVERS = ['alpha', 'beta', 'gamma'];
const SLOTS = 2;
const RUNS = 5;
const HEARTBEAT_MS = 250;
const BUCKETS = 1024;
const PREFIX = 'flotilla/bench';
/** Records per second offered, all keys together (as the pause-resume bench). */
const RATE = 20_000;
/** Pause between one change's end and the next measurement. */
const SETTLE_MS = 1500;
const WEIGHTS = [
  [1, 1, 1],
  [2, 2, 1],
];

export interface MapChangeResult {
  /** Median of the runs, ms. */
  mapChangeMs: number;
  runsMs: number[];
  /** Median of the runs. */
  unmovedThroughputRatio: number;
  ratios: number[];
  movedBuckets: number;
  heartbeatMs: number;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000, everyMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`map-change bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** With FLOTILLA_BENCH_TRACE set: each change's acknowledgements per 50 ms (unmoved/moved), on stderr. */
async function trace(unmoved: Child, moved: Child, t0: number, ms: number): Promise<void> {
  const at: number[] = [];
  for (let t = -400; t <= ms + 400; t += 50) at.push(t0 + t);
  const [u, m] = await Promise.all([unmoved.request<number[]>('ackedAt', { at }), moved.request<number[]>('ackedAt', { at })]);
  const bins = at.slice(1).map((t, i) => `${Math.round(t - t0 - 50)}:${u[i + 1]! - u[i]!}/${m[i + 1]! - m[i]!}`);
  process.stderr.write(`change of ${Math.round(ms)} ms, acknowledged per 50 ms from t0 (unmoved/moved):\n  ${bins.join(' ')}\n`);
  const ps = await unmoved.request<Record<string, string>>('perServer', { from: t0 - 400, to: t0 + ms + 400 });
  for (const [server, line] of Object.entries(ps)) process.stderr.write(`  unmoved keys to ${server}, acked/sent: ${line}\n`);
}

export async function runMapChange(dir: string): Promise<MapChangeResult> {
  const etcd = await startEtcd({ members: 1 });
  const url = etcd.url(PREFIX);
  const { client, keys } = etcdAt({ endpoints: etcd.endpoints, prefix: PREFIX });
  const ports = await freePorts(SERVERS.length);
  const runDir = join(dir, 'mc-run');
  const textOf = (epoch: number, w: number[]) =>
    stringify({
      instance: 'bench',
      epoch,
      heartbeat_ms: HEARTBEAT_MS,
      run_dir: runDir,
      security: { plain_tcp: true }, // every server on loopback
      servers: SERVERS.map((name, i) => ({ name, host: '127.0.0.1', weight: w[i], ports: { bench: ports[i] } })),
      streams: [{ name: 'bench', key: 'key', port: ports[0], buckets: BUCKETS, slots: SLOTS, schema: { type: 'record', name: 'R', fields: [{ name: 'key', type: 'string' }, { name: 'n', type: 'long' }] } }],
    });
  const write = async (epoch: number, w: number[]) => commitApply(client, keys, await planApply(client, keys, url, textOf(epoch, w), join(dir, 'map-change.yaml')));
  const serverRunDir = (s: string) => join(runDir, s);
  const group = new ProcessGroup();
  const now = () => performance.timeOrigin + performance.now();
  try {
    await write(1, WEIGHTS[0]!);
    for (const s of SERVERS) {
      const common = ['--map', url, '--server', s, '--run-dir', serverRunDir(s)];
      group.start(`agent ${s}`, join(DIST, 'agent', 'main.js'), common);
      group.start(`portal ${s}`, join(DIST, 'portal', 'main.js'), [...common, '--stream', 'bench']);
      for (let slot = 0; slot < SLOTS; slot++) group.start(`sink ${s}/${slot}`, join(DIST, 'bench', 'sink.js'), [url, s, 'bench', String(slot), serverRunDir(s)]);
    }
    for (const s of SERVERS) await until(`the slots of ${s}`, async () => (await portalStats(serverRunDir(s), 'bench', 500)).slots.every((x) => x.connected));
    // Keys of buckets no edit moves, and the others.
    const [m0, m1] = WEIGHTS.map((w, i) => parseMap(textOf(i + 1, w)));
    const moves = (b: number) => m0!.streams[0]!.owner[b] !== m1!.streams[0]!.owner[b];
    const all = Array.from({ length: 20_000 }, (_, i) => `k${i}`);
    const unmovedKeys = all.filter((k) => !moves(bucketOf(k, BUCKETS)));
    const movedKeys = all.filter((k) => moves(bucketOf(k, BUCKETS)));
    // Each in a process of its own, as clients of a fleet are: the sender of moved keys loads the
    // new map when it is redirected, and that work is not the unmoved keys' to wait for.
    const rateOf = (keyList: string[]) => (RATE * keyList.length) / all.length;
    const unmoved = group.start('unmoved', join(DIST, 'bench', 'map-change-load.js'), [url], { ipc: true });
    const moved = group.start('moved', join(DIST, 'bench', 'map-change-load.js'), [url], { ipc: true });
    await Promise.all([unmoved.ready, moved.ready]);
    await unmoved.request('start', { keys: unmovedKeys, rate: rateOf(unmovedKeys) });
    await moved.request('start', { keys: movedKeys, rate: rateOf(movedKeys) });
    await until('records flowing', async () => (await unmoved.request<number>('acked')) > RATE / 2);
    const agents = SERVERS.map((s) => localAgent(serverRunDir(s)));
    const runsMs: number[] = [];
    const ratios: number[] = [];
    let epoch = 1;
    for (let i = 0; i < RUNS; i++) {
      epoch++;
      const w = WEIGHTS[(epoch - 1) % 2]!;
      // Let the last change's moved records settle; the rate before is taken over a window as
      // long as the last change (at least 1 s) that ends where the change begins.
      const windowMs = Math.max(1000, runsMs.at(-1) ?? 1000);
      await new Promise((r) => setTimeout(r, SETTLE_MS + windowMs));
      const t0 = now();
      await write(epoch, w);
      await until(`epoch ${epoch} everywhere, nothing held`, async () => {
        const st = await Promise.all(agents.map((a) => agentStatus(a)));
        if (!st.every((x) => x.epochSwitch?.epoch === epoch && x.epochSwitch.done && x.handovers.length === 0)) return false;
        const epochs = await Promise.all(SERVERS.map(async (s) => (await portalRequest(serverRunDir(s), 'bench', { cmd: 'beacon' }, 1000)).epoch));
        return epochs.every((e) => e === epoch);
      });
      const t1 = now();
      const ms = t1 - t0;
      runsMs.push(ms);
      const [a, b, c] = await unmoved.request<[number, number, number]>('ackedAt', { at: [t0 - windowMs, t0, t1] });
      ratios.push((c - b) / ms / ((b - a) / windowMs));
      if (process.env.FLOTILLA_BENCH_TRACE) await trace(unmoved, moved, t0, ms);
    }
    await Promise.all([unmoved.request('stop'), moved.request('stop')]);
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    let movedBuckets = 0;
    for (let b = 0; b < BUCKETS; b++) if (moves(b)) movedBuckets++;
    return {
      mapChangeMs: Math.round(median(runsMs) * 10) / 10,
      runsMs: runsMs.map((x) => Math.round(x)),
      unmovedThroughputRatio: Math.round(median(ratios) * 100) / 100,
      ratios: ratios.map((x) => Math.round(x * 100) / 100),
      movedBuckets,
      heartbeatMs: HEARTBEAT_MS,
    };
  } finally {
    await group.stopAll();
    client.close();
    await etcd.stop();
  }
}
