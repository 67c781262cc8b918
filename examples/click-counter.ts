/**
 * Demo component for stream `clicks`: counts clicks per user and sends each click on as a
 * page view, keyed by page, to stream `pages` (the second hop).
 *
 *   node dist/examples/click-counter.js MAP SERVER SLOT [RUN_DIR]
 */
import { runComponent } from '../src/component/component';

const [map, server, slot, runDir] = process.argv.slice(2);
const perUser = new Map<string, number>();

runComponent<{ user: string; page: string; at: number }>({
  map: map!,
  server: server!,
  stream: 'clicks',
  slot: Number(slot),
  runDir,
  onBatch(records, ctx) {
    for (const r of records) {
      perUser.set(r.value.user, (perUser.get(r.value.user) ?? 0) + 1);
      ctx.emit('pages', { page: r.value.page, user: r.value.user, at: r.value.at }, r);
    }
  },
});
