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
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FlotillaError } from '../errors';
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
  /** A map file: at start, wait this long for it to read as a whole map (see readWhole). Default 0: read it as it is. */
  settleMs?: number;
  /** An etcd map: take each new map as soon as it is written (default false: a portal takes it at its switch, a component and a sender when the portal's epoch shows it; the agent follows the store itself). */
  follow?: boolean;
}

/** How long a daemon waits at start for a map file being written to read whole. */
export const MAP_FILE_SETTLE_MS = 2000;

/** The store of `source`: a file, or an etcd prefix (connected, its map read; throws MAP_UNREADABLE if it cannot be). */
export async function openMapStore(source: string, log?: Logger): Promise<MapStore> {
  return isEtcdSource(source) ? EtcdMapStore.open(source, { log }) : new FileMapStore(source);
}

/**
 * `read()` (the caller's own first read of `store`'s map), and, while `settleMs` have not passed,
 * again every 100 ms when it fails on a map file that exists but does not read as a map: an
 * editor or a script writing the file empties it first, so a daemon starting at that moment
 * reads it empty or cut short and would exit on it. Past that, or for any other failure (no such
 * file, an unknown server), the failure is the caller's, as for a map that is simply invalid.
 */
export async function readWhole<T>(store: MapStore, settleMs: number, log: Logger | undefined, read: () => T): Promise<T> {
  const deadline = Date.now() + settleMs;
  for (let tries = 0; ; tries++) {
    try {
      return read();
    } catch (err) {
      const code = (err as FlotillaError).code;
      const writing = store.kind === 'file' && (code === 'MAP_INVALID' || code === 'MAP_UNREADABLE') && existsSync(store.source);
      if (!writing || Date.now() >= deadline) throw err;
      if (tries === 0) log?.warn({ code }, `map ${store.source} does not read as a map yet (${(err as Error).message.split('\n')[0]}); reading it again for up to ${settleMs} ms, in case it is being written`);
      await sleep(100);
    }
  }
}

/** A keeper of the map at `source`; with etcd, following each new map written there if `follow`. */
export async function openMap(source: string, o: OpenMapOptions = {}): Promise<MapKeeper> {
  const store = await openMapStore(source, o.log);
  let keeper: MapKeeper;
  try {
    keeper = await readWhole(store, o.settleMs ?? 0, o.log, () => new MapKeeper(store, o.server ?? null, o.role));
  } catch (err) {
    await store.close();
    throw err;
  }
  if (store.kind === 'etcd' && o.follow === true) {
    store.onChange(() => {
      const outcome = keeper.reload();
      if (outcome.type === 'rejected') o.log?.error({ problems: outcome.rejection.problems }, `map ${store.source}: new map rejected, epoch ${outcome.epoch} stays in force`);
    });
  } else if (store.kind === 'etcd') {
    // Taken at the switch (a portal when its agent says, a component or sender when the portal's
    // epoch shows it): parsed now, while the servers agree, not at the switch.
    store.onChange(() => keeper.prepare());
  }
  return keeper;
}

/** What a component or sender takes as `map`: a file path as given (read by the SDK), or a keeper of an etcd map (opened here). */
export async function mapSource(source: string, o: OpenMapOptions = {}): Promise<string | MapKeeper> {
  return isEtcdSource(source) ? openMap(source, o) : source;
}
