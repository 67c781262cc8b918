/**
 * What the other servers' agents say of their map: asked over TCP (`map`, at each server's
 * agent_port), kept with when each was last heard or since when it has not answered. The switch
 * to a new epoch waits until every server of the new map has the same map (epoch and digest),
 * and an edit is checked against the records the others still hold in their spools.
 *
 *   agent --{"cmd":"map"}--> tcp://<peer host>:<agent_port> --> MapInfo {epoch, digest, running, spooled}
 */
import { shortDigest } from '../map/digest';
import type { FlotillaMap } from '../map/types';
import type { MapInfo, SwitchWait } from '../protocol/control';
import { askAgent, remoteAgent } from './client';

/** One peer as last heard. */
interface Peer {
  info: MapInfo | null;
  /** When `info` came; 0 never. */
  heardAt: number;
  /** Since when the peer has not answered (or has not had the map waited for); 0 when it has. */
  waitingSince: number;
  error: string | null;
}

/** Where the peers stand against a map: who has it, who has not, who has another one. */
export interface Agreement {
  agreed: boolean;
  waitingFor: SwitchWait[];
  conflicts: { server: string; digest: string }[];
}

/**
 * Where the peers' word comes from instead of asking each agent: every server's MapInfo at once
 * (etcd: the agents' records under their leases), or a string saying why a server has none.
 */
export type PeerLookup = (servers: string[]) => Promise<Map<string, MapInfo | string>>;

export class Peers {
  private readonly book = new Map<string, Peer>();

  constructor(
    private readonly self: string,
    private readonly timeoutMs: number,
    private readonly lookup: PeerLookup | null = null,
  ) {}

  /** Asks every other server of `maps` (with an agent_port) for its map, in parallel. */
  async refresh(maps: readonly FlotillaMap[]): Promise<void> {
    const servers = new Map<string, FlotillaMap['servers'][number]>();
    for (const m of maps) for (const s of m.servers) if (s.name !== this.self) servers.set(s.name, s);
    if (this.lookup) return this.refreshFrom(this.lookup, [...servers.keys()]);
    await Promise.all(
      [...servers.values()].map(async (s) => {
        const peer = this.peer(s.name);
        const target = remoteAgent(s);
        if (!target) {
          peer.error = `has no agent_port in the map, so it cannot be asked; give it one`;
          peer.waitingSince ||= Date.now();
          return;
        }
        try {
          peer.info = await askAgent(target, { cmd: 'map' }, this.timeoutMs);
          peer.heardAt = Date.now();
          peer.error = null;
        } catch (err) {
          peer.error = `does not answer (${(err as Error).message})`;
          peer.waitingSince ||= Date.now();
        }
      }),
    );
  }

  /** Takes every server's word from `lookup` (one read for all); a server without one waits, with the reason. */
  private async refreshFrom(lookup: PeerLookup, names: string[]): Promise<void> {
    let found: Map<string, MapInfo | string>;
    try {
      found = await lookup(names);
    } catch (err) {
      found = new Map(names.map((n) => [n, `cannot be looked up (${(err as Error).message})`]));
    }
    for (const name of names) {
      const peer = this.peer(name);
      const info = found.get(name) ?? 'has no record';
      if (typeof info === 'string') {
        peer.error = info;
        peer.waitingSince ||= Date.now();
      } else {
        peer.info = info;
        peer.heardAt = Date.now();
        peer.error = null;
      }
    }
  }

  /** What `server` last said, if it ever answered. */
  info(server: string): MapInfo | null {
    return this.book.get(server)?.info ?? null;
  }

  /**
   * Whether every server of `target` (but this one) has `target`'s map, or a later one; servers
   * of `before` that state the same epoch with other content are conflicts too.
   */
  agreement(target: FlotillaMap, before: FlotillaMap, now = Date.now()): Agreement {
    const waitingFor: SwitchWait[] = [];
    const conflicts: { server: string; digest: string }[] = [];
    const names = new Set([...target.servers, ...before.servers].map((s) => s.name));
    names.delete(this.self);
    for (const name of names) {
      const inTarget = target.servers.some((s) => s.name === name);
      const peer = this.peer(name);
      const info = peer.error === null ? peer.info : null;
      if (info && info.epoch === target.epoch && info.digest !== target.digest) {
        conflicts.push({ server: name, digest: info.digest });
        continue;
      }
      // A server leaving the map: its buckets wait for its drain, not its say. A server joining
      // that owns nothing yet (edit-checks.ts refuses one that would) cannot process a bucket.
      if (!inTarget || (!before.servers.some((s) => s.name === name) && !ownsAny(target, name))) continue;
      if (info && info.epoch >= target.epoch) {
        peer.waitingSince = 0;
        continue;
      }
      peer.waitingSince ||= now;
      const reason =
        peer.error ??
        (info?.rejected && info.rejected.epoch !== null && info.rejected.epoch >= target.epoch
          ? `rejected epoch ${info.rejected.epoch} (${info.rejected.code}); see its status`
          : info
            ? `has epoch ${info.epoch} (map ${shortDigest(info.digest)}), not yet ${target.epoch}`
            : 'has not answered yet');
      waitingFor.push({ server: name, reason, waitingMs: now - peer.waitingSince });
    }
    return { agreed: waitingFor.length === 0 && conflicts.length === 0, waitingFor, conflicts };
  }

  private peer(name: string): Peer {
    let p = this.book.get(name);
    if (!p) this.book.set(name, (p = { info: null, heardAt: 0, waitingSince: 0, error: null }));
    return p;
  }
}

/** True if `server` owns a bucket of some stream in `map`. */
function ownsAny(map: FlotillaMap, server: string): boolean {
  const i = map.servers.findIndex((s) => s.name === server);
  return map.streams.some((s) => s.owner.includes(i));
}
