/**
 * What an agent's control plane is made of for its map's store (store.ts): with a file, the
 * agents ask each other (peers over TCP, `drained` answered by the old owner's agent); with etcd,
 * every agent keeps its record under a lease and drains are records (presence-etcd.ts,
 * handovers-etcd.ts). One set of rounds (epoch-switch.ts) runs on either.
 */
import type { Logger } from '../log';
import type { MapStore } from '../map/store';
import { EtcdMapStore } from '../map/store-etcd';
import { AgentHandovers, type HandoverStore } from './handovers';
import { EtcdHandovers } from './handovers-etcd';
import type { PeerLookup } from './peers';
import { EtcdPresence, recordLookup } from './presence-etcd';

export interface ControlPlane {
  /** Where the peers' word comes from; null: ask each agent. */
  lookup: PeerLookup | null;
  handovers: HandoverStore;
  /** The agent's lease and record; null with a map file. */
  presence: EtcdPresence | null;
}

export function controlPlaneOf(store: MapStore | null, server: string, runDir: string, timeoutMs: number, log: Logger): ControlPlane {
  if (!(store instanceof EtcdMapStore)) return { lookup: null, handovers: new AgentHandovers(timeoutMs), presence: null };
  return {
    lookup: recordLookup(store.client, store.keys),
    handovers: new EtcdHandovers(store.client, store.keys, server, runDir, timeoutMs),
    presence: new EtcdPresence(store.client, store.keys, server, log),
  };
}
