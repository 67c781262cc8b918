/**
 * Opens the map a process runs by: `--map FILE` or `--map etcd://HOST:PORT[,...]/PREFIX` (or
 * `$FLOTILLA_MAP`), the same way in every process (agent, portal, components, portalctl, and a
 * program using the sender library):
 *
 *   const keeper = await openMap(process.env.FLOTILLA_MAP!, { server: 'alpha' });
 *   new Sender({ map: keeper });
 *
 * With etcd, a new map written under the prefix is taken by the keeper as an edit of the file
 * would be (invalid content never replaces the map in force), and the process follows it.
 */
import type { Logger } from '../log';
import { MapKeeper } from './keeper';
import { isEtcdSource, type MapStore } from './store';
import { EtcdMapStore } from './store-etcd';
import { FileMapStore } from './store-file';

export interface OpenMapOptions {
  /** This process's server, which every map it takes must name. */
  server?: string | null;
  /** Names the process in that problem ("this agent"). */
  role?: string;
  log?: Logger;
  /** An etcd map: take each new map as soon as it is written (default false: a portal takes it at its switch, a component and a sender when the portal's epoch shows it; the agent follows the store itself). */
  follow?: boolean;
}

/** The store of `source`: a file, or an etcd prefix (connected, its map read; throws MAP_UNREADABLE if it cannot be). */
export async function openMapStore(source: string, log?: Logger): Promise<MapStore> {
  return isEtcdSource(source) ? EtcdMapStore.open(source, { log }) : new FileMapStore(source);
}

/** A keeper of the map at `source`; with etcd, following each new map written there if `follow`. */
export async function openMap(source: string, o: OpenMapOptions = {}): Promise<MapKeeper> {
  const store = await openMapStore(source, o.log);
  let keeper: MapKeeper;
  try {
    keeper = new MapKeeper(store, o.server ?? null, o.role);
  } catch (err) {
    await store.close();
    throw err;
  }
  if (store.kind === 'etcd' && o.follow === true) {
    store.onChange(() => {
      const outcome = keeper.reload();
      if (outcome.type === 'rejected') o.log?.error({ problems: outcome.rejection.problems }, `map ${store.source}: new map rejected, epoch ${outcome.epoch} stays in force`);
    });
  }
  return keeper;
}

/** What a component or sender takes as `map`: a file path as given (read by the SDK), or a keeper of an etcd map (opened here). */
export async function mapSource(source: string, o: OpenMapOptions = {}): Promise<string | MapKeeper> {
  return isEtcdSource(source) ? openMap(source, o) : source;
}
