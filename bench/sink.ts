/**
 * Bench component: takes each delivery undecoded (`onRawBatch`) and acknowledges it at once,
 * so the bench measures the portal and the wire, not a component's work.
 *
 *   usage: sink.js MAP_FILE|ETCD_URL SERVER STREAM SLOT [RUN_DIR]
 */
import { runComponent } from '../src/component/component';
import { createLogger } from '../src/log';
import { mapSource } from '../src/map/open';

const [map, server, stream, slot, runDir] = process.argv.slice(2) as [string, string, string, string, string | undefined];
// An etcd map (etcd://...) is opened first; a file is read by the SDK.
void mapSource(map).then((source) =>
  runComponent({
    map: source,
    server,
    stream,
    slot: Number(slot),
    runDir,
    log: createLogger('bench-sink', { slot: Number(slot) }),
    onRawBatch: () => undefined,
  }),
);
