/** Runs only the pause -> idle -> resume measurement: `node dist/bench/pause-resume-main.js`. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runPauseResume } from './pause-resume';

const dir = mkdtempSync(join(tmpdir(), 'flb-pr-'));
runPauseResume(dir).then(
  (r) => {
    process.stdout.write(JSON.stringify(r) + '\n');
    rmSync(dir, { recursive: true, force: true });
  },
  (err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    rmSync(dir, { recursive: true, force: true });
    process.exit(1);
  },
);
