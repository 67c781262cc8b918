/**
 * Handovers through etcd (the HandoverStore of an etcd map, handovers.ts): the old owner's agent
 * writes a drain record once its portal of a stream runs an epoch and has drained everything from
 * before it; the new owner's agent releases a hold once the record of the hold's epoch (or a later
 * one) exists. The records outlive every process, so a restart of either side in between changes
 * nothing: a new owner never takes a bucket before the old owner's record says it has drained it.
 *
 *   <prefix>/drains/<stream>/<old owner>/<epoch>          DrainRecord (written once, never changed)
 *   <prefix>/releases/<stream>/<new owner>/<epoch>/<from> ReleaseRecord
 */
import type { Etcd3 } from 'etcd3';
import { shortDigest } from '../map/digest';
import type { DrainRecord, EtcdKeys, ReleaseRecord } from '../map/etcd-keys';
import type { FlotillaMap } from '../map/types';
import { portalRequest } from '../portal/client';
import type { PortalBeacon } from '../protocol/beacons';
import type { DrainWord, HandoverStore, ReleaseNote } from './handovers';

export class EtcdHandovers implements HandoverStore {
  readonly kind = 'etcd' as const;
  /** stream/epoch pairs whose drain record is known to exist. */
  private readonly written = new Set<string>();

  constructor(
    private readonly client: Etcd3,
    private readonly keys: EtcdKeys,
    private readonly server: string,
    private readonly runDir: string,
    private readonly timeoutMs: number,
  ) {}

  async publish(beacons: PortalBeacon[], target: FlotillaMap, previous: FlotillaMap): Promise<void> {
    await Promise.all(
      beacons.map(async (b) => {
        const done = `${b.stream}/${b.epoch}`;
        if (this.written.has(done)) return;
        const r = await portalRequest(this.runDir, b.stream, { cmd: 'drained' }, this.timeoutMs);
        if (!r.drained || r.epoch !== b.epoch) return;
        const record: DrainRecord = { server: this.server, stream: b.stream, epoch: r.epoch, digest: r.digest, buckets: r.epoch === target.epoch ? givenUp(previous, target, b.stream, this.server) : [], drainedAt: Date.now() };
        const key = this.keys.drain(b.stream, this.server, r.epoch);
        // Written once: a restarted agent keeps the first record (and its time).
        await this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value(JSON.stringify(record))).commit();
        this.written.add(done);
      }),
    );
  }

  async drained(from: string, stream: string, epoch: number, digest: string): Promise<DrainWord> {
    // Records of this epoch and later only (keys sort by their padded epoch): asked every round while a hold waits.
    const all = this.keys.drainsOf(stream, from);
    const range = { start: this.keys.drain(stream, from, epoch), end: `${all.slice(0, -1)}${String.fromCharCode(all.charCodeAt(all.length - 1) + 1)}` };
    const records = Object.values(await this.client.getAll().inRange(range).strings()).map((v) => JSON.parse(v) as DrainRecord);
    const same = records.find((r) => r.epoch === epoch);
    if (same && same.digest !== digest) return { drained: false, reason: `${from}: its drain record of epoch ${epoch} is for map ${shortDigest(same.digest)}, not ${shortDigest(digest)}` };
    if (same || records.some((r) => r.epoch > epoch)) return { drained: true };
    const alive = (await this.client.get(this.keys.server(from)).string()) !== null;
    return {
      drained: false,
      reason: `${from}: no drain record of ${stream} for epoch ${epoch} in etcd yet${alive ? '; its portal is still draining or switching' : '; it holds no lease (its agent is down or cut off from etcd)'}`,
    };
  }

  async released(note: ReleaseNote): Promise<void> {
    const record: ReleaseRecord = { server: this.server, ...note, releasedAt: Date.now() };
    await this.client.put(this.keys.release(note.stream, this.server, note.epoch, note.from)).value(JSON.stringify(record));
  }
}

/** The buckets of `stream` that `server` owned in `before` and does not in `after`. */
function givenUp(before: FlotillaMap, after: FlotillaMap, stream: string, server: string): number[] {
  const a = before.streams.find((s) => s.name === stream);
  const b = after.streams.find((s) => s.name === stream);
  const i = before.servers.findIndex((s) => s.name === server);
  const j = after.servers.findIndex((s) => s.name === server);
  if (!a || !b || i < 0) return [];
  const out: number[] = [];
  for (let k = 0; k < a.owner.length && k < b.owner.length; k++) if (a.owner[k] === i && b.owner[k] !== j) out.push(k);
  return out;
}
