/** Stopping the child processes a supervisor (the demo, a test deployment) started. */
import type { ChildProcess } from 'node:child_process';

/** Sends SIGTERM to every child still running, SIGKILL after `graceMs`; resolves when all exited. */
export function stopChildren(children: readonly ChildProcess[], graceMs = 5000): Promise<void> {
  return Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGTERM');
          setTimeout(() => c.kill('SIGKILL'), graceMs).unref();
        }),
    ),
  ).then(() => undefined);
}
