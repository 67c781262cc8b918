/**
 * A map change on a fleet with the map in etcd: three servers (agents, portals, two sink slots
 * each), 250 ms heartbeats, a real single-member etcd, under load.
 *
 *   t0: write an edit moving a quarter of the buckets (weights 1,1,1 -> 2,2,1) as `map apply`
 *       does (planApply + commitApply); t1: every agent's switch done, every portal at the new
 *       epoch, no handover left. map_change_ms = t1 - t0 (median of RUNS, alternating edits).
 *   unmoved_throughput_ratio: records/s acknowledged of keys whose bucket does not move, during
 *       [t0, t1] against the same length of time just before t0. Two senders offer RATE records/s
 *       together, paced, one the keys of unmoved buckets, the other the keys of moved ones.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { stopChildren } from '../daemon/children';
import { agentStatus, localAgent } from '../src/agent/client';
import { commitApply, planApply } from '../src/map/apply';
import { bucketOf } from '../src/map/bucket';
import { parseMap } from '../src/map/load';
import { openMap } from '../src/map/open';
import { etcdAt } from '../src/map/store-etcd';
import { portalRequest, portalStats } from '../src/portal/client';
import { Sender } from '../src/sender/sender';
import { startEtcd } from '../test/support/etcd';
import { freePorts } from '../test/support/ports';

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
  const children: ChildProcess[] = [];
  const launch = (args: string[]) => children.push(spawn(process.execPath, args, { stdio: 'ignore' }));
  const serverRunDir = (s: string) => join(runDir, s);
  const senders: Sender[] = [];
  let sending = true;
  const loops: Promise<void>[] = [];
  try {
    await write(1, WEIGHTS[0]!);
    for (const s of SERVERS) {
      const common = ['--map', url, '--server', s, '--run-dir', serverRunDir(s)];
      launch([join(DIST, 'agent', 'main.js'), ...common]);
      launch([join(DIST, 'portal', 'main.js'), ...common, '--stream', 'bench']);
      for (let slot = 0; slot < SLOTS; slot++) launch([join(DIST, 'bench', 'sink.js'), url, s, 'bench', String(slot), serverRunDir(s)]);
    }
    for (const s of SERVERS) await until(`the slots of ${s}`, async () => (await portalStats(serverRunDir(s), 'bench', 500)).slots.every((x) => x.connected));
    // Keys of buckets no edit moves, and the others.
    const [m0, m1] = WEIGHTS.map((w, i) => parseMap(textOf(i + 1, w)));
    const moves = (b: number) => m0!.streams[0]!.owner[b] !== m1!.streams[0]!.owner[b];
    const all = Array.from({ length: 20_000 }, (_, i) => `k${i}`);
    const unmovedKeys = all.filter((k) => !moves(bucketOf(k, BUCKETS)));
    const movedKeys = all.filter((k) => moves(bucketOf(k, BUCKETS)));
    const unmoved = new Sender({ map: await openMap(url), log: undefined });
    const moved = new Sender({ map: await openMap(url), log: undefined });
    senders.push(unmoved, moved);
    // Paced, as a steady flow is: records/s of each sender in proportion to its keys.
    const loop = (sender: Sender, keyList: string[]) =>
      (async () => {
        const rate = (RATE * keyList.length) / all.length;
        const started = Date.now();
        let n = 0;
        while (sending) {
          const due = Math.floor(((Date.now() - started) / 1000) * rate);
          for (; n < due; n++) sender.send('bench', { key: keyList[n % keyList.length]!, n });
          await sender.writable();
          await new Promise((r) => setTimeout(r, 2));
        }
      })();
    loops.push(loop(unmoved, unmovedKeys), loop(moved, movedKeys));
    await until('records flowing', async () => unmoved.stats.acked > RATE / 2);
    const agents = SERVERS.map((s) => localAgent(serverRunDir(s)));
    const runsMs: number[] = [];
    const ratios: number[] = [];
    let epoch = 1;
    for (let i = 0; i < RUNS; i++) {
      epoch++;
      const w = WEIGHTS[(epoch - 1) % 2]!;
      // Let the last change's moved records settle, then the rate before: a window as long as
      // the last change (at least 1 s).
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      const windowMs = Math.max(1000, runsMs.at(-1) ?? 1000);
      const a0 = unmoved.stats.acked;
      await new Promise((r) => setTimeout(r, windowMs));
      const before = (unmoved.stats.acked - a0) / windowMs;
      const t0 = performance.now();
      const b0 = unmoved.stats.acked;
      await write(epoch, w);
      await until(`epoch ${epoch} everywhere, nothing held`, async () => {
        const st = await Promise.all(agents.map((a) => agentStatus(a)));
        if (!st.every((x) => x.epochSwitch?.epoch === epoch && x.epochSwitch.done && x.handovers.length === 0)) return false;
        const epochs = await Promise.all(SERVERS.map(async (s) => (await portalRequest(serverRunDir(s), 'bench', { cmd: 'beacon' }, 1000)).epoch));
        return epochs.every((e) => e === epoch);
      });
      const ms = performance.now() - t0;
      runsMs.push(ms);
      ratios.push((unmoved.stats.acked - b0) / ms / before);
    }
    sending = false;
    await Promise.all(loops);
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
    sending = false;
    await Promise.all(loops).catch(() => undefined);
    for (const s of senders) {
      s.close();
      await s.keeper.store?.close();
    }
    await stopChildren(children, 3000);
    client.close();
    await etcd.stop();
  }
}
