/** Maps and checks shared by the end-to-end tests. */
import { readFileSync, existsSync } from 'node:fs';
import { bucketOf, slotOf } from '../../src/map/bucket';
import type { Sender } from '../../src/sender/sender';
import type { FlotillaMap } from '../../src/map/types';

export const RECORD_SCHEMA = (name: string) => ({
  type: 'record',
  name,
  fields: [
    { name: 'key', type: 'string' },
    { name: 'seq', type: 'long' },
  ],
});

/** A one-server map with streams `orders` and `audits`, 4 slots each, on the given ports. */
export function twoStreamMap(ports: number[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    instance: 'test',
    epoch: 1,
    servers: [{ name: 'solo', host: '127.0.0.1' }],
    streams: [
      { name: 'orders', key: 'key', port: ports[0], buckets: 256, slots: 4, schema: RECORD_SCHEMA('Order') },
      { name: 'audits', key: 'key', port: ports[1], buckets: 256, slots: 4, schema: RECORD_SCHEMA('Audit') },
    ],
    ...extra,
  };
}

export interface Seen {
  slot: number;
  key: string;
  seq: number;
  pid: number;
  /** When it was processed, ms since the Unix epoch (fractional). */
  at: number;
}

/** Reads the per-record lines the recorder component wrote. */
export function readRecorded(files: string[]): Seen[] {
  const out: Seen[] = [];
  for (const f of files) {
    if (!existsSync(f)) continue;
    for (const line of readFileSync(f, 'utf8').split('\n')) {
      if (!line) continue;
      const [slot, key, seq, pid, at] = line.split('\t');
      out.push({ slot: Number(slot), key: key!, seq: Number(seq), pid: Number(pid), at: Number(at) });
    }
  }
  return out;
}

/**
 * Checks what a user would: every (key, seq) sent was processed exactly once, by the slot that
 * owns its key, and in order per key. Returns a list of problems (empty when all is well).
 */
export function checkExactlyOnceInOrder(map: FlotillaMap, stream: string, files: string[], keys: number, perKey: number): string[] {
  const s = map.streams.find((x) => x.name === stream)!;
  const problems: string[] = [];
  const count = new Map<string, number>();
  const last = new Map<string, number>();
  for (const file of files) {
    last.clear();
    for (const r of readRecorded([file])) {
      const id = `${r.key}#${r.seq}`;
      count.set(id, (count.get(id) ?? 0) + 1);
      const want = slotOf(bucketOf(r.key, s.buckets), s.slots);
      if (r.slot !== want && problems.length < 20) problems.push(`${stream}: ${id} processed by slot ${r.slot}, owner is slot ${want}`);
      const prev = last.get(r.key) ?? -1;
      if (r.seq <= prev && problems.length < 20) problems.push(`${stream}: ${r.key} seq ${r.seq} after ${prev}`);
      last.set(r.key, r.seq);
    }
  }
  for (let k = 0; k < keys; k++) {
    for (let q = 0; q < perKey; q++) {
      const n = count.get(`k${k}#${q}`) ?? 0;
      if (n !== 1 && problems.length < 20) problems.push(`${stream}: k${k}#${q} processed ${n} times`);
    }
  }
  if (count.size !== keys * perKey && problems.length < 20) problems.push(`${stream}: ${count.size} distinct records, want ${keys * perKey}`);
  return problems;
}

/**
 * A steady load for tests: rounds of one record per key (`k0`..`k<keys-1>`, seq = round number)
 * until `stop()`, with `pauseMs` between rounds; while the sender's window is full it waits, so a
 * paused or slow portal slows it down instead of filling memory.
 */
export class RoundLoad {
  /** Rounds sent so far: every key has records with seq 0..rounds-1. */
  rounds = 0;
  private sending = true;
  private readonly done: Promise<void>;

  constructor(sender: Sender, stream: string, readonly keys: number, pauseMs: number) {
    this.done = (async () => {
      while (this.sending) {
        for (let k = 0; k < keys; k++) sender.send(stream, { key: `k${k}`, seq: this.rounds });
        this.rounds++;
        await sender.writable();
        await new Promise((r) => setTimeout(r, pauseMs));
      }
    })();
  }

  /** Records sent so far. */
  get sent(): number {
    return this.rounds * this.keys;
  }

  /** Stops after the round in progress; resolves when the loop has ended (rejects if it failed). */
  stop(): Promise<void> {
    this.sending = false;
    return this.done;
  }
}
