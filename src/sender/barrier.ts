/**
 * The map-change barrier: after the sender takes a new map, no record may overtake an older
 * record of its key, wherever the key now goes. Any batch routed under the previous map may still
 * come back redirected, and its records must then go first; so a record waits while the channel
 * its key went to under the previous map has batches from before the change unsettled.
 *
 *   map changes: mark each channel's last batch   record of key k: old owner's channel marked?
 *                                                    no  -> route by the new map at once
 *                                                    yes -> park it for that channel
 *   a channel's batches up to its mark settle: release its parked records, in order (routed by
 *   the new map); the barrier ends when no marked channel is left.
 *
 * A record whose key did not move waits too while its channel is marked: a redirected batch of
 * that channel is routed again behind it otherwise. The barrier knows channels only through
 * `BarrierChannel`, so it can be tested with plain objects.
 */
import { ownerOfKey } from '../map/route';
import type { FlotillaMap, MapStream } from '../map/types';
import { EnvelopeWriter } from '../protocol/envelope';

/** What the barrier needs of a channel. */
export interface BarrierChannel {
  /** The order the channel's next closed batch gets (so `nextOrder - 1` is its last one). */
  readonly nextOrder: number;
  /** Order of the channel's oldest batch not yet settled, or Infinity. */
  lowestUnsettled(): number;
}

/** Finds the channel of `stream` on the server named `server`, if the sender has one. */
export type ChannelLookup<C> = (stream: string, server: string) => C | undefined;

/** Called with the records parked for a channel once they may go: `count` envelopes in `body`. */
export type Release<C> = (ch: C, body: Buffer, count: number) => void;

/** A barrier that is up: the map before the change, the marked channels, the parked records. */
export class Barrier<C extends BarrierChannel> {
  /** Per channel: the order of its last batch routed under `before`. */
  private readonly marks = new Map<C, number>();
  /** Per channel: records that wait for it, in the order they were sent. */
  private readonly parked = new Map<C, EnvelopeWriter>();

  private constructor(
    /** The map in force before the first change this barrier covers. */
    readonly before: FlotillaMap,
    private readonly channelOf: ChannelLookup<C>,
  ) {}

  /**
   * The barrier once the map changes away from `before`: `up` (the barrier already up, which
   * keeps its older `before`) or a new one, with every channel in `channels` that has closed a
   * batch marked at its last batch. The caller closes each channel's open batch first, so all
   * routed so far is marked.
   */
  static raise<C extends BarrierChannel>(up: Barrier<C> | null, before: FlotillaMap, channels: Iterable<C>, channelOf: ChannelLookup<C>): Barrier<C> {
    const b = up ?? new Barrier(before, channelOf);
    for (const ch of channels) if (ch.nextOrder > 0) b.marks.set(ch, ch.nextOrder - 1);
    return b;
  }

  /** Channels whose batches from before the change are not all settled yet. */
  get waiting(): number {
    return this.marks.size;
  }

  /**
   * The channel a record of `key` in stream `s` (of the new map) must wait for, or null to send
   * it now: the channel its key went to under `before`, while that channel is marked.
   */
  waitOn(s: MapStream, key: string): C | null {
    const old = this.before.streams.find((x) => x.name === s.name);
    // A stream that is new, or whose buckets changed, has no old owner to wait for.
    if (!old || old.buckets !== s.buckets) return null;
    const oldOwner = this.before.servers[ownerOfKey(old, key)]!.name;
    const ch = this.channelOf(s.name, oldOwner);
    return ch !== undefined && this.marks.has(ch) ? ch : null;
  }

  /** The writer that parks records waiting for `ch`; append to it. */
  park(ch: C): EnvelopeWriter {
    let w = this.parked.get(ch);
    if (!w) this.parked.set(ch, (w = new EnvelopeWriter()));
    return w;
  }

  /** True if the records parked for some channel take more than `bytes`. */
  parkedOver(bytes: number): boolean {
    for (const w of this.parked.values()) if (w.size > bytes) return true;
    return false;
  }

  /**
   * Releases, channel by channel, the records parked for each marked channel whose batches up to
   * its mark are all settled, and unmarks it. Returns true when no marked channel is left: the
   * barrier is over.
   */
  release(send: Release<C>): boolean {
    for (const [ch, mark] of this.marks) {
      if (ch.lowestUnsettled() <= mark) continue;
      this.marks.delete(ch);
      const w = this.parked.get(ch);
      this.parked.delete(ch);
      if (w && w.count > 0) {
        const count = w.count;
        send(ch, w.take(), count);
      }
    }
    return this.marks.size === 0;
  }
}
