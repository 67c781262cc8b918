/**
 * The one receive loop: the portal, the agent, the control server and the sender read their
 * sockets this way, so that neither a failed receive nor a handler that throws ever ends the loop
 * (or the process with it). The component SDK keeps its own: there a handler that throws must
 * end the component, so that its delivery is given again after a restart.
 *
 *   for (;;) { await gate(); msg = await socket.receive(); handle(msg) }   until closed()
 */
import type { Readable } from 'zeromq';

export interface ReceiveOptions {
  /** True once the socket is being closed: the loop ends quietly. */
  closed(): boolean;
  /** Handles one message; a returned promise is awaited before the next receive. */
  handle(msg: Buffer[]): void | Promise<void>;
  /** A receive failed (not while closing). */
  failed?(err: Error): void;
  /** The handler threw: a bug, reported and survived. */
  crashed(err: unknown): void;
  /** Before each receive: a promise to wait for (backpressure, a turn for the event loop), or null. */
  gate?(): Promise<void> | null;
}

/** Reads `socket` until `o.closed()`. */
export async function receiveEach(socket: Readable, o: ReceiveOptions): Promise<void> {
  while (!o.closed()) {
    const wait = o.gate?.();
    if (wait) {
      await wait;
      continue;
    }
    let msg: Buffer[];
    try {
      msg = await socket.receive();
    } catch (err) {
      if (o.closed()) return;
      o.failed?.(err as Error);
      continue;
    }
    try {
      const done = o.handle(msg);
      if (done) await done;
    } catch (err) {
      o.crashed(err);
    }
  }
}
