/**
 * What a map edit does: for each stream, how many buckets change owner and between which
 * servers. `portalctl map diff` prints it; the control plane uses it to pause only what moves.
 */
import type { FlotillaMap } from './types';

/** Buckets of one stream moving from one server to another. */
export interface BucketMove {
  from: string;
  to: string;
  buckets: number;
}

export interface StreamDiff {
  stream: string;
  /** added: only in the new map; removed: only in the old; changed/same: in both. */
  change: 'added' | 'removed' | 'changed' | 'same';
  buckets: number;
  moved: number;
  moves: BucketMove[];
  /** Things about this stream that an operator must not do, such as change its bucket count. */
  problems: string[];
}

export interface MapDiff {
  fromEpoch: number;
  toEpoch: number;
  streams: StreamDiff[];
  /** Problems with the edit as a whole (epoch not raised, a stream's bucket count changed). */
  problems: string[];
}

export function diffMaps(before: FlotillaMap, after: FlotillaMap): MapDiff {
  const problems: string[] = [];
  if (after.epoch <= before.epoch) problems.push(`epoch must go up on every edit: was ${before.epoch}, now ${after.epoch}`);
  const streams: StreamDiff[] = [];
  for (const a of after.streams) {
    const b = before.streams.find((s) => s.name === a.name);
    if (!b) {
      streams.push({ stream: a.name, change: 'added', buckets: a.buckets, moved: 0, moves: [], problems: [] });
      continue;
    }
    const streamProblems: string[] = [];
    if (a.buckets !== b.buckets) {
      streamProblems.push(`bucket count changed from ${b.buckets} to ${a.buckets}; a stream's bucket count never changes once it exists`);
      streams.push({ stream: a.name, change: 'changed', buckets: a.buckets, moved: a.buckets, moves: [], problems: streamProblems });
      continue;
    }
    // Counted by server index (a matrix before x after), not by name: every process runs this
    // on each new map, at the moment the flow needs its CPU.
    const width = after.servers.length;
    const counts = new Uint32Array(before.servers.length * width);
    const same = before.servers.map((s) => after.servers.findIndex((x) => x.name === s.name));
    let moved = 0;
    for (let bucket = 0; bucket < a.buckets; bucket++) {
      const from = b.owner[bucket]!;
      const to = a.owner[bucket]!;
      if (same[from] === to) continue;
      moved++;
      counts[from * width + to]!++;
    }
    const moves: BucketMove[] = [];
    for (let i = 0; i < counts.length; i++) {
      if (counts[i]! > 0) moves.push({ from: before.servers[Math.floor(i / width)]!.name, to: after.servers[i % width]!.name, buckets: counts[i]! });
    }
    moves.sort((x, y) => y.buckets - x.buckets || x.from.localeCompare(y.from) || x.to.localeCompare(y.to));
    streams.push({ stream: a.name, change: moved > 0 ? 'changed' : 'same', buckets: a.buckets, moved, moves, problems: streamProblems });
  }
  for (const b of before.streams) {
    if (!after.streams.some((s) => s.name === b.name)) {
      streams.push({ stream: b.name, change: 'removed', buckets: b.buckets, moved: 0, moves: [], problems: [] });
    }
  }
  for (const s of streams) problems.push(...s.problems.map((p) => `${s.stream}: ${p}`));
  return { fromEpoch: before.epoch, toEpoch: after.epoch, streams, problems };
}
