/**
 * zeromq.js allows one pending send per socket (a second throws EBUSY). An Outbox owns a socket's
 * sending side: callers `push` messages without awaiting, and one loop sends them in order.
 *
 * Named hook: `flotilla:outbox:send` ({ outbox, msg, at }, an `OutboxSend`) just before each
 * message is handed to `socket.send`, published only while someone subscribes (bench/tail/).
 */
import { channel } from 'node:diagnostics_channel';
import type { Writable } from 'zeromq';

type Message = Buffer[];

/** The message of `flotilla:outbox:send`: a message is about to be handed to the socket. */
export interface OutboxSend {
  /** The outbox's name: 'portal:ingress', 'portal:egress', 'component', 'sender', 'control'. */
  outbox: string;
  /** The frames, as pushed (not to be changed or kept by a subscriber). */
  msg: Message;
  /** performance.now() just before `socket.send` is called, ms. */
  at: number;
}

const sendChannel = channel('flotilla:outbox:send');

export class Outbox {
  private queue: Message[] = [];
  private head = 0;
  private running = false;
  private closed = false;

  constructor(
    /** Names the outbox in `flotilla:outbox:send` messages (which socket a message left by). */
    readonly name: string,
    private readonly socket: Writable,
    /** A send failed: the error, and the message that was not sent. */
    private readonly onError: (err: Error, msg: Message) => void,
  ) {}

  /** Messages waiting to be handed to the socket. */
  get length(): number {
    return this.queue.length - this.head;
  }

  /** Queues a message; it is sent after every message pushed before it. */
  push(msg: Message): void {
    if (this.closed) return;
    this.queue.push(msg);
    if (!this.running) void this.run();
  }

  /** Stops sending; messages not yet handed to the socket are dropped. */
  close(): void {
    this.closed = true;
    this.queue = [];
    this.head = 0;
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.head < this.queue.length && !this.closed) {
        const msg = this.queue[this.head]!;
        this.queue[this.head++] = undefined as unknown as Message;
        if (this.head > 1024 && this.head * 2 > this.queue.length) {
          this.queue = this.queue.slice(this.head);
          this.head = 0;
        }
        if (sendChannel.hasSubscribers) sendChannel.publish({ outbox: this.name, msg, at: performance.now() } satisfies OutboxSend);
        try {
          await this.socket.send(msg);
        } catch (err) {
          if (this.closed) return;
          this.onError(err as Error, msg);
        }
      }
    } finally {
      this.running = false;
    }
  }
}
