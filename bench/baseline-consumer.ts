/**
 * Baseline sink: PULLs from the proxy's ipc socket and counts messages (records).
 *
 *   usage: baseline-consumer.js IPC_ENDPOINT
 *   requests: count -> {received}
 */
import * as zmq from 'zeromq';
import { serve, yieldToIo } from './child';

const pull = new zmq.Pull({ linger: 0 });
pull.connect(process.argv[2]!);
let received = 0;

async function consume(): Promise<void> {
  for await (const _ of pull) {
    // A receive that succeeds at once resolves without visiting the event loop: let ipc in.
    if ((++received & 1023) === 0) await yieldToIo();
  }
}

serve({ count: () => ({ received }) });
void consume();
