/**
 * Demo component for stream `pages`: counts views per page.
 *
 *   node dist/examples/page-counter.js MAP SERVER SLOT [RUN_DIR]
 */
import { runComponent } from '../src/component/component';

const [map, server, slot, runDir] = process.argv.slice(2);
const perPage = new Map<string, number>();

runComponent<{ page: string; user: string; at: number }>({
  map: map!,
  server: server!,
  stream: 'pages',
  slot: Number(slot),
  runDir,
  onBatch(records) {
    for (const r of records) perPage.set(r.value.page, (perPage.get(r.value.page) ?? 0) + 1);
  },
});
