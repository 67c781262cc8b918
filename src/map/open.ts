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
import { parseMap } from './load';
import { isEtcdSource, type MapStore } from './store';
import { EtcdMapStore } from './store-etcd';
import { FileMapStore } from './store-file';

export interface OpenMapOptions {
  /** This process's server, which every map it takes must name. */
  server?: string | null;
  /** Names the process in that problem ("this agent"). */
  role?: string;
  log?: Logger;
  /** A map file: at start, wait this long for it to read as a whole map (see settledFile). Default 0: read it as it is. */
  settleMs?: number;
  /** An etcd map: take each new map as soon as it is written (default false: a portal takes it at its switch, a component and a sender when the portal's epoch shows it; the agent follows the store itself). */
  follow?: boolean;
}

/** How long a daemon waits at start for a map file being written to read whole. */
export const MAP_FILE_SETTLE_MS = 2000;

/** The store of `source`: a file, or an etcd prefix (connected, its map read; throws MAP_UNREADABLE if it cannot be). */
export async function openMapStore(source: string, log?: Logger, settleMs = 0): Promise<MapStore> {
  if (isEtcdSource(source)) return EtcdMapStore.open(source, { log });
  return settledFile(new FileMapStore(source), settleMs, log);
}

/**
 * An editor or a script writing the map file empties it first, so a daemon starting at that
 * moment reads an empty or cut-short file and would exit on it. Until `settleMs` have passed, a
 * file that does not parse is read again every 100 ms; past that, the caller's own read reports
 * the problem, as it does for a map that is simply invalid.
 */
async function settledFile(store: FileMapStore, settleMs: number, log?: Logger): Promise<FileMapStore> {
  const deadline = Date.now() + settleMs;
  for (let tries = 0; Date.now() < deadline; tries++) {
    try {
      parseMap(store.read(), store.source);
      break;
    } catch (err) {
      if (!existsSync(store.source)) break; // not being written: a wrong path, said by the caller's read
      if (tries === 0) log?.warn({ code: (err as FlotillaError).code }, `map ${store.source} does not read as a map yet (${(err as Error).message.split('\n')[0]}); reading it again for up to ${settleMs} ms, in case it is being written`);
      await sleep(100);
    }
  }
  return store;
}

/** A keeper of the map at `source`; with etcd, following each new map written there if `follow`. */
export async function openMap(source: string, o: OpenMapOptions = {}): Promise<MapKeeper> {
  const store = await openMapStore(source, o.log, o.settleMs);
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
