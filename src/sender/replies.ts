/**
 * The reply state machine of one channel and the resend rule (docs/protocol.md, "ERROR" and
 * "Reconnects and resending"):
 *
 *   ACK              settled; ends a pause (a lagging portal's pause only with its own batch's ACK)
 *   PAUSED           hold the batch, pause the channel, probe with the oldest held batch each second
 *   RESEND           hold it; send every held batch again at once unless paused
 *   WRONG_OWNER      take a newer map if there is one, then: the portal is behind -> send it there
 *                    again after 200 ms, nothing newer before it; our map is behind -> try again in
 *                    200 ms; else route its records again by our map (and, if the portal is behind
 *                    and so owed the batch, settle the debt with an empty batch of its seq)
 *   MISROUTED        our hash or map differs from the portal's at the same epoch: refused for good
 *   WINDOW_EXCEEDED  send it again after 200 ms
 *   anything else    refused for good (onError)
 *   RESUME           send every held batch again, oldest first, then carry on
 *   disconnect       drop the socket, connect a new one, send nothing meanwhile
 *   reconnect        send every unacknowledged batch again, oldest first, then carry on
 *
 * What a settled batch means to the rest of the sender (barrier, waiters) and how records are
 * routed again are the host's, passed in as `ReplyHost`.
 *
 * Named hook: `flotilla:sender:ack` ({ stream, server, seq, count, at }, a `SenderBatchEvent`)
 * when a batch's ACK arrives, just before the host's `acked` (the sender's `onAck`), published
 * only while someone subscribes (bench/tail/).
 */
import { channel as hook } from 'node:diagnostics_channel';
import { WireError } from '../errors';
import type { Logger } from '../log';
import { decodeHeader, MessageType, readCountFrame } from '../protocol/wire';
import type { Channel, OutBatch, SenderBatchEvent } from './channel';

const REDIRECT_RETRY_MS = 200;
const PAUSE_PROBE_MS = 1000;

const ackHook = hook('flotilla:sender:ack');

/** What the reply state machine needs of the sender. */
export interface ReplyHost {
  /** True once the sender is closed: loops and timers stop. */
  readonly closed: boolean;
  readonly stats: { acked: number; refused: number; redirects: number; resent: number; disconnects: number };
  readonly log: Logger;
  /** A batch of `count` records was acknowledged `ms` after it was (last) sent. */
  /** `cancelled`: records of the batch dropped by a cancellation (the ACK's second frame). */
  acked(count: number, ms: number, cancelled: number): void;
  /** A batch was refused for good. */
  refused(err: WireError, count: number): void;
  /**
   * A portal at map epoch `portalEpoch` redirected a batch: takes a newer map if one has reached
   * the sender, and returns the epoch of the map the sender now routes by.
   */
  catchUp(portalEpoch: number): number;
  /** True if, by the sender's map, every record of `batch` belongs to the channel's server. */
  ownsAll(ch: Channel, batch: OutBatch): boolean;
  /** Routes the records of `batch`, which has left `ch`, again by the sender's map, and sends them. */
  reroute(ch: Channel, batch: OutBatch): void;
  /** Some batch of `ch` settled, or its pause ended: send what may go, release what may. */
  settled(ch: Channel): void;
}

/** Handles what each channel's portal answers and what its connection does. */
export class Replies {
  constructor(private readonly host: ReplyHost) {}

  /** Starts handling the replies and connection events of a new channel. */
  listen(ch: Channel): void {
    void this.receiveLoop(ch);
    void this.watchConnection(ch);
  }

  private async receiveLoop(ch: Channel): Promise<void> {
    while (!this.host.closed) {
      let msg: Buffer[];
      try {
        msg = await ch.socket.receive();
      } catch {
        if (this.host.closed) return;
        continue;
      }
      const header = decodeHeader(msg[0]);
      if (!header) continue;
      if (header.type === MessageType.RESUME) {
        this.resume(ch);
        continue;
      }
      const batch = ch.inflight.get(header.seq);
      if (!batch) continue; // a reply to a batch already settled (we resent it)
      if (header.type === MessageType.ACK) {
        ch.inflight.delete(header.seq);
        // An ACK ends a pause, unless the pause waits for one batch in particular (a lagging
        // portal): then only that batch's ACK does, so nothing newer gets there before it.
        if (ch.paused && (ch.waitFor === 0 || ch.waitFor === header.seq)) this.resume(ch);
        this.host.stats.acked += batch.count;
        // A second frame: records of the batch dropped by a cancellation, not processed.
        const cancelled = readCountFrame(msg[1]);
        if (ackHook.hasSubscribers) {
          ackHook.publish({ stream: ch.stream.name, server: ch.server, seq: header.seq, count: batch.count, at: performance.now() } satisfies SenderBatchEvent);
        }
        this.host.acked(batch.count, performance.now() - batch.sentAt, cancelled);
      } else if (header.type === MessageType.ERROR) {
        const err = WireError.parse(msg[1]?.toString() ?? '', msg[2]?.toString() ?? '', header.epoch);
        this.refused(ch, batch, err);
      }
      this.host.settled(ch);
    }
  }

  private refused(ch: Channel, batch: OutBatch, err: WireError): void {
    if (err.code === 'PAUSED') {
      batch.held = true;
      if (!ch.paused) {
        this.host.log.info({ endpoint: ch.endpoint }, `sender: ${ch.stream.name} on ${ch.server} is paused; holding batches`);
        // Should RESUME be lost, a held batch sent now and then finds out.
        ch.pauseAndProbe(PAUSE_PROBE_MS);
      }
    } else if (err.code === 'RESEND') {
      // An earlier batch refused during a pause must reach the portal first.
      batch.held = true;
      if (!ch.paused) ch.resendHeld();
    } else if (err.code === 'WRONG_OWNER') {
      ch.inflight.delete(batch.seq);
      this.host.stats.redirects++;
      this.redirect(ch, batch, err.epoch);
    } else if (err.code === 'WINDOW_EXCEEDED') {
      // Only after a reconnect resent more than the window; send again once acks arrive.
      setTimeout(() => ch.inflight.has(batch.seq) && ch.transmit(batch), REDIRECT_RETRY_MS).unref();
    } else {
      ch.inflight.delete(batch.seq);
      this.host.stats.refused += batch.count;
      this.host.refused(err, batch.count);
      if (ch.waitFor === batch.seq) this.resume(ch);
    }
  }

  /** A batch that left `ch` redirected: hold it and try again, or route its records again. */
  private redirect(ch: Channel, batch: OutBatch, portalEpoch: number): void {
    const epoch = this.host.catchUp(portalEpoch);
    const stillOurs = epoch >= portalEpoch && this.host.ownsAll(ch, batch);
    if (epoch < portalEpoch || stillOurs) {
      // Either the new map has not reached us yet, or the portal has not caught up with ours
      // (our map still sends these records to it): hold the batch and try again shortly. Until
      // it is accepted, nothing newer goes to that portal, so nothing overtakes it.
      ch.inflight.set(batch.seq, batch);
      if (stillOurs) {
        ch.paused = true;
        ch.waitFor = batch.seq;
      }
      setTimeout(() => {
        if (!ch.inflight.has(batch.seq) || this.host.closed) return;
        if (stillOurs) ch.transmit(batch);
        else {
          ch.inflight.delete(batch.seq);
          this.redirect(ch, batch, portalEpoch);
        }
      }, REDIRECT_RETRY_MS).unref();
      return;
    }
    // The batch leaves this channel: a pause that waited for it has nothing left to wait for,
    // and a portal behind the batch's map, which holds it owed, is told it will not come back.
    if (batch.epoch > portalEpoch) ch.forgo(batch.seq, batch.epoch);
    if (ch.waitFor === batch.seq) this.resume(ch);
    this.host.reroute(ch, batch);
  }

  /** The portal resumed: send every held batch again, oldest first, then carry on. */
  private resume(ch: Channel): void {
    if (ch.paused) this.host.log.info({ endpoint: ch.endpoint }, `sender: ${ch.stream.name} on ${ch.server} resumed`);
    ch.unpause();
    this.host.settled(ch);
  }

  /**
   * Watches the connection: a disconnect renews the socket (channel.ts), and once the new one
   * connects every unacknowledged batch goes again, in order, before anything newer.
   */
  private async watchConnection(ch: Channel): Promise<void> {
    while (!this.host.closed) {
      const events = ch.events;
      try {
        for await (const event of events) {
          if (this.host.closed) return;
          if (event.type === 'disconnect') {
            this.host.stats.disconnects++;
            ch.renew();
            break;
          }
          if (event.type === 'connect' && ch.disconnected) {
            const lost = ch.reconnected();
            this.host.stats.resent += lost.length;
            this.host.log.info({ endpoint: ch.endpoint, batches: lost.length }, `sender: reconnected to ${ch.endpoint}, resending ${lost.length} batches`);
            this.host.settled(ch);
          }
        }
      } catch {
        // the observer of a closed socket
      }
      if (ch.events === events) return; // closed, not renewed
    }
  }
}
