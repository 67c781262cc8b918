/** Maps and checks for the tests of the disk spool. */
import { bucketOf, slotOf } from '../../src/map/bucket';
import type { FlotillaMap } from '../../src/map/types';
import { readRecorded } from './flows';

/** A one-server map with stream `orders` (4 slots) whose spool is set by `spool`. */
export function spoolMap(port: number, spool: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    instance: 'test',
    epoch: 1,
    heartbeat_ms: 200,
    servers: [{ name: 'solo', host: '127.0.0.1' }],
    streams: [
      {
        name: 'orders',
        key: 'key',
        port,
        buckets: 64,
        slots: 4,
        schema: { type: 'record', name: 'Order', fields: [{ name: 'key', type: 'string' }, { name: 'seq', type: 'long' }] },
        spool,
      },
    ],
    ...extra,
  };
}

export interface AtLeastOnce {
  /** Records processed more than once, counted once per extra copy. */
  duplicates: number;
  /** Each problem found: a record missing, or at the wrong slot. */
  problems: string[];
  /** Keys whose records were first processed out of order, with an example each. */
  outOfOrder: string[];
}

/**
 * Checks the at-least-once promise: every record k<key>#<seq> for seq < rounds was processed, by
 * the slot that owns its key. Duplicates are counted, and keys whose records were first seen out
 * of order listed.
 */
export function checkAtLeastOnce(map: FlotillaMap, stream: string, files: string[], keys: number, rounds: number): AtLeastOnce {
  const s = map.streams.find((x) => x.name === stream)!;
  const problems: string[] = [];
  const outOfOrder: string[] = [];
  const seen = new Set<string>();
  const high = new Map<string, number>();
  let duplicates = 0;
  for (const r of readRecorded(files)) {
    const id = `${r.key}#${r.seq}`;
    if (seen.has(id)) {
      duplicates++;
      continue;
    }
    seen.add(id);
    const want = slotOf(bucketOf(r.key, s.buckets), s.slots);
    if (r.slot !== want && problems.length < 20) problems.push(`${id} processed by slot ${r.slot}, owner is slot ${want}`);
    const prev = high.get(r.key) ?? -1;
    if (r.seq !== prev + 1 && outOfOrder.length < 20) outOfOrder.push(`${r.key}: first saw seq ${r.seq} after ${prev}`);
    high.set(r.key, Math.max(prev, r.seq));
  }
  for (let k = 0; k < keys; k++) {
    for (let q = 0; q < rounds; q++) if (!seen.has(`k${k}#${q}`) && problems.length < 20) problems.push(`k${k}#${q} never processed`);
  }
  return { duplicates, problems, outOfOrder };
}
