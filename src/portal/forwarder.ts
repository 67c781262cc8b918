/**
 * Re-guiding: after a map change, the spooled records of buckets this server gave up are sent to
 * their new owner (ids, timestamps and provenance kept), a round at a time. A round's cursor
 * moves only once the new owners have acknowledged all of it; a refused round is read again
 * later, so nothing is dropped. The new owner sees the forwarder's routing id (`fwd/<server>`)
 * and spools those records ahead of any it holds for the bucket, so per-key order holds.
 *
 *   spool (buckets owned elsewhere now) --read--> Sender (identity fwd/<server>) --> new owner's portal
 */
import type { CauseCounter, Logger } from '../log';
import type { MapKeeper } from '../map/keeper';
import { Sender } from '../sender/sender';
import { FORWARD_IDENTITY } from '../protocol/wire';
import type { ReadPos, Spool } from '../spool/spool';
import { REPLAY_BYTES } from './replay';
import type { Routing } from './router';

/** Bytes of spooled records forwarded to new owners before waiting for their ACKs. */
const FORWARD_ROUND_BYTES = 8 << 20;
/** After a forwarded batch was refused, how long before forwarding is tried again. */
const FORWARD_RETRY_MS = 1000;

export class Forwarder {
  private sender: Sender | null = null;
  private running: Promise<void> | null = null;
  private refusedRecords = 0;
  private closed = false;
  /** Spooled records forwarded so far. */
  forwarded = 0;

  constructor(
    private readonly spool: Spool,
    private readonly routing: Routing,
    /** The map's keeper (its file locates the new owners); null: the portal was given a map only. */
    private readonly keeper: MapKeeper | null,
    private readonly server: string,
    /** Moves the cursor past forwarded records, as a done delivery does. */
    private readonly commit: (marks: number[]) => void,
    private readonly causes: CauseCounter,
    private readonly log: Logger,
  ) {}

  /** True while a round is under way. */
  get busy(): boolean {
    return this.running !== null;
  }

  /** Buckets with records in the spool still to read that this server does not own. */
  foreignBuckets(): number[] {
    const out: number[] = [];
    if (this.spool.unreadTotal === 0) return out;
    const { routing, spool } = this;
    const buckets = routing.stream.buckets;
    for (let b = 0; b < buckets; b++) if (!routing.owns(b) && spool.unreadOf(b) > 0) out.push(b);
    return out;
  }

  /** Starts forwarding spooled records of buckets owned elsewhere now, unless it is under way. */
  start(): void {
    if (this.running || this.closed || this.foreignBuckets().length === 0) return;
    this.running = this.loop()
      .catch((err: unknown) => this.log.error({ err }, `portal ${this.routing.stream.name}: forwarding spooled records failed`))
      .finally(() => (this.running = null));
  }

  close(): void {
    this.closed = true;
    this.sender?.close();
  }

  private async loop(): Promise<void> {
    const spool = this.spool;
    const stream = this.routing.stream.name;
    if (!this.keeper || this.keeper.file === null) {
      this.causes.count('FORWARD_IMPOSSIBLE', 'spooled records belong to other servers, but this portal has no map file to find them');
      return;
    }
    this.sender ??= new Sender({
      map: this.keeper, // the portal's: a redirect's reload is the portal's too
      identity: `${FORWARD_IDENTITY}/${this.server}`,
      log: this.log,
      onError: (err, records) => {
        this.refusedRecords += records;
        this.causes.count('FORWARD_REFUSED', `the new owner refused ${records} forwarded records: ${err.code}: ${err.message}; they stay in the spool`);
      },
    });
    for (;;) {
      const buckets = this.foreignBuckets();
      if (buckets.length === 0 || this.closed) return;
      const marks: number[] = [];
      const from = new Map<number, ReadPos>();
      let bytes = 0;
      let records = 0;
      for (const b of buckets) {
        from.set(b, spool.readPos(b));
        for (let r = spool.read(b, REPLAY_BYTES); r; r = bytes < FORWARD_ROUND_BYTES ? spool.read(b, REPLAY_BYTES) : null) {
          this.sender.sendEnvelopes(stream, r.body, r.count);
          marks.push(b, r.gen, r.off, r.count);
          bytes += r.body.length;
          records += r.count;
        }
        if (bytes >= FORWARD_ROUND_BYTES) break;
      }
      const refused = this.refusedRecords;
      await this.sender.flush();
      if (this.closed) return;
      if (this.refusedRecords !== refused) {
        for (const [b, pos] of from) spool.restore(b, pos);
        await new Promise((r) => setTimeout(r, FORWARD_RETRY_MS));
        continue;
      }
      this.commit(marks);
      this.forwarded += records;
      this.log.info({ records, buckets: from.size }, `portal ${stream}: forwarded ${records} spooled records of ${from.size} buckets to their new owners`);
    }
  }
}
