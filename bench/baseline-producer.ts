/**
 * Baseline load: PUSHes 100-byte messages to the proxy as fast as `await send` allows.
 *
 *   usage: baseline-producer.js TCP_ENDPOINT
 *   requests: start, count -> {sent}, stop
 */
import * as zmq from 'zeromq';
import { serve, yieldToIo } from './child';
import { RECORD_BYTES } from './payload';

const push = new zmq.Push({ linger: 0 });
push.connect(process.argv[2]!);
const payload = Buffer.alloc(RECORD_BYTES, 0x61);
let sent = 0;
let running = false;

async function produce(): Promise<void> {
  while (running) {
    await push.send(payload);
    // A send that succeeds at once resolves without visiting the event loop: let ipc in.
    if ((++sent & 1023) === 0) await yieldToIo();
  }
}

serve({
  start: () => {
    running = true;
    void produce();
  },
  count: () => ({ sent }),
  stop: () => {
    running = false;
    push.close();
    return { sent };
  },
});
