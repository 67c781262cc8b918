/** Runs only the map change measurement (etcd map): `node dist/bench/map-change-main.js`. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runMapChange } from './map-change';

const dir = mkdtempSync(join(tmpdir(), 'flb-mc-'));
runMapChange(dir).then(
  (r) => {
    process.stdout.write(JSON.stringify(r) + '\n');
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    rmSync(dir, { recursive: true, force: true });
    process.exit(1);
  },
);
