/**
 * The portal's TCP socket, where senders connect: the ROUTER, its replies' way out, and what
 * bounds them (docs/security.md, "Limits").
 *
 * - ZeroMQ reads ahead at most RECEIVE_HWM whole messages per connection while the portal does
 *   not read (each up to 4 x max_batch_bytes); a sender's window waits in its own TCP buffers.
 * - Replies wait in ZeroMQ up to max_unread_replies per connection (the send high-water mark,
 *   with `mandatory`, so one past it fails at once instead of vanishing unseen). A connection
 *   found not reading has its replies dropped without trying for MUTE_MS (counted, REPLIES_DROPPED):
 *   a flood of replies to it costs no failed send each.
 * - `reset` drops every connection (the memory guard's last resort, limits.ts).
 */
import * as zmq from 'zeromq';
import type { CauseCounter, Logger } from '../log';
import { bindNamed } from '../transport/bind';
import { Outbox } from '../transport/outbox';

/** Whole messages ZeroMQ reads ahead per sender connection while the portal does not read. */
export const RECEIVE_HWM = 4;
/** How long replies to a connection that did not read are dropped without trying, ms. */
const MUTE_MS = 1000;
/** The kernel's send buffer of a sender connection (SO_SNDBUF), which only replies use. */
const REPLY_BUFFER_BYTES = 64 * 1024;
/** How long a reset waits for the port to be free again before it gives up (logged). */
const REBIND_MS = 5000;

export class IngressSocket {
  /** Replies dropped: their connection had max_unread_replies unread (REPLIES_DROPPED). */
  repliesDropped = 0;
  /** The ROUTER now (a new one after each `reset`). */
  socket: zmq.Router;
  private out: Outbox;
  /** Connections found not reading, by routing id: until when their replies are dropped. */
  private readonly muted = new Map<string, number>();
  /** The endpoint bound (its port resolved), bound again by `reset`. */
  private endpoint = '';
  private closed = false;
  private prepare: ((socket: zmq.Router) => Promise<unknown>) | null = null;

  constructor(
    private readonly maxBatchBytes: number,
    private readonly maxUnreadReplies: number,
    private readonly causes: CauseCounter,
    private readonly log: Logger,
  ) {
    this.socket = this.makeSocket();
    this.out = this.makeOutbox();
  }

  /**
   * Binds the TCP endpoint; returns the port bound. `prepare` sets a socket up before it binds
   * (CURVE, ZAP and the connection cap: src/transport/curve.ts), this one and each of `reset`.
   */
  async bind(endpoint: string, fallbackPort: number, prepare?: (socket: zmq.Router) => Promise<unknown>): Promise<number> {
    this.prepare = prepare ?? null;
    await this.prepare?.(this.socket);
    await bindNamed(this.socket, endpoint, 'the portal');
    const port = Number(/:(\d+)$/.exec(this.socket.lastEndpoint ?? '')?.[1] ?? fallbackPort);
    this.endpoint = endpoint.replace(/:(\*|\d+)$/, `:${port}`);
    return port;
  }

  /** Queues a reply, unless its connection was found not reading lately (then it is dropped, counted). */
  reply(msg: Buffer[]): void {
    if (this.muted.size > 0) {
      const key = msg[0]!.toString('latin1');
      const until = this.muted.get(key);
      if (until !== undefined) {
        if (performance.now() < until) return void this.repliesDropped++;
        this.muted.delete(key);
      }
    }
    this.out.push(msg);
  }

  /** Replies queued and not yet handed to the socket. */
  get unsent(): number {
    return this.out.length;
  }

  /**
   * Drops every sender connection: the socket is closed, which makes libzmq free what the
   * connections held, and a new one (`socket` from now on) binds the same port. Senders
   * reconnect and send again what was not acknowledged; the ACKs of batches accepted before
   * reach a sender that is back by then. Resolves once bound again (or given up, logged).
   */
  async reset(): Promise<void> {
    if (this.closed) return;
    const old = this.socket;
    this.out.close();
    this.socket = this.makeSocket();
    this.out = this.makeOutbox();
    old.close();
    await this.prepare?.(this.socket);
    const deadline = performance.now() + REBIND_MS;
    for (;;) {
      try {
        await this.socket.bind(this.endpoint);
        return;
      } catch (err) {
        // libzmq closes the old listener on its own thread: the port is free a moment later.
        if (this.closed) return;
        if (performance.now() > deadline) return this.log.error({ err, endpoint: this.endpoint }, `portal: could not bind ${this.endpoint} again after dropping every sender connection`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** Resolves once the replies queued are handed to the socket, or after `ms`. */
  async handedOver(ms: number): Promise<void> {
    const deadline = performance.now() + ms;
    while (this.out.length > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  }

  /** Closes; ZeroMQ may send what it holds for `lingerMs` more. */
  close(lingerMs = 0): void {
    this.closed = true;
    this.out.close();
    this.socket.linger = lingerMs;
    this.socket.close();
  }

  private makeSocket(): zmq.Router {
    // A frame up to 4x the batch limit is read and answered TOO_LARGE; beyond that libzmq drops
    // the connection without reading it. `mandatory` with no send timeout: a reply to a
    // connection with max_unread_replies unread fails at once (EAGAIN), and one to a connection
    // that is gone fails too (EHOSTUNREACH, dropped as before).
    return new zmq.Router({
      linger: 0,
      receiveHighWaterMark: RECEIVE_HWM,
      sendHighWaterMark: this.maxUnreadReplies,
      // Replies are small: this is plenty, and keeps a connection that does not read from
      // parking megabytes in the kernel.
      sendBufferSize: REPLY_BUFFER_BYTES,
      mandatory: true,
      sendTimeout: 0,
      maxMessageSize: 4 * this.maxBatchBytes + 65536,
    });
  }

  private makeOutbox(): Outbox {
    return new Outbox('portal:ingress', this.socket, (err, msg) => {
      const code = (err as { code?: string }).code;
      if (code === 'EHOSTUNREACH') return; // the sender left; it sends again what it was owed
      if (code !== 'EAGAIN') return this.causes.count('REPLY_FAILED', err.message);
      this.repliesDropped++;
      this.muted.set(msg[0]!.toString('latin1'), performance.now() + MUTE_MS);
      this.causes.count('REPLIES_DROPPED', `a sender connection has ${this.maxUnreadReplies} replies unread (max_unread_replies): its replies are dropped for ${MUTE_MS} ms`);
    });
  }
}
