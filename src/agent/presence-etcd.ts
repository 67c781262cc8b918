/**
 * An agent's presence in etcd: it holds a lease while it lives and keeps its record under it at
 * `<prefix>/servers/<server>` (its map, the epoch it runs, its switch and its handovers). When the
 * agent dies or is cut off from etcd for longer than the lease's TTL, the record goes: the other
 * agents and `portalctl status --cluster` see the server as not alive. The other agents read the
 * records instead of asking each agent for its map (peers.ts `PeerLookup`).
 */
import type { Etcd3, Lease } from 'etcd3';
import type { Logger } from '../log';
import type { EtcdKeys } from '../map/etcd-keys';
import type { EpochSwitchStatus, HandoverStatus, MapInfo } from '../protocol/control';

/** Seconds a server's lease lives without a keep-alive (its agent dead or cut off from etcd). */
export const DEFAULT_LEASE_TTL_S = 5;
/** A record is written again at least this often even when nothing in it changed. */
const REPUBLISH_MS = 2000;

/** What an agent keeps under its lease. */
export interface ServerRecord {
  server: string;
  pid: number;
  /** When it was written (ms since the Unix epoch). */
  at: number;
  info: MapInfo;
  epochSwitch: EpochSwitchStatus | null;
  handovers: HandoverStatus[];
  /** The lease the record is under (gone with the agent, or when it loses etcd). */
  leaseId: string;
}

export class EtcdPresence {
  private lease: Lease | null = null;
  private last = '';
  private lastAt = 0;

  constructor(
    private readonly client: Etcd3,
    private readonly keys: EtcdKeys,
    private readonly server: string,
    private readonly log: Logger,
    private readonly ttlS = DEFAULT_LEASE_TTL_S,
  ) {}

  /** Writes this agent's record under its lease (a new lease if the last one was lost); only what changed, or every REPUBLISH_MS. */
  async publish(info: MapInfo, epochSwitch: EpochSwitchStatus | null, handovers: HandoverStatus[]): Promise<void> {
    const body = { info, epochSwitch, handovers: handovers.map((h) => ({ ...h, waitingMs: 0 })) };
    const text = JSON.stringify(body);
    if (this.lease && text === this.last && Date.now() - this.lastAt < REPUBLISH_MS) return;
    const lease = this.lease ?? this.grant();
    const record: ServerRecord = { server: this.server, pid: process.pid, at: Date.now(), ...body, handovers, leaseId: await lease.grant() };
    try {
      await lease.put(this.keys.server(this.server)).value(JSON.stringify(record));
    } catch (err) {
      if (this.lease === lease) this.drop(lease);
      throw err;
    }
    this.last = text;
    this.lastAt = Date.now();
  }

  private grant(): Lease {
    const lease = this.client.lease(this.ttlS);
    this.lease = lease;
    lease.on('lost', (err) => {
      this.log.warn({ err: String(err) }, `etcd lease of ${this.server} lost (${String(err)}); taking a new one`);
      this.drop(lease);
    });
    lease.grant().catch(() => this.drop(lease));
    return lease;
  }

  private drop(lease: Lease): void {
    if (this.lease === lease) this.lease = null;
    void lease.revoke().catch(() => undefined);
  }

  /** Gives the lease back (the record goes at once): the agent stops. */
  async close(): Promise<void> {
    const lease = this.lease;
    this.lease = null;
    await lease?.revoke().catch(() => undefined);
  }
}

/** Every server's record under the prefix (servers without one are not alive). */
export async function readServerRecords(client: Etcd3, keys: EtcdKeys): Promise<Map<string, ServerRecord>> {
  const all = await client.getAll().prefix(keys.serversPrefix).strings();
  const out = new Map<string, ServerRecord>();
  for (const [key, value] of Object.entries(all)) {
    try {
      out.set(key.slice(keys.serversPrefix.length), JSON.parse(value) as ServerRecord);
    } catch {
      // not ours: skipped
    }
  }
  return out;
}

/** A PeerLookup (peers.ts) from the records: each server's MapInfo, or why it has none. */
export function recordLookup(client: Etcd3, keys: EtcdKeys) {
  return async (servers: string[]): Promise<Map<string, MapInfo | string>> => {
    const records = await readServerRecords(client, keys);
    return new Map(servers.map((s) => [s, records.get(s)?.info ?? 'holds no lease in etcd (its agent is down or cannot reach etcd)']));
  };
}
