/**
 * A portal stopped with SIGTERM under load drains before it exits, so a restart processes
 * nothing twice and loses nothing:
 *
 *   Sender --BATCH--> orders portal --> 4 recorder slots --emit--> audits portal --> 4 recorder slots
 *                     ^ SIGTERM, then start again (each portal in turn)
 *
 * The stopping portal refuses new batches with PAUSED (senders hold them and send them to the
 * next portal), lets its components finish what it accepted, acknowledges it, and exits. Every
 * record is then processed exactly once on both streams, in order per key, and the new portals
 * never hear of a delivery they did not send (no COMPONENT_UNKNOWN_DELIVERY).
 */
import { strict as assert } from 'node:assert';
import type { ChildProcess } from 'node:child_process';
import { after, before, test } from 'node:test';
import { Sender } from '../src/sender/sender';
import { deploy, waitFor, type Deployment } from './support/deploy';
import { quietLog, startFlow } from './support/pause';
import { RoundLoad, twoStreamMap } from './support/flows';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, sentRounds } from './support/records';

/** Restarts, alternating orders and audits; FLOTILLA_RESTART_ROUNDS may change it. */
const RESTARTS = Number(process.env.FLOTILLA_RESTART_ROUNDS ?? 4);
const SLOTS = 4;
const KEYS = 100;
let d: Deployment;
const portals = new Map<string, ChildProcess>();
const filesOf = (stream: string) => Array.from({ length: SLOTS }, (_, s) => d.outOf(stream, s));

before(async () => {
  const ports = await freePorts(2);
  d = deploy(twoStreamMap(ports, { heartbeat_ms: 200 }));
  await startFlow(d, SLOTS, [{ name: 'orders', emit: 'audits' }, { name: 'audits' }], false);
  for (const stream of ['orders', 'audits']) portals.set(stream, d.procs[['orders', 'audits'].indexOf(stream)]!);
});

after(async () => {
  await d?.stop();
});

test(`a portal restarted (SIGTERM, start) under load ${RESTARTS} times processes nothing twice and loses nothing`, async () => {
  const sender = new Sender({ map: d.mapFile, lingerMs: 1, log: quietLog });
  const load = new RoundLoad(sender, 'orders', KEYS, 2);
  const took: string[] = [];
  try {
    for (let round = 0; round < RESTARTS; round++) {
      const stream = round % 2 === 0 ? 'orders' : 'audits';
      const was = (await d.stats('audits')).recordsOut;
      await waitFor(`records flowing through both hops before restart ${round + 1}`, async () => (await d.stats('audits')).recordsOut > was + 2 * KEYS);
      const old = portals.get(stream)!;
      const started = Date.now();
      const exited = new Promise<number | null>((resolve) => old.once('exit', (code) => resolve(code)));
      old.kill('SIGTERM');
      assert.equal(await exited, 0, `the ${stream} portal exits 0 after SIGTERM`);
      took.push(`${stream} ${Date.now() - started} ms`);
      portals.set(stream, d.startPortal(stream));
      await d.waitSlotsConnected(stream, SLOTS);
    }
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  process.stderr.write(`# stops (SIGTERM to exit): ${took.join(', ')}\n`);
  assert.equal(sender.stats.acked, load.sent);
  const sent = sentRounds(KEYS, load.rounds);
  assertExactlyOnceInOrder(d.map, 'orders', filesOf('orders'), sent);
  assertExactlyOnceInOrder(d.map, 'audits', filesOf('audits'), sent);
  const lines = d.logs.join('').split('\n');
  const unknown = lines.find((l) => l.includes('COMPONENT_UNKNOWN_DELIVERY'));
  assert.equal(unknown, undefined, 'no portal hears of a delivery it did not send');
  assert.equal(lines.filter((l) => /"msg":"portal \w+: drained in \d+ ms; closing"/.test(l)).length, RESTARTS, 'every stop drained within its bound');
});
