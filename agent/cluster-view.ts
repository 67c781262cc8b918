/**
 * `portalctl status --cluster` with an etcd map: every server from the store, without asking any
 * agent. Each agent keeps its record under its lease (src/agent/presence-etcd.ts): a server without
 * one is not alive (its agent is down or cut off from etcd for longer than the lease). Shown per
 * server: alive or not, the epoch it runs, whether its switch waits and for whom, and its
 * handovers in progress with whom each waits for.
 *
 * Exit status (as `status`'s codes): 0 every server of the map is alive and nothing waits; 1 etcd
 * cannot be read; 3 a server has no lease; 5 a switch or a handover waits.
 */
import type { Etcd3 } from 'etcd3';
import type { EtcdKeys } from '../src/map/etcd-keys';
import { parseMap } from '../src/map/load';
import { shortDigest } from '../src/map/digest';
import { parseEtcdSource } from '../src/map/store';
import { etcdAt, readMapRecord } from '../src/map/store-etcd';
import { readServerRecords, type ServerRecord } from '../src/agent/presence-etcd';
import { HEALTH_EXIT } from '../src/agent/problems';

/** One server as the store shows it. */
export interface ClusterServer {
  server: string;
  /** Holds a lease (its record is there). */
  alive: boolean;
  /** Its record (absent when not alive). */
  record: ServerRecord | null;
}

export interface ClusterView {
  source: string;
  epoch: number;
  digest: string;
  servers: ClusterServer[];
}

/** Reads the map in force and every server's record. */
export async function readCluster(client: Etcd3, keys: EtcdKeys, source: string): Promise<ClusterView> {
  const { record } = await readMapRecord(client, keys);
  if (!record) throw new Error(`no map in force under ${source} yet; write one with portalctl map apply FILE`);
  const map = parseMap(record.text, source);
  const records = await readServerRecords(client, keys);
  const names = [...new Set([...map.servers.map((s) => s.name), ...records.keys()])];
  return { source, epoch: map.epoch, digest: map.digest, servers: names.map((server) => ({ server, alive: records.has(server), record: records.get(server) ?? null })) };
}

/** How the view looks to a person. */
export function formatCluster(v: ClusterView): string {
  const lines = [`map in force: epoch ${v.epoch} (map ${shortDigest(v.digest)}) in ${v.source}`];
  for (const s of v.servers) {
    const r = s.record;
    if (!r) {
      lines.push(`${s.server}: NO LEASE: its agent is down or cut off from etcd; buckets it gave up stay held by their new owners until it drains them or an operator runs portalctl release STREAM --from ${s.server} on each`);
      continue;
    }
    const sw = r.epochSwitch;
    const map = r.info.epoch === r.info.running ? `epoch ${r.info.running}` : `epoch ${r.info.running} (map at ${r.info.epoch})`;
    lines.push(`${s.server}: alive (lease), agent pid ${r.pid}, ${map}${sw && !sw.done ? `, switching to ${sw.epoch}` : ''}`);
    for (const w of sw && !sw.done ? sw.waitingFor : []) lines.push(`  switch waits for ${w.server}: ${w.reason}`);
    for (const h of r.handovers) lines.push(`  handover: ${h.stream}, ${h.buckets.length} buckets held for ${h.from} since epoch ${h.epoch}: ${h.reason}${h.stuck ? ` (STUCK; to end it: ${h.command})` : ''}`);
    if (r.info.rejected) lines.push(`  map refused: epoch ${r.info.rejected.epoch} (${r.info.rejected.code}); see portalctl status on ${s.server}`);
  }
  return lines.join('\n');
}

/** The exit status of the view (as `status`'s): HEALTH_EXIT.dead when a server has no lease, else .hold when a switch or handover waits, else 0. */
export function clusterExit(v: ClusterView): number {
  if (v.servers.some((s) => !s.alive)) return HEALTH_EXIT.dead;
  const waits = v.servers.some((s) => (s.record?.handovers.length ?? 0) > 0 || (s.record?.epochSwitch && !s.record.epochSwitch.done));
  return waits ? HEALTH_EXIT.hold : 0;
}

/** `portalctl status --cluster` on an etcd map. */
export async function clusterStatus(source: string, json: boolean | undefined): Promise<void> {
  const { client, keys } = etcdAt(parseEtcdSource(source));
  try {
    const v = await readCluster(client, keys, source);
    process.stdout.write((json ? JSON.stringify(v, null, 2) : formatCluster(v)) + '\n');
    process.exitCode = clusterExit(v);
  } catch (err) {
    process.stderr.write(`error: cannot read ${source}: ${(err as Error).message}\n`);
    process.exitCode = 1;
  } finally {
    client.close();
  }
}
