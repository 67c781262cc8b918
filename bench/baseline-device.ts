/**
 * Baseline: the obvious per-message proxy in zeromq.js. PULL on TCP, PUSH on ipc, one record
 * per message, `for await` + `await send`.
 *
 *   usage: baseline-device.js TCP_ENDPOINT IPC_ENDPOINT
 */
import * as zmq from 'zeromq';
import { serve } from './child';

async function main(): Promise<void> {
  const [tcp, ipc] = process.argv.slice(2) as [string, string];
  const pull = new zmq.Pull({ linger: 0 });
  const push = new zmq.Push({ linger: 0 });
  await pull.bind(tcp);
  await push.bind(ipc);
  serve({});
  for await (const [msg] of pull) await push.send(msg!);
}

void main();
