/**
 * The child side of the bench's ipc: a child registers its commands with `serve`, says it is
 * ready, and exits when its parent goes away (so no load generator outlives the bench).
 */

type Handler = (args: unknown) => unknown;

/** Answers the parent's requests with `handlers`, and tells the parent this child is ready. */
export function serve(handlers: Record<string, Handler>): void {
  if (!process.send) throw new Error('this script is started by the bench, with an ipc channel');
  process.on('message', (m: { id: number; cmd: string; args: unknown }) => {
    const handler = handlers[m.cmd];
    Promise.resolve()
      .then(() => {
        if (!handler) throw new Error(`unknown command ${m.cmd}`);
        return handler(m.args);
      })
      .then(
        (result) => process.send?.({ id: m.id, result }),
        (err: unknown) => process.send?.({ id: m.id, error: err instanceof Error ? err.message : String(err) }),
      );
  });
  process.on('disconnect', () => process.exit(0));
  process.once('SIGTERM', () => process.exit(0));
  process.send({ ready: true });
}

/** Resolves after the current I/O has been handled: lets a busy loop yield to sockets and ipc. */
export function yieldToIo(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
