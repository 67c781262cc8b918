/**
 * The portal for `bench/tail/tail.ts`: the same `Portal` as `flotilla-portal` (portal/main.ts),
 * with the tracer subscribed to its named hooks (docs/architecture.md, "Named hooks"). Nothing
 * is patched or wrapped; the subscribers only read.
 *
 *   usage: traced-portal.js MAP_FILE SERVER STREAM        (started by the bench, with ipc)
 *
 * Events (times on the shared clock of ./trace.ts, ms), and the hook each comes from:
 *   recv    [batch seq, handler entered, handler left, records]                 flotilla:portal:batch
 *   deliver [delivery id, batch seq, slot, ordinal of this delivery in its slot, pushed, records]
 *                                                                                flotilla:portal:deliver
 *   done    [delivery id, handler entered, handler left]                          flotilla:portal:done
 *   ack     [batch seq, pushed]                                                   flotilla:portal:ack
 *   egress  [delivery id, socket.send called]  (DELIVER to a slot)    flotilla:outbox:send, 'portal:egress'
 *   ingress [batch seq, socket.send called]    (ACK to the sender)    flotilla:outbox:send, 'portal:ingress'
 * Instants: `deliver` and `ack` are taken just before the message is pushed to the outbox (they
 * were taken as it was pushed); `done` covers a DONE that finished a delivery only (one for an
 * unknown or finished delivery is not recorded; it never happens in this bench).
 */
import { subscribe } from 'node:diagnostics_channel';
import { loadMap } from '../../src/map/load';
import { createLogger } from '../../src/log';
import { Portal } from '../../src/portal/portal';
import { MessageType } from '../../src/protocol/wire';
import { serve } from '../child';
import { toClock, traceSends, Tracer } from './trace';

/** The messages of the portal's hooks (src/portal/ingress.ts, src/portal/egress.ts). */
interface PortalBatch {
  seq: number;
  count: number;
  start: number;
  end: number;
}
interface PortalAck {
  seq: number;
  at: number;
}
interface PortalDeliver {
  id: number;
  seq: number;
  slot: number;
  ordinal: number;
  count: number;
  at: number;
}
interface PortalDone {
  id: number;
  start: number;
  end: number;
}

const [mapFile, server, stream] = process.argv.slice(2) as [string, string, string];
const tr = new Tracer();
const recvLog = tr.log('recv', 4);
const deliverLog = tr.log('deliver', 6);
const doneLog = tr.log('done', 3);
const ackLog = tr.log('ack', 2);

// Subscribed before the portal starts and for its whole life (each log records only while
// tracing): the portal numbers a slot's deliveries only while someone subscribes, and the sinks
// number them from their first, so both must count from the start.
subscribe('flotilla:portal:batch', (m) => {
  const e = m as PortalBatch;
  recvLog.add(e.seq, toClock(e.start), toClock(e.end), e.count);
});
subscribe('flotilla:portal:deliver', (m) => {
  const e = m as PortalDeliver;
  deliverLog.add(e.id, e.seq, e.slot, e.ordinal, toClock(e.at), e.count);
});
subscribe('flotilla:portal:done', (m) => {
  const e = m as PortalDone;
  doneLog.add(e.id, toClock(e.start), toClock(e.end));
});
subscribe('flotilla:portal:ack', (m) => {
  const e = m as PortalAck;
  ackLog.add(e.seq, toClock(e.at));
});
// Headers are 16 bytes: type at offset 3, seq at 4 (src/protocol/wire.ts); frame 0 is the peer.
const seqOf = (type: MessageType) => (msg: Buffer[]) => (msg[1]![3] === type ? msg[1]!.readUInt32BE(4) : null);
traceSends(tr, 'portal:egress', tr.log('egress', 2), seqOf(MessageType.DELIVER));
traceSends(tr, 'portal:ingress', tr.log('ingress', 2), seqOf(MessageType.ACK));

async function main(): Promise<void> {
  const map = loadMap(mapFile);
  const log = createLogger('portal', { stream, server });
  const portal = new Portal({ map, server, stream, log });
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
