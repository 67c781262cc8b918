/**
 * The portal for `bench/tail.ts`: the same `Portal` as `flotilla-portal` (src/portal.ts), wired
 * the same way, with timestamps taken around its message handlers and socket sends. Nothing in
 * the portal's logic changes; the wrappers only read.
 *
 *   usage: traced-portal.js MAP_FILE SERVER STREAM        (started by the bench, with ipc)
 *
 * Events (times on the shared clock of bench/trace.ts, ms):
 *   recv    [batch seq, handler entered, handler left, records]
 *   deliver [delivery id, batch seq, slot, ordinal of this delivery in its slot, pushed, records]
 *   done    [delivery id, handler entered, handler left]
 *   ack     [batch seq, pushed]
 *   egress  [delivery id, socket.send called]     (DELIVER to a slot)
 *   ingress [batch seq, socket.send called]       (ACK to the sender)
 */
import { loadMap } from '../src/map/load';
import { createLogger } from '../src/log';
import { Portal } from '../src/portal/portal';
import { MessageType } from '../src/protocol/wire';
import { serve } from './child';
import { clock, traceSends, Tracer } from './trace';

const [mapFile, server, stream] = process.argv.slice(2) as [string, string, string];
const tr = new Tracer();
const recvLog = tr.log('recv', 4);
const deliverLog = tr.log('deliver', 6);
const doneLog = tr.log('done', 3);
const ackLog = tr.log('ack', 2);
const egressLog = tr.log('egress', 2);
const ingressLog = tr.log('ingress', 2);

// Private members are read through `any`: tracing only, never called differently.
const P = Portal.prototype as any;
const onSenderMessage = P.onSenderMessage as (msg: Buffer[]) => void;
P.onSenderMessage = function (this: any, msg: Buffer[]) {
  const t = clock();
  onSenderMessage.call(this, msg);
  if (tr.active) recvLog.add(msg[1]!.readUInt32BE(4), t, clock(), msg[1]!.readUInt32BE(12));
};
const onDone = P.onDone as (id: number) => void;
P.onDone = function (this: any, id: number) {
  const t = clock();
  onDone.call(this, id);
  doneLog.add(id, t, clock());
};

async function main(): Promise<void> {
  const map = loadMap(mapFile);
  const log = createLogger('portal', { stream, server });
  const portal = new Portal({ map, server, stream, log }) as any;
  const ordinals: number[] = [];
  const egressPush = portal.egressOut.push.bind(portal.egressOut) as (msg: Buffer[]) => void;
  portal.egressOut.push = (msg: Buffer[]) => {
    if (msg[1]![3] === MessageType.DELIVER) {
      const id = msg[1]!.readUInt32BE(4);
      const d = portal.deliveries.get(id);
      const s: number = d.slot.index;
      const ordinal = (ordinals[s] = (ordinals[s] ?? -1) + 1);
      deliverLog.add(id, d.batch.seq, s, ordinal, clock(), d.count);
    }
    egressPush(msg);
  };
  const ingressPush = portal.ingressOut.push.bind(portal.ingressOut) as (msg: Buffer[]) => void;
  portal.ingressOut.push = (msg: Buffer[]) => {
    if (tr.active && msg[1]![3] === MessageType.ACK) ackLog.add(msg[1]!.readUInt32BE(4), clock());
    ingressPush(msg);
  };
  // Headers are 16 bytes: type at offset 3, seq at 4 (src/wire.ts).
  traceSends(tr, portal.egressOut, egressLog, (msg) => (msg[1]![3] === MessageType.DELIVER ? msg[1]!.readUInt32BE(4) : null));
  traceSends(tr, portal.ingressOut, ingressLog, (msg) => (msg[1]![3] === MessageType.ACK ? msg[1]!.readUInt32BE(4) : null));
  await portal.start();
  serve({
    trace: () => tr.start(),
    dump: () => tr.dump(),
  });
  process.once('SIGTERM', () => void portal.stop().then(() => process.exit(0)));
}

main().catch((err: unknown) => {
  process.stderr.write(`traced portal: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
