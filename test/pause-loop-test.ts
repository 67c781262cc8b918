/**
 * Pause on a flow with a loop: records of `ring` go to `relay`, whose components send them back
 * to `ring` with a hop counter (an `r` in front of the key, at most 2), so every record leaves
 * the loop after two turns:
 *
 *   Sender --k5--> ring (spool always) --> 2 slots --emit k5, rk5, rrk5--> relay --> 2 slots
 *                    ^------------------- rk5, rrk5 (INNER_FLAG) -------------------/
 *
 * `ring` spools (mode always): its portal acknowledges what it has written, which is what lets
 * a loop run at all (docs/operations.md, "Pause, loops and idle"). Paused, `ring` writes what
 * comes (the sender's records and the loop's) to its spool and delivers none of it, and `relay`
 * still takes the records `ring`'s components emit, so those components finish: the loop goes
 * idle. After resume every record, and every record the loop made, is processed exactly once on
 * both streams, in order per key.
 */
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import { agentResume, localAgent } from '../src/agent/client';
import { Sender } from '../src/sender/sender';
import { deploy, portalctlAsync, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA, RoundLoad } from './support/flows';
import { pauseWait, quietLog, startFlow } from './support/pause';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';

const SLOTS = 2;
const KEYS = 30;
const HOPS = 2;
const PAUSES = 4;
let d: Deployment;
const filesOf = (stream: string) => Array.from({ length: SLOTS }, (_, s) => d.outOf(stream, s));

before(async () => {
  const [p1, p2, agentPort] = await freePorts(3);
  const map = {
    instance: 'test',
    epoch: 1,
    heartbeat_ms: 200,
    servers: [{ name: 'solo', host: '127.0.0.1', agent_port: agentPort }],
    streams: [
      { name: 'ring', key: 'key', port: p1, buckets: 64, slots: SLOTS, schema: RECORD_SCHEMA('Ring'), spool: { mode: 'always', dir: 'spool' } },
      { name: 'relay', key: 'key', port: p2, buckets: 64, slots: SLOTS, schema: RECORD_SCHEMA('Relay') },
    ],
  };
  const loop = ['--loop', 'ring', '--hops', String(HOPS)];
  d = deploy(map);
  await startFlow(d, SLOTS, [{ name: 'ring', emit: 'relay' }, { name: 'relay', args: loop }], true);
});

after(async () => {
  await d?.stop();
});

test('a flow with a loop pauses to idle (the loop spooled, not delivered) and resumes with nothing lost or doubled', async () => {
  const sender = new Sender({ map: d.mapFile, lingerMs: 1, log: quietLog });
  const load = new RoundLoad(sender, 'ring', KEYS, 20);
  const agent = localAgent(d.runDirOf());
  const t0 = Date.now();
  const marks: string[] = [];
  try {
    for (let round = 0; round < PAUSES; round++) {
      const was = (await d.stats('relay')).recordsOut;
      // Records that went round the loop at least once since the last resume.
      await waitFor(`records going round the loop before pause ${round + 1}`, async () => (await d.stats('relay')).recordsOut > was + 2 * KEYS);
      marks.push(`flowing ${Date.now() - t0}`);
      if (round === 0) {
        const pause = await portalctlAsync(['pause', '--wait', '--timeout', '8', '--map', d.mapFile, '--run-dir', d.runDirOf()]);
        assert.equal(pause.status, 0, pause.stderr);
        assert.match(pause.stdout, /^idle after \d+\.\d s: every process of solo is paused and idle$/m);
        marks.push(`(${/idle after (\S+ s)/.exec(pause.stdout)![1]})`);
      } else {
        await pauseWait(agent, 8000);
      }
      marks.push(`idle ${Date.now() - t0}`);
      // Idle and paused: what still comes (the sender's records) waits in ring's spool.
      const spooled = (await d.stats('ring')).spool!.records;
      await waitFor('the sender\'s records to wait in ring\'s spool', async () => (await d.stats('ring')).spool!.records > spooled);
      const st = await d.stats('ring');
      assert.equal(st.queuedRecords, 0, 'nothing of ring is queued or in flight while paused');
      marks.push(`pause ${round + 1} idle ${Date.now() - t0}`);
      const resumed = await agentResume(agent);
      assert.equal(resumed.ok, true, JSON.stringify(resumed));
    }
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  // ring acknowledges once written: wait until the spool is read back and the loop has run out.
  const sent = sentRounds(KEYS, load.rounds);
  for (let h = 1; h <= HOPS; h++) sentRounds(KEYS, load.rounds, `${'r'.repeat(h)}k`, sent);
  const expected = (HOPS + 1) * KEYS * load.rounds;
  const seen = () => `ring ${readRecorded(filesOf('ring')).length}, relay ${readRecorded(filesOf('relay')).length} of ${expected} each`;
  await waitFor(() => `every record processed on both streams: ${seen()}`, () => readRecorded(filesOf('ring')).length >= expected && readRecorded(filesOf('relay')).length >= expected, 30_000, 200);
  process.stderr.write(`# loop: ${marks.join(', ')}; every record processed at ${Date.now() - t0} ms (${expected} per stream)\n`);
  assertExactlyOnceInOrder(d.map, 'ring', filesOf('ring'), sent);
  assertExactlyOnceInOrder(d.map, 'relay', filesOf('relay'), sent);
  assert.equal((await d.stats('ring')).spool!.records, 0, 'ring\'s spool is read to the end');
});
