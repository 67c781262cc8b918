/**
 * zeromq.js allows one pending send per socket (a second throws EBUSY). An Outbox owns a socket's
 * sending side: callers `push` messages without awaiting, and one loop sends them in order.
 */
import type { Writable } from 'zeromq';

type Message = Buffer[];

export class Outbox {
  private queue: Message[] = [];
  private head = 0;
  private running = false;
  private closed = false;

  constructor(
    private readonly socket: Writable,
    private readonly onError: (err: Error) => void,
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
        try {
          await this.socket.send(msg);
        } catch (err) {
          if (this.closed) return;
          this.onError(err as Error);
        }
      }
    } finally {
      this.running = false;
    }
  }
}
