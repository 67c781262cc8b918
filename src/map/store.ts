/**
 * Where a process gets its map from: a file (read again on each reload) or a prefix in etcd
 * (watched; the newest map in force kept in memory). Both stores answer `read()` at once, so the
 * keeper (keeper.ts) reads either the same way; what differs is how an edit is noticed and whether
 * the store can be reached (`health`).
 *
 *   --map /etc/flotilla/map.yaml                       file   (store-file.ts)
 *   --map etcd://10.0.0.5:2379,10.0.0.6:2379/flotilla   etcd   (store-etcd.ts; keys: etcd-keys.ts)
 */
import { FlotillaError } from '../errors';
import type { Logger } from '../log';

/** Whether the store can be reached, as a process shows it in its status and log. */
export interface StoreHealth {
  kind: 'file' | 'etcd';
  /** The source as given (`--map`). */
  source: string;
  /** False while etcd cannot be reached: the process keeps running on the map it has. */
  connected: boolean;
  /** Why not, while not connected. */
  error: string | null;
  /** Since when (ms since the Unix epoch) the store has been in this state. */
  since: number;
}

/** A map source a keeper reads. */
export interface MapStore {
  readonly kind: 'file' | 'etcd';
  /** The source as given: a path or an etcd:// URL. Names the map in errors. */
  readonly source: string;
  /** The map text in force now; throws MAP_UNREADABLE when there is none to read. */
  read(): string;
  /** Calls `listener` when the map may have changed (etcd: a new map written; file: never, the agent watches it). */
  onChange(listener: () => void): void;
  readonly health: StoreHealth;
  /** Where losing and regaining the store is said (set by a daemon once it has its logger). */
  log?: Logger;
  close(): Promise<void>;
}

/** An etcd source: its endpoints (host:port) and the key prefix (no trailing slash). */
export interface EtcdSource {
  endpoints: string[];
  prefix: string;
}

/** True if `source` names an etcd prefix rather than a file. */
export function isEtcdSource(source: string): boolean {
  return source.startsWith('etcd://');
}

/** `etcd://h1:2379,h2:2379/flotilla/prod` -> endpoints and prefix; throws CONFIG_INVALID naming what is wrong. */
export function parseEtcdSource(source: string): EtcdSource {
  const m = /^etcd:\/\/([^/]+)\/(.+)$/.exec(source);
  const bad = (why: string) => new FlotillaError('CONFIG_INVALID', `--map ${source}: ${why}; write etcd://HOST:PORT[,HOST:PORT...]/PREFIX`);
  if (!m) throw bad('no endpoint or no prefix');
  const endpoints = m[1]!.split(',');
  for (const e of endpoints) if (!/^[A-Za-z0-9.\-_[\]:]+:\d{1,5}$/.test(e)) throw bad(`"${e}" is not HOST:PORT`);
  const prefix = m[2]!.replace(/\/+$/, '');
  if (prefix === '') throw bad('the prefix is empty');
  return { endpoints, prefix };
}
