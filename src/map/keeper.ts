/**
 * The map in force on an agent, and what an edit of the map file does to it. An edit is taken
 * only if it is a valid map that raises the epoch and is a legal change of the map in force
 * (this server is still in it, no stream's bucket count changed); anything else is rejected,
 * the map in force stays, and the rejection (every problem as `path: message`) is kept for
 * `status` until a later edit is taken or the file is put back.
 */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { type ErrorCode, FlotillaError, MapInvalidError, type MapProblem } from '../errors';
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

/** Holds the map in force for one server's agent. */
export class MapKeeper {
  private current: FlotillaMap;
  private canonical: string;
  private rejected: MapRejection | null = null;

  /** Loads the map at start-up; throws (MAP_INVALID, MAP_UNREADABLE, UNKNOWN_SERVER) if it cannot be used. */
  constructor(
    readonly file: string,
    readonly server: string,
  ) {
    const text = read(file);
    this.current = parseMap(text, file);
    const problems = this.serverProblems(this.current);
    if (problems.length > 0) throw new FlotillaError('UNKNOWN_SERVER', `${file}: ${problems[0]!.message}`);
    this.canonical = canonicalOf(text);
  }

  /** The map in force. */
  get map(): FlotillaMap {
    return this.current;
  }

  /** Why the last edit was rejected, or null if the file and the map in force agree. */
  get rejection(): MapRejection | null {
    return this.rejected;
  }

  /** Reads the file again and takes it, keeps the map in force, or rejects the edit. */
  reload(): ReloadOutcome {
    const epoch = this.current.epoch;
    let text: string;
    try {
      text = read(this.file);
    } catch (err) {
      return this.reject((err as FlotillaError).code, null, [{ path: '(file)', message: (err as Error).message }]);
    }
    let next: FlotillaMap;
    try {
      next = parseMap(text, this.file);
    } catch (err) {
      if (!(err instanceof FlotillaError)) throw err;
      const problems = err instanceof MapInvalidError ? err.problems : [{ path: '(file)', message: err.message }];
      return this.reject(err.code, epochIn(text), problems);
    }
    const canonical = canonicalOf(text);
    if (next.epoch === epoch && canonical === this.canonical) {
      this.rejected = null;
      return { type: 'unchanged', epoch };
    }
    const problems = this.editProblems(next);
    if (problems.length > 0) return this.reject('MAP_INVALID', next.epoch, problems);
    this.current = next;
    this.canonical = canonical;
    this.rejected = null;
    return { type: 'applied', from: epoch, epoch: next.epoch };
  }

  private reject(code: ErrorCode, epoch: number | null, problems: MapProblem[]): ReloadOutcome {
    this.rejected = { file: this.file, at: Date.now(), code, epoch, problems };
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
    if (map.servers.some((s) => s.name === this.server)) return [];
    return [{ path: 'servers', message: `no server named "${this.server}" (the server this agent runs on); servers: ${map.servers.map((s) => s.name).join(', ')}` }];
  }
}

function read(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new FlotillaError('MAP_UNREADABLE', `cannot read map ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** The map's content without comments and layout, so an edit of a comment is no change. */
function canonicalOf(text: string): string {
  return JSON.stringify(parse(text));
}

/** The epoch a map text states, if it can be found at all. */
function epochIn(text: string): number | null {
  const m = /^epoch:\s*(\d+)\s*(#.*)?$/m.exec(text);
  return m ? Number(m[1]) : null;
}
