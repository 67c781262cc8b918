/**
 * The map portalctl's commands read through `--map` (or $FLOTILLA_MAP): a file, read when asked,
 * or an etcd prefix, read once before the command runs (`preloadMap`, a commander hook), so the
 * commands' synchronous code reads either the same way (`readMap`).
 */
import type { Command } from 'commander';
import { loadMap, parseMap } from '../src/map/load';
import { readMapOnce } from '../src/map/store-etcd';
import { isEtcdSource } from '../src/map/store';
import type { FlotillaMap } from '../src/map/types';

/** Where the map is when neither --map nor $FLOTILLA_MAP says. */
export const DEFAULT_MAP_FILE = '/etc/flotilla/map.yaml';

const loaded = new Map<string, FlotillaMap | Error>();

/** The map source a command names: --map, else $FLOTILLA_MAP, else the default file. */
export function sourceOf(map: string | undefined): string {
  return map ?? process.env.FLOTILLA_MAP ?? DEFAULT_MAP_FILE;
}

/** Reads an etcd map once (a failure is kept, and thrown by readMap when the command needs the map). */
export async function preloadMap(source: string): Promise<void> {
  if (!isEtcdSource(source) || loaded.has(source)) return;
  try {
    loaded.set(source, parseMap(await readMapOnce(source), source));
  } catch (err) {
    loaded.set(source, err as Error);
  }
}

/** The map at `source`: a file read now, or the etcd map preloaded. Throws as loadMap does. */
export function readMap(source: string): FlotillaMap {
  if (!isEtcdSource(source)) return loadMap(source);
  const m = loaded.get(source);
  if (m === undefined) throw new Error(`${source}: not read before the command (a bug)`);
  if (m instanceof Error) throw m;
  return m;
}

/** Before every command: reads an etcd map named by its --map (or $FLOTILLA_MAP). */
export function preloadHook(program: Command): void {
  program.hook('preAction', async (_program, action) => {
    const o = action.opts<{ map?: string }>();
    if (typeof o.map === 'string' || process.env.FLOTILLA_MAP) await preloadMap(sourceOf(o.map));
  });
}
