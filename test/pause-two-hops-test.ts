/**
 * `portalctl pause --wait` on a flow of two hops, the demo's shape, under load, 20 times:
 *
 *   Sender --BATCH--> orders portal --> 4 recorder slots --emit (INNER_FLAG)--> audits portal --> 4 recorder slots
 *
 * Both streams are paused at once. The orders components hold records they emitted to audits
 * until audits acknowledges them; a paused audits portal still takes those batches (they come
 * from inside the flow), so every component finishes and every process reaches idle. Each pause
 * must be idle within its timeout, and after the last resume every record sent has been
 * processed exactly once on both streams, in order per key. The first and the last pause are
 * `portalctl pause --wait`; the others ask the agent from this process (support/pause.ts: the
 * same check), which saves a node start-up per round.
 */
import { strict as assert } from 'node:assert';
import * as zmq from 'zeromq';
import { after, before, test } from 'node:test';
import { agentResume, localAgent } from '../src/agent/client';
import { INNER_FLAG, MessageType } from '../src/protocol/wire';
import { Sender } from '../src/sender/sender';
import { deploy, portalctlAsync, waitFor, type Deployment } from './support/deploy';
import { RoundLoad, twoStreamMap } from './support/flows';
import { pauseWait, quietLog, startFlow } from './support/pause';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';
import { batchFrames, keyRange, readReply } from './support/zmtp';

/** Pauses asked for by the issue; FLOTILLA_PAUSE_ROUNDS may lower it for a quick local run. */
const ROUNDS = Number(process.env.FLOTILLA_PAUSE_ROUNDS ?? 20);
const SLOTS = 4;
const KEYS = 120;
/** Each pause must be idle within this (it is about a heartbeat on an idle machine). */
const PAUSE_TIMEOUT_S = 8;
let d: Deployment;
const filesOf = (stream: string) => Array.from({ length: SLOTS }, (_, s) => d.outOf(stream, s));

before(async () => {
  const [p1, p2, agentPort] = await freePorts(3);
  const map = twoStreamMap([p1!, p2!], { heartbeat_ms: 200 });
  (map.servers as Record<string, unknown>[])[0]!.agent_port = agentPort;
  d = deploy(map);
  await startFlow(d, SLOTS, [{ name: 'orders', emit: 'audits' }, { name: 'audits' }], true);
});

after(async () => {
  await d?.stop();
});

test(`pause --wait on a two-hop flow under load is idle within ${PAUSE_TIMEOUT_S} s, ${ROUNDS} times; nothing lost or doubled`, async () => {
  const sender = new Sender({ map: d.mapFile, lingerMs: 1, log: quietLog });
  const load = new RoundLoad(sender, 'orders', KEYS, 2);
  const agent = localAgent(d.runDirOf());
  const took: number[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      // Under load: records flowing through both hops since the last resume.
      const was = (await d.stats('audits')).recordsOut;
      await waitFor(`records flowing through audits before pause ${round + 1}`, async () => (await d.stats('audits')).recordsOut > was + KEYS);
      if (round === 0 || round === ROUNDS - 1) {
        const started = Date.now();
        const pause = await portalctlAsync(['pause', '--wait', '--timeout', String(PAUSE_TIMEOUT_S), '--map', d.mapFile, '--run-dir', d.runDirOf()]);
        took.push(Date.now() - started);
        assert.equal(pause.status, 0, `pause ${round + 1} of ${ROUNDS}: ${pause.stderr}`);
        assert.match(pause.stdout, /^solo: paused orders, audits$/m);
        assert.match(pause.stdout, /^idle after \d+\.\d s: every process of solo is paused and idle$/m);
      } else {
        took.push(await pauseWait(agent, PAUSE_TIMEOUT_S * 1000));
      }
      const resumed = await agentResume(agent);
      assert.equal(resumed.ok, true, JSON.stringify(resumed));
    }
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  process.stderr.write(`# ${ROUNDS} pauses of a two-hop flow, ms to idle (the first and last with a portalctl start-up): ${took.join(' ')}\n`);
  assert.equal(sender.stats.acked, load.sent);
  const sent = sentRounds(KEYS, load.rounds);
  assertExactlyOnceInOrder(d.map, 'orders', filesOf('orders'), sent);
  // An ACK of orders means the audits record made from it was acknowledged, so processed.
  assertExactlyOnceInOrder(d.map, 'audits', filesOf('audits'), sent);
});

test('on the wire: a paused portal refuses a BATCH with PAUSED, and takes one with the inner flag (type 0x81) and processes it', async () => {
  const agent = localAgent(d.runDirOf());
  await pauseWait(agent, PAUSE_TIMEOUT_S * 1000);
  const port = d.map.streams.find((s) => s.name === 'orders')!.port;
  // Two connections, as an outside sender and a component's sender are: a PAUSED on one makes
  // its later batches owed (RESEND), never the other's.
  const outside = new zmq.Dealer({ linger: 0 });
  const inside = new zmq.Dealer({ linger: 0 });
  const inner = keyRange('inner', 0, 5);
  try {
    outside.connect(`tcp://127.0.0.1:${port}`);
    inside.connect(`tcp://127.0.0.1:${port}`);
    await outside.send(batchFrames(1, keyRange('outside', 0, 5)));
    const refused = readReply(await outside.receive());
    assert.deepEqual([refused.type, refused.seq, refused.code], [MessageType.ERROR, 1, 'PAUSED'], refused.message);
    const flagged = batchFrames(1, inner);
    flagged[0]![3]! |= INNER_FLAG;
    await inside.send(flagged);
    const acked = readReply(await inside.receive());
    assert.deepEqual([acked.type, acked.seq, acked.count], [MessageType.ACK, 1, inner.length], acked.message);
    // Processed on orders, and (its components emit) on audits, both paused.
    const only = (k: string) => k.startsWith('inner');
    assert.equal(readRecorded(filesOf('orders'), only).length, inner.length);
    assert.equal(readRecorded(filesOf('audits'), only).length, inner.length);
    assert.equal(readRecorded([...filesOf('orders'), ...filesOf('audits')], (k) => k.startsWith('outside')).length, 0, 'nothing of the refused batch');
  } finally {
    outside.close();
    inside.close();
    await agentResume(agent);
  }
});

test('pause --wait of some streams says that only those are paused and idle', async () => {
  const pause = await portalctlAsync(['pause', 'orders', '--wait', '--timeout', String(PAUSE_TIMEOUT_S), '--map', d.mapFile, '--run-dir', d.runDirOf()]);
  try {
    assert.equal(pause.status, 0, pause.stderr);
    assert.match(pause.stdout, /^idle after \d+\.\d s: every process of orders on solo is paused and idle; other streams were not paused$/m);
  } finally {
    await agentResume(localAgent(d.runDirOf()));
  }
});
