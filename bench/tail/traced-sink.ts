/**
 * The sink of bench/sink.ts for `bench/tail/tail.ts`: acknowledges each delivery at once, and
 * records when each one arrived and when its DONE went to the socket.
 *
 *   usage: traced-sink.js MAP_FILE SERVER STREAM SLOT      (started by the bench, with ipc)
 *
 * Events (shared clock of ./trace.ts, ms):
 *   sink [ordinal of the delivery in this slot, onRawBatch called, records]
 *   done [delivery id, socket.send of DONE called]   (flotilla:outbox:send of the 'component' outbox)
 */
import { runComponent } from '../../src/component/component';
import { createLogger } from '../../src/log';
import { MessageType } from '../../src/protocol/wire';
import { serve } from '../child';
import { clock, traceSends, Tracer } from './trace';

const [map, server, stream, slot] = process.argv.slice(2) as [string, string, string, string];
const tr = new Tracer();
const sinkLog = tr.log('sink', 3);
// Headers are 16 bytes: type at offset 3, seq (the delivery id) at 4 (src/protocol/wire.ts).
traceSends(tr, 'component', tr.log('done', 2), (msg) => (msg[0]![3] === MessageType.DONE ? msg[0]!.readUInt32BE(4) : null));
let ordinal = -1;
runComponent({
  map,
  server,
  stream,
  slot: Number(slot),
  log: createLogger('bench-sink', { slot: Number(slot) }),
  onRawBatch: (_body, count) => {
    ordinal++;
    sinkLog.add(ordinal, clock(), count);
  },
});
serve({
  trace: () => tr.start(),
  dump: () => tr.dump(),
});
