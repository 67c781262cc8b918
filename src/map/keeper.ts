/**
 * The map in force in one process, and what an edit of the map file does to it. Every process
 * holds its map through one keeper: the agent (which watches the file), a portal and its spool
 * forwarder, a component and its sender. An edit is taken only if it is a valid map that raises
 * the epoch and is a legal change of the map in force (the keeper's server, if it has one, is
 * still in it; no stream's bucket count changed); anything else is rejected, the map in force
 * stays, and the rejection (every problem as `path: message`) is kept for `status` until a later
 * edit is taken or the file is put back.
 */
import { type ErrorCode, FlotillaError, MapInvalidError, type MapProblem } from '../errors';
import { isEtcdSource, type MapStore } from './store';
import { FileMapStore } from './store-file';
import { type FlotillaMap } from './types';
import { parseMap } from './load';
import { diffMaps } from './diff';

/** Why the last edit of the map file was not taken. */
export interface MapRejection {
  file: string;
  /** When the edit was seen (ms since the Unix epoch). */
  at: number;
  code: ErrorCode;
  /** The epoch the rejected file states, if it could be read. */
  epoch: number | null;
  problems: MapProblem[];
}

/** What reading the map file again did. */
export type ReloadOutcome =
  | { type: 'applied'; from: number; epoch: number }
  | { type: 'unchanged'; epoch: number }
  | { type: 'rejected'; epoch: number; rejection: MapRejection };

/** Called when an edit is taken: the new map in force and the one it replaced. */
export type MapListener = (map: FlotillaMap, before: FlotillaMap) => void;

/** Holds the map in force for one process. */
export class MapKeeper {
  private current: FlotillaMap;
  private rejected: MapRejection | null = null;
  private readonly listeners: MapListener[] = [];
  /** A newer map read and parsed ahead of its switch (`prepare`), taken by `reload` if the store still has it. */
  private prepared: FlotillaMap | null = null;

  /** The map's source (a file, or an etcd:// URL), read again on `reload`; null for a map given whole (which never changes). */
  readonly file: string | null;
  /** Where the map is read from (store.ts); null for a map given whole. */
  readonly store: MapStore | null;

  /**
   * Holds `source`: a map file, read now (throws MAP_INVALID, MAP_UNREADABLE or UNKNOWN_SERVER
   * if it cannot be used), or a map given whole. `server`: this process's server, which every
   * map it takes must name; `role` names the process in that problem ("this agent").
   */
  constructor(
    source: string | FlotillaMap | MapStore,
    readonly server: string | null = null,
    private readonly role = 'process',
  ) {
    if (typeof source === 'string' && isEtcdSource(source)) {
      throw new FlotillaError('CONFIG_INVALID', `${source}: an etcd map is opened with openMap() first (it connects and reads the map): new Sender({ map: await openMap('${source}') })`);
    }
    if (typeof source === 'string' || isStore(source)) {
      this.store = typeof source === 'string' ? new FileMapStore(source) : source;
      this.file = this.store.source;
      this.current = parseMap(this.store.read(), this.file);
    } else {
      this.store = null;
      this.file = null;
      this.current = source;
    }
    const problems = this.serverProblems(this.current);
    if (problems.length > 0) throw new FlotillaError('UNKNOWN_SERVER', `${this.current.file}: ${problems[0]!.message}`);
  }

  /** `source` if it is a keeper already (shared), else a new keeper of it. */
  static of(source: MapKeeper | FlotillaMap | MapStore | string, server: string | null = null): MapKeeper {
    return source instanceof MapKeeper ? source : new MapKeeper(source, server);
  }

  /** The map in force. */
  get map(): FlotillaMap {
    return this.current;
  }

  /** Why the last edit was rejected, or null if the file and the map in force agree. */
  get rejection(): MapRejection | null {
    return this.rejected;
  }

  /** Calls `listener` after every edit taken from now on. */
  onChange(listener: MapListener): void {
    this.listeners.push(listener);
  }

  /**
   * Puts `map` in force without the checks of an edit: a portal coming back on the map it last
   * ran (its handover state), older than the file, which the agent then carries it forward from.
   */
  adopt(map: FlotillaMap): void {
    this.current = map;
  }

  /** The epoch of a newer map parsed ahead (`prepare`) and not yet taken, or null. */
  get preparedEpoch(): number | null {
    return this.prepared?.epoch ?? null;
  }

  /**
   * Parses the store's map now, if it is new, so that `reload` takes it without parsing when
   * the switch to it comes. An etcd store has a new map as soon as it is written, while the
   * switch waits for every server to agree; parsing then costs a process about 10 ms of CPU, and
   * a component that parsed at the switch kept its slot waiting that long, at the moment every
   * process of the instance does the same. A map that does not parse is left for `reload`.
   */
  prepare(): void {
    if (this.store === null || this.file === null) return;
    try {
      const text = this.store.read();
      if (text === this.current.text || text === this.prepared?.text) return;
      this.prepared = parseMap(text, this.file);
    } catch {
      this.prepared = null;
    }
  }

  /** Reads the file again and takes it, keeps the map in force, or rejects the edit. */
  reload(check?: (next: FlotillaMap, current: FlotillaMap) => MapProblem[]): ReloadOutcome {
    const epoch = this.current.epoch;
    if (this.file === null || this.store === null) return { type: 'unchanged', epoch };
    let text: string;
    try {
      text = this.store.read();
    } catch (err) {
      return this.reject((err as FlotillaError).code, null, [{ path: '(file)', message: (err as Error).message }]);
    }
    // The same text as the map in force: nothing to parse again. A component reloads on each
    // delivery from a newer epoch until its store has the new map, and parsing the old text each
    // time stalled its slot (about 10 ms a parse) for as long. (A map that reads schema files is
    // parsed again: one of them may have changed.)
    if (text === this.current.text && !this.current.schemaFiles) {
      this.rejected = null;
      return { type: 'unchanged', epoch };
    }
    let next: FlotillaMap;
    try {
      const prepared = this.prepared;
      this.prepared = null;
      next = prepared?.text === text && !prepared.schemaFiles ? prepared : parseMap(text, this.file);
    } catch (err) {
      if (!(err instanceof FlotillaError)) throw err;
      const problems = err instanceof MapInvalidError ? err.problems : [{ path: '(file)', message: err.message }];
      return this.reject(err.code, epochIn(text), problems);
    }
    if (next.epoch === epoch && next.digest === this.current.digest) {
      this.rejected = null;
      return { type: 'unchanged', epoch };
    }
    const problems = [...this.editProblems(next), ...(check?.(next, this.current) ?? [])];
    if (problems.length > 0) return this.reject('MAP_INVALID', next.epoch, problems);
    const before = this.current;
    this.current = next;
    this.rejected = null;
    for (const listener of this.listeners) listener(next, before);
    return { type: 'applied', from: epoch, epoch: next.epoch };
  }

  private reject(code: ErrorCode, epoch: number | null, problems: MapProblem[]): ReloadOutcome {
    this.rejected = { file: this.file ?? '<map>', at: Date.now(), code, epoch, problems };
    return { type: 'rejected', epoch: this.current.epoch, rejection: this.rejected };
  }

  /** What makes a valid map an illegal edit of the map in force. */
  private editProblems(next: FlotillaMap): MapProblem[] {
    const problems = this.serverProblems(next);
    const was = this.current.epoch;
    if (next.epoch === was) {
      problems.push({ path: 'epoch', message: `is still ${was} but the map changed; raise the epoch on every edit` });
    } else if (next.epoch < was) {
      problems.push({ path: 'epoch', message: `is ${next.epoch}, lower than the epoch in force (${was}); raise the epoch on every edit` });
    }
    for (const s of diffMaps(this.current, next).streams) {
      const index = next.streams.findIndex((x) => x.name === s.stream);
      for (const p of s.problems) problems.push({ path: `streams[${index}].buckets`, message: p });
    }
    return problems;
  }

  private serverProblems(map: FlotillaMap): MapProblem[] {
    if (this.server === null || map.servers.some((s) => s.name === this.server)) return [];
    return [{ path: 'servers', message: `no server named "${this.server}" (the server this ${this.role} runs on); servers: ${map.servers.map((s) => s.name).join(', ')}` }];
  }
}

function isStore(source: FlotillaMap | MapStore): source is MapStore {
  return typeof (source as MapStore).read === 'function';
}

/** The epoch a map text states, if it can be found at all. */
function epochIn(text: string): number | null {
  const m = /^epoch:\s*(\d+)\s*(#.*)?$/m.exec(text);
  return m ? Number(m[1]) : null;
}
