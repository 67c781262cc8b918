/**
 * `npm run demo -- --example search --seconds N` (examples/search/): a client's requests are cut
 * into chunks, computed by workers and answered twice by an aggregator; every fourth request is
 * cancelled after its early answer; the chunk size and the cache are changed while it runs
 * (`portalctl configure`).
 *
 *   client --requests--> splitter --chunks--> workers --results--> aggregators --answers--> client
 *
 * Every request not cancelled is answered twice (early and complete); cancellations drop chunks;
 * no chunk of a cancelled request is done after its cancel returned (the workers' logs say when
 * each chunk was done); exit 0.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';

const ROOT = join(__dirname, '..', '..');

test('the search example answers every request not cancelled twice, and no cancelled chunk is done after its cancel', () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'examples', 'demo.js'), '--example', 'search', '--seconds', '6'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `exited ${r.status}\n${r.stdout}\n${r.stderr}`);
  const lines = r.stdout.split('\n');
  assert.ok(lines.filter((l) => /^\s+\d+s\s+\d+/.test(l)).length >= 2, `live lines every second:\n${r.stdout}`);
  const summary = lines.find((l) => l.startsWith('summary:')) ?? '';
  const m =
    /(\d+) requests sent, (\d+) answered early, (\d+) answered complete \((\d+) of (\d+) not cancelled answered twice\), (\d+) cancelled, (\d+) chunks dropped by cancellation, (\d+) cancelled chunks done after their cancel returned; (\d+) of (\d+) configurations taken \(chunks per request ([\d.]+) before chunk_size=3, ([\d.]+) after\); ok$/.exec(
      summary,
    );
  assert.ok(m, `summary: ${summary}\n${r.stdout}`);
  const [sent, early, complete, twice, uncancelled, cancelled, dropped, late, taken, tunings, before, after] = m.slice(1).map(Number);
  assert.ok(sent! >= 10, summary);
  assert.equal(early, sent, 'every request answered early');
  assert.equal(twice, uncancelled, 'every request not cancelled answered twice');
  assert.equal(complete, uncancelled);
  assert.equal(uncancelled! + cancelled!, sent);
  assert.ok(cancelled! > 0, 'requests were cancelled');
  assert.ok(dropped! > 0, 'cancellation dropped chunks');
  assert.equal(late, 0, 'no cancelled chunk done after its cancel returned');
  assert.equal(taken, 2, 'both configurations taken while it ran');
  assert.equal(tunings, 2);
  assert.ok(after! > 0 && after! < before!, `chunk_size=3 made fewer chunks per request: ${before} before, ${after} after`);
});
