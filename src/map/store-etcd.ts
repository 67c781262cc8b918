/**
 * The etcd store: the map in force is the key `<prefix>/map` (etcd-keys.ts), watched, and read
 * again every `pollMs` (which is also how the store knows etcd can be reached). A process that
 * loses etcd keeps the last map it read and says so (`health`, a warning in its log); when etcd
 * answers again it takes what was written meanwhile. `writeMap` is the one way a map gets in:
 * only the next epoch, and only if nobody wrote since it was read (a compare-and-swap on the
 * key's revision).
 */
import { ConsecutiveBreaker, ExponentialBackoff, circuitBreaker, handleWhen, type IBackoff, retry } from 'cockatiel';
import { Etcd3, isRecoverableError, type Watcher } from 'etcd3';
import { FlotillaError } from '../errors';
import type { Logger } from '../log';
import { EtcdKeys, type MapRecord } from './etcd-keys';
import { type EtcdSource, type MapStore, parseEtcdSource, type StoreHealth } from './store';

/** How often the map key is read again besides the watch (and etcd's reachability checked). */
export const DEFAULT_ETCD_POLL_MS = 1000;
/** How long one etcd call may take before it counts as failed. */
export const ETCD_CALL_MS = 2000;

/** A client of `source`'s endpoints that fails over between members and gives up on a call after ETCD_CALL_MS. */
export function etcdClient(source: EtcdSource): Etcd3 {
  return new Etcd3({
    hosts: source.endpoints.map((e) => `http://${e}`),
    dialTimeout: ETCD_CALL_MS,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + ETCD_CALL_MS }),
    faultHandling: {
      host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 500, breaker: new ConsecutiveBreaker(2) }),
      global: retry(handleWhen(isRecoverableError), { maxAttempts: source.endpoints.length + 1 }),
      // etcd3's type for this slot lags cockatiel 3's (it calls next() on it, as on its own default)
      watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }) as unknown as IBackoff<unknown>,
    },
  });
}

/** A client of `source`'s members and the keys under its prefix. */
export function etcdAt(source: EtcdSource): { client: Etcd3; keys: EtcdKeys } {
  return { client: etcdClient(source), keys: new EtcdKeys(source.prefix) };
}

/** The map in force under `source`, read once (no watch); throws MAP_UNREADABLE when there is none or etcd does not answer. */
export async function readMapOnce(source: string): Promise<string> {
  const { client, keys } = etcdAt(parseEtcdSource(source));
  try {
    let record: MapRecord | null;
    try {
      record = (await readMapRecord(client, keys)).record;
    } catch (err) {
      throw new FlotillaError('MAP_UNREADABLE', `cannot read map ${source}: etcd does not answer (${(err as Error).message})`);
    }
    if (!record) throw new FlotillaError('MAP_UNREADABLE', `cannot read map ${source}: no map under the prefix yet (write one with portalctl map apply FILE --map ${source})`);
    return record.text;
  } finally {
    client.close();
  }
}

/**
 * The map record at `keys.map` and its revision (0: none written yet). With `newerThan` (a
 * revision), only a record written after it is sent: null when the map key has not changed.
 */
export async function readMapRecord(client: Etcd3, keys: EtcdKeys, newerThan = '0'): Promise<{ record: MapRecord | null; revision: string }> {
  const query = client.get(keys.map);
  if (newerThan !== '0') query.minModRevision(String(BigInt(newerThan) + 1n));
  const res = await query.exec();
  const kv = res.kvs[0];
  if (!kv) return { record: null, revision: '0' };
  return { record: recordOf(kv.value.toString('utf8')), revision: kv.mod_revision };
}

/**
 * The record in a map key's value. A value that is not a MapRecord (written by hand, not by
 * `map apply`) is kept as text, so the keeper rejects it as it would a broken file and the map in
 * force stays.
 */
function recordOf(value: string): MapRecord {
  try {
    const r = JSON.parse(value) as MapRecord;
    if (typeof r.text === 'string' && typeof r.epoch === 'number') return r;
  } catch {
    // not JSON: below
  }
  return { epoch: -1, digest: '', text: value, appliedAt: 0 };
}

/**
 * Writes `record` as the map in force (and into the history) if the map key is still at
 * `revision` ('0': no map yet). False if someone wrote in between.
 */
export async function writeMap(client: Etcd3, keys: EtcdKeys, record: MapRecord, revision: string): Promise<boolean> {
  const value = JSON.stringify(record);
  const guard = revision === '0' ? client.if(keys.map, 'Create', '==', 0) : client.if(keys.map, 'Mod', '==', revision);
  const res = await guard.then(client.put(keys.map).value(value), client.put(keys.history(record.epoch)).value(value)).commit();
  return res.succeeded;
}

/** The store's error before its first read. */
const NOT_READ = 'not read yet';

export interface EtcdStoreOptions {
  log?: Logger;
  pollMs?: number;
}

export class EtcdMapStore implements MapStore {
  readonly kind = 'etcd' as const;
  readonly client: Etcd3;
  readonly keys: EtcdKeys;
  readonly health: StoreHealth;
  private text: string | null = null;
  /** The map key's revision last taken ('0': none): the poll asks only for a newer one. */
  private revision = '0';
  private epoch: number | null = null;
  private readonly listeners: (() => void)[] = [];
  private watcher: Watcher | null = null;
  private poll: NodeJS.Timeout | null = null;
  private closed = false;

  private constructor(
    readonly source: string,
    parsed: EtcdSource,
    /** Where losing and regaining etcd is said (settable: a daemon makes its logger after reading the map). */
    public log: Logger | undefined,
  ) {
    ({ client: this.client, keys: this.keys } = etcdAt(parsed));
    this.health = { kind: 'etcd', source, connected: false, error: NOT_READ, since: Date.now() };
  }

  /**
   * Connects and reads the map in force; throws MAP_UNREADABLE if etcd cannot be reached or holds
   * no map under the prefix (a process cannot start without one). Then watches it.
   */
  static async open(source: string, o: EtcdStoreOptions = {}): Promise<EtcdMapStore> {
    const store = new EtcdMapStore(source, parseEtcdSource(source), o.log);
    await store.refresh();
    if (store.text === null) {
      const why = store.health.connected ? 'no map under the prefix yet (write one with portalctl map apply FILE --map ' + source + ')' : `etcd does not answer (${store.health.error})`;
      void store.close();
      throw new FlotillaError('MAP_UNREADABLE', `cannot read map ${source}: ${why}`);
    }
    store.start(o.pollMs ?? DEFAULT_ETCD_POLL_MS);
    return store;
  }

  read(): string {
    if (this.text === null) throw new FlotillaError('MAP_UNREADABLE', `cannot read map ${this.source}: none read from etcd yet`);
    return this.text;
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** Reads the map key once; notes whether etcd answered; tells the listeners of a new map. */
  async refresh(): Promise<void> {
    let read: { record: MapRecord | null; revision: string };
    try {
      // Only a map written since the last one taken travels: the poll proves etcd answers, cheaply.
      read = await readMapRecord(this.client, this.keys, this.revision);
    } catch (err) {
      this.setHealth(false, (err as Error).message);
      return;
    }
    this.setHealth(true, null);
    this.take(read.record, read.revision);
  }

  private take(record: MapRecord | null, revision: string): void {
    if (!record || this.closed) return;
    if (BigInt(revision) > BigInt(this.revision)) this.revision = revision;
    if (record.text === this.text && record.epoch === this.epoch) return;
    this.text = record.text;
    this.epoch = record.epoch;
    for (const l of this.listeners) l();
  }

  private start(pollMs: number): void {
    const tick = () => {
      this.poll = setTimeout(() => void this.refresh().finally(() => !this.closed && tick()), pollMs);
      this.poll.unref();
    };
    tick();
    void this.client
      .watch()
      .key(this.keys.map)
      .create()
      .then((w) => {
        if (this.closed) return void w.cancel();
        this.watcher = w;
        w.on('put', (kv) => this.take(recordOf(kv.value.toString('utf8')), kv.mod_revision));
        w.on('error', () => undefined); // the poll tells the health; the watch reconnects itself
      })
      .catch(() => undefined); // etcd down at the start of the watch: the poll carries on
  }

  private setHealth(connected: boolean, error: string | null): void {
    const h = this.health;
    const was = h.connected;
    const first = h.error === NOT_READ;
    h.error = error;
    if (was === connected && !first) return;
    h.connected = connected;
    h.since = Date.now();
    if (connected && !was && !first) this.log?.info({ source: this.source }, `etcd ${this.source} answers again; following its map`);
    if (!connected) this.log?.warn({ source: this.source, err: error }, `etcd ${this.source} does not answer (${error}); running on the map in force (epoch ${this.epoch ?? 'none'})`);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.poll) clearTimeout(this.poll);
    // A watch's cancel goes to the member it streams from: never wait on a member that is gone.
    const cancelled = this.watcher?.cancel().catch(() => undefined);
    await Promise.race([cancelled, new Promise((r) => setTimeout(r, ETCD_CALL_MS).unref())]);
    this.client.close();
  }
}
