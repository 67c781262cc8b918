/**
 * Which spool a portal opens: the stream's, as the map sets it (the portal's --spool-dir first),
 * or none. A stream whose spool was turned off may still have records on disk: they are
 * acknowledged, so this run replays them, as with spill, rather than strand them.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { CauseCounter, Logger } from '../log';
import type { MapStream } from '../map/types';
import { Spool } from '../spool/spool';

/** The spool of `stream` on `server`, or null when it has none (and nothing left on disk). */
export function openPortalSpool(stream: MapStream, server: string, spoolDir: string | undefined, log: Logger, causes: CauseCounter): Spool | null {
  const settings = { ...stream.spool, dir: spoolDir ?? stream.spool.dir };
  const dir = join(settings.dir, server, stream.name);
  const leftOver = settings.mode === 'off' && hasSegments(dir);
  if (settings.mode === 'off' && !leftOver) return null;
  if (leftOver) log.warn({ dir }, `portal ${stream.name}: the stream's spool is off, but its spool directory holds records; this run replays them (as spill)`);
  const count = (cause: string, example: string) => causes.count(cause, example);
  return new Spool({ ...settings, mode: leftOver ? 'spill' : settings.mode }, server, stream.name, stream.buckets, log, count);
}

/** True if `dir` exists and holds spool segment files. */
function hasSegments(dir: string): boolean {
  try {
    return readdirSync(dir).some((n) => n.endsWith('.seg'));
  } catch {
    return false;
  }
}
