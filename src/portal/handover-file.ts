/**
 * A portal's handover file: the map it runs (its text, epoch and digest), the buckets it holds
 * for their old owners, and releases kept for a switch not yet made. Written (to a temporary
 * file, synced, renamed over the old one) before a switch or a release takes effect, so a portal
 * that restarts, even with kill -9, comes back on the map it ran and holds what it held:
 *
 *   <run_dir>/<stream>.handover.json   {"epoch": 2, "digest": "...", "text": "...", "holds": [...], "early": [...]}
 *
 * At start, `chooseStartMap` decides which map the portal runs: the map file's, or the one it ran
 * before if that is older (the agent then carries it forward with a switch and its holds) and the
 * portal can be switched from it in place.
 */
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../atomic-file';
import type { Logger } from '../log';
import { parseMap } from '../map/load';
import type { FlotillaMap } from '../map/types';
import { handoverFile } from '../protocol/endpoints';
import type { EarlyRelease, HeldBuckets } from './holds';
import { planSwitch } from './switch-plan';
import { slotCount } from '../map/lookup';

/** What the file holds. */
export interface HandoverState {
  epoch: number;
  digest: string;
  /** The map's text as read from its file. */
  text: string;
  holds: HeldBuckets[];
  early: EarlyRelease[];
}

export class HandoverFile {
  readonly path: string;

  constructor(runDir: string, stream: string) {
    this.path = handoverFile(runDir, stream);
  }

  /** The state kept, or null if there is none (or it cannot be read: logged). */
  load(log: Logger): HandoverState | null {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch {
      return null;
    }
    try {
      const s = JSON.parse(text) as HandoverState;
      if (typeof s.epoch !== 'number' || typeof s.text !== 'string' || !Array.isArray(s.holds) || !Array.isArray(s.early)) throw new Error('fields missing');
      return s;
    } catch (err) {
      log.warn({ file: this.path }, `${this.path}: cannot read the handover state (${(err as Error).message}); starting from the map file`);
      return null;
    }
  }

  /** Writes `state` so that a crash leaves the old file or the new one, never half of one. */
  save(state: HandoverState): void {
    writeFileAtomic(this.path, JSON.stringify(state));
  }
}

/** The map a portal starts on, and the holds it restores (empty when it starts on the file's map). */
export interface StartMap {
  map: FlotillaMap;
  holds: HeldBuckets[];
  early: EarlyRelease[];
  /** Said in the log when the portal does not simply start on the map file. */
  note: string | null;
}

/**
 * Which map `server`'s portal of `stream` starts on: the map it ran before (`state`) when that is
 * the file's map or an older one it can switch from in place (so the move of its buckets is a
 * handover with holds, not a jump); else the file's map.
 */
export function chooseStartMap(file: FlotillaMap, state: HandoverState | null, server: string, stream: string): StartMap {
  const fresh: StartMap = { map: file, holds: [], early: state?.early ?? [], note: null };
  if (!state) return fresh;
  if (state.digest === file.digest) return { map: file, holds: state.holds, early: state.early, note: null };
  let ran: FlotillaMap;
  try {
    ran = parseMap(state.text, `${file.file} (as of epoch ${state.epoch})`);
  } catch (err) {
    return { ...fresh, note: `the map it ran before cannot be read again (${(err as Error).message}); starting at epoch ${file.epoch}` };
  }
  if (ran.epoch >= file.epoch) {
    return { ...fresh, note: `it ran epoch ${ran.epoch} before, but ${file.file} is at epoch ${file.epoch}; starting on the file` };
  }
  const before = ran.streams.find((s) => s.name === stream);
  const self = ran.servers.find((s) => s.name === server);
  if (!before || !self) return { ...fresh, note: `it was not in the map it ran before (epoch ${ran.epoch}); starting at epoch ${file.epoch}` };
  try {
    planSwitch(ran, before, server, slotCount(self, before), file);
  } catch (err) {
    return { ...fresh, holds: [], note: `epoch ${file.epoch} cannot be switched to in place from epoch ${ran.epoch} (${(err as Error).message}); starting at epoch ${file.epoch}` };
  }
  return { map: ran, holds: state.holds, early: state.early, note: `back on epoch ${ran.epoch}, the map it ran before; its agent carries it to epoch ${file.epoch}` };
}
