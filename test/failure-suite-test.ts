/**
 * Failures that do not involve the disk spool (DESIGN.md, "What must never happen"), each with
 * real processes, real sockets and counted records:
 *
 *   1. components crash mid-delivery (process.exit, SIGKILL) and are restarted
 *   2. a component busy-loops: its slot is reported dead, it is killed and replaced
 *   3. components are overloaded by senders pushing far more than they can take
 *   4. senders disconnect mid-batch; a multipart message is cut short
 *   5. thousands of random and mutated frames
 *
 * Each checks that every acknowledged record was processed at least once; that duplicates stay
 * within the bound (a component that dies gets again only the deliveries it had not answered
 * DONE for: at most DEFAULT_SLOT_WINDOW deliveries of its slot; with no failure, none); that the
 * portal and every other process are still up and answering; and that the failure shows in the
 * logs and in status.
 */
import { strict as assert } from 'node:assert';
import { type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import avro from 'avsc';
import * as zmq from 'zeromq';
import type { AgentStatus } from '../src/protocol/control';
import { agentStatus, localAgent } from '../src/agent/client';
import { bucketOf, slotOf } from '../src/map/bucket';
import { portalRequest } from '../src/portal/client';
import { EnvelopeWriter } from '../src/protocol/envelope';
import type { PortalBeacon } from '../src/protocol/beacons';
import type { FlotillaMap } from '../src/map/types';
import { DEFAULT_MAX_QUEUED_RECORDS, DEFAULT_SLOT_WINDOW, type PortalStats } from '../src/portal/portal';
import { DEFAULT_BATCH_RECORDS, Sender } from '../src/sender/sender';
import { encodeHeader, MessageType } from '../src/protocol/wire';
import { deploy, DIST, portalctlAsync, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA, RoundLoad } from './support/flows';
import { freePorts } from './support/ports';

const HEARTBEAT_MS = 200;
const SLOTS = 4;
const ORDER = avro.Type.forSchema(RECORD_SCHEMA('Order') as avro.Schema);

const deployments: Deployment[] = [];
after(async () => {
  await Promise.all(deployments.map((d) => d.stop()));
  if (process.env.FLOTILLA_TEST_LOGS) for (const d of deployments) process.stderr.write(d.logs.join(''));
});

// ---- deployments ----------------------------------------------------------------------------

/** One server `solo`, one stream `orders` of 4 slots, 200 ms heartbeats, an agent when asked. */
async function oneStream(opts: { agent?: boolean; stream?: Record<string, unknown> } = {}): Promise<Deployment> {
  const [port, agentPort] = await freePorts(2);
  const d = deploy({
    instance: 'test',
    epoch: 1,
    heartbeat_ms: HEARTBEAT_MS,
    servers: [{ name: 'solo', host: '127.0.0.1', agent_port: agentPort }],
    streams: [{ name: 'orders', key: 'key', port, buckets: 256, slots: SLOTS, schema: RECORD_SCHEMA('Order'), ...opts.stream }],
  });
  deployments.push(d);
  if (opts.agent) startAgent(d);
  d.startPortal('orders');
  return d;
}

const FAULTY = join(DIST, 'test', 'fixtures', 'faulty.js');

/** Starts fixtures/faulty.js for a slot of `orders`: a recorder that fails on cue (or never). */
function startFaulty(d: Deployment, slot: number, fault?: { fault: 'exit' | 'kill' | 'spin'; after: number }): ChildProcess {
  const args = ['--map', d.mapFile, '--server', 'solo', '--stream', 'orders', '--slot', String(slot), '--run-dir', d.runDirOf(), '--out', d.outOf('orders', slot)];
  if (fault) args.push('--fault', fault.fault, '--after', String(fault.after), '--marker', markerOf(d, slot));
  return d.startComponent(FAULTY, args);
}

const markerOf = (d: Deployment, slot: number) => join(d.dir, `fault-${slot}.json`);
const readMarker = (d: Deployment, slot: number) =>
  JSON.parse(readFileSync(markerOf(d, slot), 'utf8')) as { pid: number; fault: string; at: number; delivery: number; records: number; processed: number };

const alive = (p: ChildProcess) => p.exitCode === null && p.signalCode === null;
const exited = (p: ChildProcess) => !alive(p);
const portalProc = (d: Deployment) => d.procs.find((p) => p.spawnargs.some((a) => a.endsWith(join('portal', 'main.js'))))!;
const beacon = (d: Deployment) => portalRequest(d.runDirOf(), 'orders', { cmd: 'beacon' });
const logText = (d: Deployment) => d.logs.join('');
/** Lines of the portal's JSON log (pino, name "portal"). */
const portalLog = (d: Deployment) => logText(d).split('\n').filter((l) => l.includes('"name":"portal"'));

/** `portalctl status --json` against this server's agent, as an operator's script would. */
async function portalctlStatus(d: Deployment): Promise<AgentStatus> {
  const r = await portalctlAsync(['status', '--json', '--map', d.mapFile, '--run-dir', d.runDirOf()]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as AgentStatus;
}

/** Resident set size of a process, from /proc, in MiB. */
function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/**
 * A line in the portal's or agent's log that says slot `slot` of `pid` stopped answering: what
 * an operator reading `journalctl` would need.
 */
const SLOT_TROUBLE = /\b(dead|silent|not heard|gone|lost|disconnected|unreachable|stopped answering|missing)\b/i;
function slotTroubleLogged(d: Deployment, slot: number, pid: number): boolean {
  return logText(d)
    .split('\n')
    .some((l) => (l.includes('"name":"portal"') || l.includes('"name":"agent"')) && l.includes(`slot ${slot}`) && l.includes(String(pid)) && SLOT_TROUBLE.test(l));
}

/** Processes a test killed (or made to crash) on purpose. */
const expectedDead = new Set<ChildProcess>();

/** Asserts that every process of the deployment is up (but those killed on purpose) and the portal answers stats. */
async function assertAllUp(d: Deployment): Promise<PortalStats> {
  const down = d.procs.filter((p) => !alive(p) && !expectedDead.has(p)).map((p) => `${p.spawnargs.slice(1, 2).join(' ')} (pid ${p.pid}): ${p.exitCode ?? p.signalCode}`);
  assert.deepEqual(down, [], 'every process still up');
  return d.stats('orders');
}

// ---- what the components recorded ----------------------------------------------------------

interface Row {
  slot: number;
  key: string;
  seq: number;
  pid: number;
  /** That process's delivery number (fixtures/faulty.ts), 0 when the file has no such column. */
  delivery: number;
}

/** Reads recorder/faulty lines of the given files, in file order (the order of processing). */
function readRows(files: string[], keep: (key: string) => boolean = () => true): Row[][] {
  return files.map((f) => {
    if (!existsSync(f)) return [];
    const rows: Row[] = [];
    for (const line of readFileSync(f, 'utf8').split('\n')) {
      const [slot, key, seq, pid, , delivery] = line.split('\t');
      if (!key || !keep(key) || !/^\d+$/.test(seq ?? '')) continue;
      rows.push({ slot: Number(slot), key, seq: Number(seq), pid: Number(pid), delivery: Number(delivery ?? 0) });
    }
    return rows;
  });
}

interface Analysis {
  /** Expected (key, seq) never processed. */
  missing: string[];
  /** Records processed more than once, per slot: extra copies. */
  duplicates: number[];
  /** Problems of placement and order (after dropping repeated copies). */
  problems: string[];
  /** Per slot: the rows that were later processed again, first copies. */
  repeatedFirstCopies: Row[][];
  total: number;
}

/**
 * Checks a slot's records against what was sent: `expected` (key -> seqs 0..n-1). Every one
 * present, at its owning slot; per key in order once repeated copies are dropped (a copy
 * processed again after a crash comes after the records processed before it).
 */
function analyse(map: FlotillaMap, perSlot: Row[][], expected: Map<string, number>): Analysis {
  const s = map.streams.find((x) => x.name === 'orders')!;
  const a: Analysis = { missing: [], duplicates: perSlot.map(() => 0), problems: [], repeatedFirstCopies: perSlot.map(() => []), total: 0 };
  const seen = new Map<string, Row>();
  const last = new Map<string, number>();
  perSlot.forEach((rows, i) => {
    for (const r of rows) {
      a.total++;
      const id = `${r.key}#${r.seq}`;
      const first = seen.get(id);
      if (first) {
        a.duplicates[i]!++;
        if (!a.repeatedFirstCopies[i]!.includes(first)) a.repeatedFirstCopies[i]!.push(first);
        continue;
      }
      seen.set(id, r);
      const want = slotOf(bucketOf(r.key, s.buckets), s.slots);
      if (r.slot !== want && a.problems.length < 20) a.problems.push(`${id} processed by slot ${r.slot}, owner is slot ${want}`);
      const prev = last.get(r.key) ?? -1;
      if (r.seq !== prev + 1 && a.problems.length < 20) a.problems.push(`${r.key}: seq ${r.seq} after ${prev} (first copies, in processing order)`);
      last.set(r.key, r.seq);
      if (!expected.has(r.key) && a.problems.length < 20) a.problems.push(`${id} was never sent`);
    }
  });
  for (const [key, n] of expected) {
    for (let q = 0; q < n; q++) if (!seen.has(`${key}#${q}`) && a.missing.length < 20) a.missing.push(`${key}#${q}`);
  }
  return a;
}

/** key -> rounds, for a RoundLoad of `keys` keys named `${prefix}${k}`. */
function expectedOf(prefix: string, keys: number, rounds: number, into = new Map<string, number>()): Map<string, number> {
  for (let k = 0; k < keys; k++) into.set(`${prefix}${k}`, rounds);
  return into;
}

/**
 * The duplicate bound for a slot whose component died: every record processed twice was first
 * processed by the process that died, in one of its last DEFAULT_SLOT_WINDOW deliveries (the
 * ones it had not answered DONE for), never earlier ones and never by a process that lived.
 */
function checkDuplicateBound(slot: number, a: Analysis, deadPid: number, lastDelivery: number): void {
  for (const r of a.repeatedFirstCopies[slot]!) {
    assert.equal(r.pid, deadPid, `slot ${slot}: ${r.key}#${r.seq} processed twice, first by pid ${r.pid}, which did not die`);
    assert.ok(
      r.delivery > lastDelivery - DEFAULT_SLOT_WINDOW && r.delivery <= lastDelivery,
      `slot ${slot}: ${r.key}#${r.seq} processed again, first in delivery ${r.delivery} of the dead process; only its last ${DEFAULT_SLOT_WINDOW} (up to ${lastDelivery}) may come again`,
    );
  }
}

// ---- 1. crash mid-delivery ------------------------------------------------------------------

test('components crash mid-delivery (exit, SIGKILL) and restart: every acked record processed, in order per key, duplicates within the slot window', async (t) => {
  const d = await oneStream({ agent: true });
  const CRASH = { 1: 'kill', 2: 'exit' } as const;
  const crashers = new Map<number, ChildProcess>();
  for (let slot = 0; slot < SLOTS; slot++) {
    const fault = CRASH[slot as 1 | 2];
    const p = startFaulty(d, slot, fault ? { fault, after: 1500 + 100 * slot } : undefined);
    if (fault) crashers.set(slot, p);
  }
  await d.waitSlotsConnected('orders', SLOTS);
  await waitAgent(d);

  const KEYS = 300;
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const load = new RoundLoad(sender, 'orders', KEYS, 2);
  const restarted = new Map<number, ChildProcess>();
  try {
    for (const [slot, p] of crashers) {
      await waitFor(`slot ${slot}'s component to crash`, () => exited(p));
      expectedDead.add(p);
      const m = readMarker(d, slot);
      assert.equal(m.pid, p.pid);
      assert.ok(m.processed > 0 && m.processed < m.records, 'it crashed mid-delivery');
      if (CRASH[slot as 1 | 2] === 'kill') assert.equal(p.signalCode, 'SIGKILL');
      else assert.equal(p.exitCode, 3);
    }
    // Before the restart, status says so: both slots dead (silent for 3 heartbeats), holding
    // their records; the portal and the other slots carry on.
    await waitFor('the agent to report slots 1 and 2 dead', async () => {
      const st = await agentStatus(localAgent(d.runDirOf()));
      const slots = st.streams[0]!.beacon?.slots ?? [];
      return slots[1]?.state === 'dead' && slots[2]?.state === 'dead';
    }, 10 * HEARTBEAT_MS);
    const st = await portalctlStatus(d);
    const slots = st.streams[0]!.beacon!.slots;
    assert.deepEqual(slots.map((s) => s.state === 'dead'), [false, true, true, false], JSON.stringify(slots));
    for (const s of [1, 2]) {
      assert.equal(slots[s]!.pid, crashers.get(s)!.pid, 'status names the pid that died');
      assert.ok(slots[s]!.queued + slots[s]!.inflight > 0, `slot ${s} holds records for its component`);
      assert.ok(slots[s]!.silentMs > 3 * HEARTBEAT_MS);
    }
    const text = await portalctlAsync(['status', '--map', d.mapFile, '--run-dir', d.runDirOf()]);
    assert.match(text.stdout, /orders\s+running\s+.*\s0:\S+ 1:dead 2:dead 3:\S+$/m);
    await t.test('the portal or agent logs that slots 1 and 2 lost their components', async () => {
      await waitFor('a log line about the dead slots', () => [1, 2].every((s) => slotTroubleLogged(d, s, crashers.get(s)!.pid!)), 1000);
    });

    // systemd would restart them: here the test does.
    for (const slot of crashers.keys()) restarted.set(slot, startFaulty(d, slot));
    await waitFor('the restarted components to register', async () => {
      const s = await d.stats('orders');
      return [1, 2].every((i) => s.slots[i]!.registrations === 2 && s.slots[i]!.pid === restarted.get(i)!.pid);
    });
    const roundsAtRestart = load.rounds;
    await waitFor('records flowing after the restart', () => load.rounds > roundsAtRestart + 20);
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.acked, load.sent, 'every record acknowledged');
  assert.equal(sender.stats.refused, 0);

  const a = analyse(d.map, readRows([0, 1, 2, 3].map((s) => d.outOf('orders', s))), expectedOf('k', KEYS, load.rounds));
  assert.deepEqual(a.missing, [], 'every acknowledged record processed');
  assert.deepEqual(a.problems, []);
  assert.equal(a.duplicates[0], 0, 'slot 0 never failed: no duplicates');
  assert.equal(a.duplicates[3], 0, 'slot 3 never failed: no duplicates');
  for (const [slot, p] of crashers) {
    const m = readMarker(d, slot);
    checkDuplicateBound(slot, a, p.pid!, m.delivery);
    // At least the part of the delivery it crashed in comes again.
    assert.ok(a.duplicates[slot]! >= m.processed, `slot ${slot}: ${a.duplicates[slot]} duplicates, its crash left ${m.processed} processed without DONE`);
  }
  process.stderr.write(`# crash: ${load.sent} records, duplicates per slot ${JSON.stringify(a.duplicates)}\n`);

  const stats = await assertAllUp(d);
  assert.deepEqual(stats.slots.map((s) => s.registrations), [1, 2, 2, 1], 'registrations show the restarts');
  assert.equal(stats.queuedRecords, 0);
  assert.equal(stats.recordsOut, stats.recordsIn);
  // The log: the crashes themselves (the component's last words, on its stderr) and the portal
  // taking each slot over for the new process.
  for (const [slot, p] of crashers) assert.match(logText(d), new RegExp(`faulty: slot ${slot} pid ${p.pid}: ${CRASH[slot as 1 | 2]} in delivery`));
  for (const [slot, p] of restarted) {
    await waitFor(`the portal log to show slot ${slot} registering again`, () =>
      portalLog(d).some((l) => l.includes(`slot ${slot} ready (pid ${p.pid})`)),
    );
  }
});

// ---- 2. busy loop ----------------------------------------------------------------------------

test('a component busy-loops: its slot is reported dead within 3 heartbeats; killed and replaced, every acked record is processed', async (t) => {
  const d = await oneStream({ agent: true });
  const SPIN_SLOT = 3;
  let spinner: ChildProcess | null = null;
  for (let slot = 0; slot < SLOTS; slot++) {
    const p = startFaulty(d, slot, slot === SPIN_SLOT ? { fault: 'spin', after: 2000 } : undefined);
    if (slot === SPIN_SLOT) spinner = p;
  }
  await d.waitSlotsConnected('orders', SLOTS);
  await waitAgent(d);
  const agent = localAgent(d.runDirOf());

  const KEYS = 300;
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const load = new RoundLoad(sender, 'orders', KEYS, 2);
  let replacement: ChildProcess | null = null;
  let spin: ReturnType<typeof readMarker> | undefined;
  try {
    await waitFor('the component to start spinning', () => {
      try {
        spin = readMarker(d, SPIN_SLOT); // written whole just before the spin
        return true;
      } catch {
        return false;
      }
    });
    assert.equal(spin!.pid, spinner!.pid);
    assert.ok(alive(spinner!), 'it is spinning, not dead');
    // The agent asked for fresh beacons: the first report of "dead" comes as soon as the
    // portal judges the slot silent for 3 heartbeats.
    let deadAt = 0;
    let seen: PortalBeacon['slots'][number] | undefined;
    await waitFor('the agent to report the spinning slot dead', async () => {
      const st = await agentStatus(agent, { fresh: true });
      seen = st.streams[0]!.beacon?.slots[SPIN_SLOT];
      deadAt = Date.now();
      return seen?.state === 'dead';
    }, 20 * HEARTBEAT_MS, 10);
    // It went silent when the spin began (or up to a heartbeat before: its last beat), so it
    // is reported dead 3 heartbeats after the spin began, give or take the polling.
    const detectMs = deadAt - spin!.at;
    process.stderr.write(`# busy loop: reported dead ${detectMs} ms after the spin began (silent ${seen!.silentMs} ms)\n`);
    assert.ok(seen!.silentMs > 3 * HEARTBEAT_MS && seen!.silentMs <= 3 * HEARTBEAT_MS + 100, `silent ${seen!.silentMs} ms when first reported dead; heartbeat ${HEARTBEAT_MS} ms`);
    assert.ok(detectMs <= 3 * HEARTBEAT_MS + 150, `reported dead ${detectMs} ms after the spin began; heartbeat ${HEARTBEAT_MS} ms`);
    assert.equal(seen!.pid, spinner!.pid);
    // The other slots are fine; the portal is up; the dead slot's records wait for it.
    // `portalctl status` (the periodic beacons) says so within one more heartbeat.
    let slots: PortalBeacon['slots'] = [];
    await waitFor('portalctl status to show the slot dead', async () => {
      slots = (await portalctlStatus(d)).streams[0]!.beacon!.slots;
      return slots[SPIN_SLOT]!.state === 'dead';
    }, 10 * HEARTBEAT_MS);
    assert.deepEqual(slots.map((s) => s.state === 'dead'), [false, false, false, true], JSON.stringify(slots));
    assert.ok(slots[SPIN_SLOT]!.inflight > 0, 'the delivery it hangs in is still in flight');
    assert.ok(alive(portalProc(d)));
    const text = await portalctlAsync(['status', '--map', d.mapFile, '--run-dir', d.runDirOf()]);
    assert.match(text.stdout, new RegExp(`orders\\s+running\\s+.*\\s${SPIN_SLOT}:dead$`, 'm'));
    await t.test('the portal or agent logs that the busy-looping slot went silent', async () => {
      await waitFor('a log line about the dead slot', () => slotTroubleLogged(d, SPIN_SLOT, spinner!.pid!), 1000);
    });

    // The operator (or a watchdog) kills it; a fresh component takes the slot.
    spinner!.kill('SIGKILL');
    expectedDead.add(spinner!);
    await waitFor('the spinner to die', () => exited(spinner!));
    replacement = startFaulty(d, SPIN_SLOT);
    await waitFor('the replacement to register', async () => {
      const s = (await d.stats('orders')).slots[SPIN_SLOT]!;
      return s.registrations === 2 && s.pid === replacement!.pid;
    });
    await waitFor('the agent to report the slot alive again', async () => {
      const s = (await agentStatus(agent)).streams[0]!.beacon?.slots[SPIN_SLOT];
      return s !== undefined && s.pid === replacement!.pid && s.state !== 'dead';
    });
    const roundsAtRestart = load.rounds;
    await waitFor('records flowing after the replacement', () => load.rounds > roundsAtRestart + 20);
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.acked, load.sent, 'every record acknowledged');
  const a = analyse(d.map, readRows([0, 1, 2, 3].map((s) => d.outOf('orders', s))), expectedOf('k', KEYS, load.rounds));
  assert.deepEqual(a.missing, [], 'every acknowledged record processed');
  assert.deepEqual(a.problems, []);
  assert.deepEqual(a.duplicates.slice(0, 3), [0, 0, 0], 'slots that never failed: no duplicates');
  checkDuplicateBound(SPIN_SLOT, a, spin!.pid, spin!.delivery);
  assert.ok(a.duplicates[SPIN_SLOT]! >= spin!.processed);
  process.stderr.write(`# busy loop: ${load.sent} records, duplicates per slot ${JSON.stringify(a.duplicates)}\n`);

  const stats = await assertAllUp(d);
  assert.deepEqual(stats.slots.map((s) => s.registrations), [1, 1, 1, 2]);
  assert.equal(stats.queuedRecords, 0);
  await waitFor('the portal log to show the slot taken over by the replacement', () =>
    portalLog(d).some((l) => l.includes(`slot ${SPIN_SLOT} ready (pid ${replacement!.pid})`)),
  );
});

// ---- 3. overload -----------------------------------------------------------------------------

test('components overloaded by senders pushing far more: portal queue and memory stay bounded, senders are slowed, nothing acked is lost', async () => {
  const DELAY_MS = 50;
  const d = await oneStream();
  for (let slot = 0; slot < SLOTS; slot++) d.startRecorder('orders', slot, { delayMs: DELAY_MS });
  await d.waitSlotsConnected('orders', SLOTS);
  const portalPid = portalProc(d).pid!;
  const rssBefore = rssMiB(portalPid);
  const window = d.map.streams[0]!.window;

  // Three senders, each as fast as it can: together they may hold 3 x window x 8192 records
  // in flight, well over the portal's 200,000, so the portal's own bound is reached too.
  const SENDERS = 3;
  const KEYS = DEFAULT_BATCH_RECORDS / 2;
  const LOAD_MS = 5000;
  // A linger long enough for two rounds to fill a batch: full-size batches, as a sender that
  // has more to send than the portal takes would make.
  const senders = Array.from({ length: SENDERS }, () => new Sender({ map: d.mapFile, lingerMs: 20 }));
  const loads = senders.map(() => ({ rounds: 0, falses: 0, blockedMs: 0 }));
  let loading = true;
  const loops = senders.map(async (sender, i) => {
    const l = loads[i]!;
    while (loading) {
      let full = false;
      for (let k = 0; k < KEYS; k++) if (!sender.send('orders', { key: `s${i}-k${k}`, seq: l.rounds })) full = true;
      l.rounds++;
      if (full) {
        l.falses++;
        const t0 = performance.now();
        await sender.writable();
        l.blockedMs += performance.now() - t0;
      } else await new Promise((r) => setImmediate(r));
    }
  });
  const processed = () => readRows([0, 1, 2, 3].map((s) => d.outOf('orders', s))).reduce((n, rows) => n + rows.length, 0);
  let maxQueued = 0;
  let maxRss = 0;
  let readingPausedSeen = 0;
  let maxGap = 0;
  let samples = 0;
  let busyBeacon: PortalBeacon | null = null;
  const started = Date.now();
  try {
    while (Date.now() - started < LOAD_MS) {
      const s = await d.stats('orders');
      samples++;
      maxQueued = Math.max(maxQueued, s.queuedRecords);
      if (s.readingPaused) readingPausedSeen++;
      maxRss = Math.max(maxRss, rssMiB(portalPid));
      // How far the senders ran ahead of the components: bounded by their windows.
      const sent = loads.reduce((n, l) => n + l.rounds * KEYS, 0);
      maxGap = Math.max(maxGap, sent - s.recordsOut);
      if (!busyBeacon && Date.now() - started > LOAD_MS / 2) busyBeacon = await beacon(d);
      await new Promise((r) => setTimeout(r, 100)); // the sampling period, not a wait for a condition
    }
    loading = false;
    await Promise.all(loops);
    await Promise.all(senders.map((s) => s.flush()));
  } finally {
    loading = false;
    for (const s of senders) s.close();
  }
  const loadMs = Date.now() - started;
  const sent = loads.reduce((n, l) => n + l.rounds * KEYS, 0);
  process.stderr.write(
    `# overload: ${sent} records in ${loadMs} ms (${samples} samples); max queued ${maxQueued}, reading paused in ${readingPausedSeen} samples; ` +
      `portal RSS ${rssBefore.toFixed(0)} -> max ${maxRss.toFixed(0)} MiB; senders ran ahead by at most ${maxGap}; ` +
      `blocked ${loads.map((l) => `${((100 * l.blockedMs) / LOAD_MS).toFixed(0)}%`).join(' ')} of the load time\n`,
  );

  // The portal's queue: it stops reading above 200,000 records, so at most one more batch.
  assert.ok(maxQueued <= DEFAULT_MAX_QUEUED_RECORDS + DEFAULT_BATCH_RECORDS, `portal queued ${maxQueued} records`);
  assert.ok(maxQueued > DEFAULT_MAX_QUEUED_RECORDS / 2, `the load filled the portal (max queued ${maxQueued})`);
  assert.ok(readingPausedSeen > 0, 'the portal stopped reading from its senders at its bound');
  // Memory: 200,000 queued records of ~40 bytes are ~8 MB, held at most twice (batch and its
  // split); 128 MiB over the start (about 2.5 times what it takes) would mean a leak or an
  // unbounded queue.
  assert.ok(maxRss - rssBefore < 128, `portal RSS grew ${(maxRss - rssBefore).toFixed(0)} MiB (from ${rssBefore.toFixed(0)})`);
  // The senders were slowed to the components' pace: each was told its window was full and
  // waited in writable() for a good part of the load (most of it on an idle machine), and
  // together they never ran further ahead of processing than their windows
  // (per sender: `window` batches in flight, up to 3 closed behind them and one open, of up to
  // 8192 records; plus a round sent between the two readings).
  for (const [i, l] of loads.entries()) {
    assert.ok(l.falses > 0, `sender ${i}: send() said the window was full`);
    assert.ok(l.blockedMs > LOAD_MS / 4, `sender ${i} waited ${l.blockedMs.toFixed(0)} ms of ${LOAD_MS}`);
  }
  assert.ok(maxGap <= SENDERS * ((window + 4) * DEFAULT_BATCH_RECORDS + KEYS), `senders ran ${maxGap} records ahead of processing`);
  // Status while overloaded: every slot busy, deliveries taking about DELAY_MS each.
  assert.ok(busyBeacon, 'a beacon during the load');
  assert.ok(busyBeacon.slots.every((s) => s.state === 'busy' && s.serviceMs >= DELAY_MS), JSON.stringify(busyBeacon.slots));
  assert.ok(busyBeacon.queued + busyBeacon.inflight > 0);

  // Once the load stopped, everything acked was processed: exactly once, no failure here.
  for (const [i, s] of senders.entries()) assert.equal(s.stats.acked, loads[i]!.rounds * KEYS, `sender ${i}: every record acknowledged`);
  const expected = new Map<string, number>();
  for (const [i, l] of loads.entries()) expectedOf(`s${i}-k`, KEYS, l.rounds, expected);
  const a = analyse(d.map, readRows([0, 1, 2, 3].map((s) => d.outOf('orders', s))), expected);
  assert.deepEqual(a.missing, []);
  assert.deepEqual(a.problems, []);
  assert.deepEqual(a.duplicates, [0, 0, 0, 0], 'no failure: no duplicates');
  assert.equal(processed(), sent);
  const stats = await assertAllUp(d);
  assert.equal(stats.recordsOut, sent);
  assert.equal(stats.queuedRecords, 0);
  assert.equal(stats.readingPaused, false);
});

// ---- 4. senders that disconnect mid-batch ----------------------------------------------------

/** A BATCH of records `${prefix}${i}` (seq 0) for i in [from, to), as docs/protocol.md lays it out. */
function batchFrames(seq: number, prefix: string, from: number, to: number, epoch = 1): Buffer[] {
  const w = new EnvelopeWriter();
  const id = Buffer.alloc(16);
  for (let i = from; i < to; i++) {
    id.writeUInt32BE(i, 12);
    w.append(`${prefix}${i}`, id, Date.now(), [], ORDER, { key: `${prefix}${i}`, seq: 0 });
  }
  return [encodeHeader(MessageType.BATCH, seq, epoch, to - from), Buffer.from('orders'), w.take()];
}

/**
 * ZMTP 3.0 by hand, over a plain TCP socket (rfc.zeromq.org/spec/23): what a sender that dies
 * halfway through writing a multipart message leaves on the wire, which no ZeroMQ library can
 * be made to send.
 */
const zmtp = {
  greeting(): Buffer {
    const g = Buffer.alloc(64);
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3; // version 3.0
    g.write('NULL', 12, 'ascii'); // mechanism; as-server (byte 32) 0; filler zero
    return g;
  },
  ready(): Buffer {
    const name = Buffer.from('Socket-Type');
    const value = Buffer.from('DEALER');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(value.length);
    const body = Buffer.concat([Buffer.from([5]), Buffer.from('READY'), Buffer.from([name.length]), name, len, value]);
    return Buffer.concat([Buffer.from([0x04, body.length]), body]);
  },
  /** One frame; `more` if another frame of the message follows. */
  frame(data: Buffer, more: boolean): Buffer {
    const long = data.length > 255;
    const head = Buffer.alloc(long ? 9 : 2);
    head[0] = (more ? 0x01 : 0) | (long ? 0x02 : 0);
    if (long) head.writeBigUInt64BE(BigInt(data.length), 1);
    else head[1] = data.length;
    return Buffer.concat([head, data]);
  },
  message(frames: Buffer[]): Buffer {
    return Buffer.concat(frames.map((f, i) => zmtp.frame(f, i < frames.length - 1)));
  },
  /**
   * Connects, greets, writes READY and `bytes`, closes (FIN); resolves once closed. The rest
   * waits for the portal's greeting: libzmq 4.3 fails the handshake (ZMTP protocol error) when
   * a greeting and what follows it arrive in one read.
   */
  async sendAndClose(port: number, bytes: Buffer): Promise<void> {
    const sock = tcpConnect(port, '127.0.0.1');
    let got = 0;
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.once('connect', () => sock.write(zmtp.greeting()));
      sock.on('data', (data: Buffer) => {
        const before = got;
        got += data.length;
        if (before < 64 && got >= 64) sock.end(Buffer.concat([zmtp.ready(), bytes]));
      });
      sock.once('close', () => resolve());
    });
  },
};

test('senders that disconnect mid-batch, and multipart messages cut short: the portal stays up, counts the malformed, other senders lose nothing', async () => {
  const d = await oneStream({ stream: { window: 16 } }); // A's 10 batches fit in one window
  // Slow deliveries (10 ms), so a batch is still in the portal when its sender has gone.
  for (let slot = 0; slot < SLOTS; slot++) d.startRecorder('orders', slot, { delayMs: 10 });
  await d.waitSlotsConnected('orders', SLOTS);
  const port = d.map.streams[0]!.port;
  const before = await d.stats('orders');

  const KEYS = 200;
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const load = new RoundLoad(sender, 'orders', KEYS, 2);
  const acked = new Set<number>();
  let goneAccepted = 0;
  try {
    await waitFor('records flowing', () => load.rounds > 10);

    // A: a DEALER that sends 10 batches, reads the first 3 ACKs and closes at once (linger 0)
    // with the rest unacknowledged.
    const a = new zmq.Dealer({ linger: 0 });
    a.connect(`tcp://127.0.0.1:${port}`);
    for (let b = 0; b < 10; b++) await a.send(batchFrames(b + 1, 'a-', b * 10, b * 10 + 10));
    while (acked.size < 3) {
      const [h] = await a.receive();
      assert.equal(h![3], MessageType.ACK);
      acked.add(h!.readUInt32BE(4));
    }
    a.close();

    // B: a DEALER whose BATCHes are cut short to fewer frames: each answered MALFORMED.
    const b = new zmq.Dealer({ linger: 0 });
    b.connect(`tcp://127.0.0.1:${port}`);
    const short = [batchFrames(1, 'b-', 0, 10).slice(0, 2), batchFrames(2, 'b-', 10, 20).slice(0, 1)];
    for (const frames of short) {
      await b.send(frames);
      const [h, code, message] = await b.receive();
      assert.equal(h![3], MessageType.ERROR);
      assert.equal(code!.toString(), 'MALFORMED');
      assert.match(message!.toString(), new RegExp(`a BATCH has 3 frames, this one has ${frames.length}`));
    }
    b.close();

    // C: raw TCP, 3 whole BATCHes, then the connection closes before any ACK: accepted and
    // processed though no one is left to tell.
    const c = Buffer.concat([0, 1, 2].map((i) => zmtp.message(batchFrames(i + 1, 'c-', i * 10, i * 10 + 10))));
    await zmtp.sendAndClose(port, c);
    // D: raw TCP, one whole BATCH, then one cut off in its last frame (300 of 600 bytes)...
    const cut = batchFrames(2, 'd-', 10, 30);
    const cutBytes = zmtp.message(cut);
    await zmtp.sendAndClose(port, Buffer.concat([zmtp.message(batchFrames(1, 'd-', 0, 10)), cutBytes.subarray(0, cutBytes.length - cut[2]!.length / 2)]));
    // E: ...and one that stops after its stream frame, the body frame never started.
    await zmtp.sendAndClose(port, Buffer.concat([zmtp.message(batchFrames(1, 'e-', 0, 10)), zmtp.frame(encodeHeader(MessageType.BATCH, 2, 1, 10), true), zmtp.frame(Buffer.from('orders'), true)]));

    await waitFor('the records of the senders that left to be processed', () => {
      const rows = readRows([0, 1, 2, 3].map((s) => d.outOf('orders', s)), (k) => /^[cde]-/.test(k)).flat();
      return rows.length >= 30 + 10 + 10;
    });
    const roundsNow = load.rounds;
    await waitFor('the good sender still going', () => load.rounds > roundsNow + 10);
    await load.stop();
    await sender.flush();
  } finally {
    sender.close();
    await load.stop().catch(() => undefined);
  }
  assert.equal(sender.stats.acked, load.sent);
  const files = [0, 1, 2, 3].map((s) => d.outOf('orders', s));
  // The good sender: exactly once, in order, as if nothing had happened.
  const good = analyse(d.map, readRows(files, (k) => /^k\d+$/.test(k)), expectedOf('k', KEYS, load.rounds));
  assert.deepEqual(good.missing, []);
  assert.deepEqual(good.problems, []);
  assert.deepEqual(good.duplicates, [0, 0, 0, 0]);
  // Those that left: what the portal got whole is processed once; a cut message not at all.
  await waitFor('the portal to finish every batch it accepted', async () => {
    const s = await d.stats('orders');
    return s.queuedRecords === 0 && s.batchesAcked === s.batchesIn;
  });
  const count = new Map<string, number>();
  for (const r of readRows(files, (k) => !/^k\d+$/.test(k)).flat()) count.set(r.key, (count.get(r.key) ?? 0) + 1);
  const times = (prefix: string, from: number, to: number) => Array.from({ length: to - from }, (_, i) => count.get(`${prefix}${from + i}`) ?? 0);
  for (let bt = 0; bt < 10; bt++) {
    const n = times('a-', bt * 10, bt * 10 + 10);
    if (acked.has(bt + 1)) assert.deepEqual(n, Array(10).fill(1), `A's batch ${bt + 1} was acknowledged: processed once`);
    else assert.ok(n.every((x) => x === n[0] && x <= 1), `A's batch ${bt + 1}: processed whole once or not at all (${n})`);
    if (n[0] === 1) goneAccepted++;
  }
  assert.deepEqual(times('c-', 0, 30), Array(30).fill(1), 'C: the 3 batches sent before closing are processed once');
  assert.deepEqual(times('d-', 0, 30), [...Array(10).fill(1), ...Array(20).fill(0)], 'D: the whole batch once, the cut one not at all');
  assert.deepEqual(times('e-', 0, 10), Array(10).fill(1), 'E: the whole batch once');
  assert.deepEqual([...count.keys()].filter((k) => !/^[acde]-\d+$/.test(k)), [], 'nothing else processed (B was refused)');

  const stats = await assertAllUp(d);
  const delta = (code: string) => (stats.errors[code] ?? 0) - (before.errors[code] ?? 0);
  assert.equal(delta('MALFORMED'), 2, "B's two short messages counted as MALFORMED; cut-off wire messages never reach the portal");
  assert.deepEqual(Object.keys(stats.errors).filter((k) => k !== 'MALFORMED'), [], JSON.stringify(stats.errors));
  assert.equal(stats.batchesAcked, stats.batchesIn, 'batches of senders that left were finished too (their ACK went nowhere)');
  assert.equal(stats.recordsOut, stats.recordsIn);
  await waitFor('the MALFORMED cause in the portal log', () => portalLog(d).some((l) => l.includes('"cause":"MALFORMED"') && l.includes('a BATCH has 3 frames, this one has 2')));
  process.stderr.write(`# disconnects: ${load.sent} good records; A got ${acked.size} ACKs, ${goneAccepted} of its 10 batches processed\n`);
});

// ---- 5. random and mutated frames ------------------------------------------------------------

/** mulberry32: a small seeded PRNG, so a failing run can be repeated with its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Mutated BATCH messages (and plain garbage), from a seed. */
class Fuzzer {
  private readonly rnd: () => number;
  private fuzzKey = 0;
  constructor(seed: number) {
    this.rnd = prng(seed);
  }
  int(n: number): number {
    return Math.floor(this.rnd() * n);
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  /** A valid BATCH of 1-20 records (keys fz-N), sometimes with provenance. */
  valid(seq: number): Buffer[] {
    const w = new EnvelopeWriter();
    const n = 1 + this.int(20);
    for (let i = 0; i < n; i++) {
      const key = `fz-${this.fuzzKey++}`;
      const prov = this.int(4) === 0 ? [`solo/orders/${this.int(4)}`, 'x'.repeat(this.int(40))] : [];
      w.append(key, this.bytes(16), Date.now() - this.int(1e9), prov, ORDER, { key, seq: this.int(1e6) });
    }
    return [encodeHeader(MessageType.BATCH, seq, 1, n), Buffer.from('orders'), w.take()];
  }

  /** One message: a valid batch put through 1-3 mutations, or garbage; ~1 in 12 left valid. */
  message(seq: number): { frames: Buffer[]; how: string[] } {
    if (this.int(12) === 0) return { frames: this.valid(seq), how: ['valid'] };
    if (this.int(10) === 0) {
      const frames = Array.from({ length: 1 + this.int(5) }, () => this.bytes(this.int(80)));
      // Half the time the first frame passes as a header, so later checks are reached.
      if (this.int(2) === 0) frames[0] = Buffer.concat([Buffer.from('FL'), this.bytes(14)]);
      return { frames, how: ['garbage'] };
    }
    let frames: Buffer[] = this.valid(seq).map((f) => Buffer.from(f));
    const how: string[] = [];
    for (let k = 1 + this.int(3); k > 0; k--) {
      const op = this.pick(['flip-header', 'flip-body', 'truncate', 'extend', 'count', 'frames', 'stream', 'type', 'version', 'short-header', 'append'] as const);
      how.push(op);
      const [h = Buffer.alloc(0), s = Buffer.alloc(0), b = Buffer.alloc(0)] = frames;
      switch (op) {
        case 'flip-header':
          for (let i = 1 + this.int(3); i > 0 && h.length > 0; i--) h[this.int(h.length)] ^= 1 + this.int(255);
          break;
        case 'flip-body':
          for (let i = 1 + this.int(4); i > 0 && b.length > 0; i--) b[this.int(b.length)] ^= 1 + this.int(255);
          break;
        case 'truncate':
          frames[2] = b.subarray(0, this.int(b.length));
          break;
        case 'extend':
          // Now and then past max_batch_bytes (16 KiB here), but under the size libzmq takes.
          frames[2] = Buffer.concat([b, this.bytes(this.int(20) === 0 ? 16_384 + this.int(40_000) : 1 + this.int(64))]);
          break;
        case 'count':
          if (h.length === 16) h.writeUInt32BE(this.pick([0, 1, h.readUInt32BE(12) + 1, Math.max(0, h.readUInt32BE(12) - 1), this.int(2 ** 32)]) >>> 0, 12);
          break;
        case 'frames':
          if (this.int(2) === 0 && frames.length > 1) frames.splice(this.int(frames.length), 1);
          else frames.splice(this.int(frames.length + 1), 0, ...Array.from({ length: 1 + this.int(3) }, () => this.bytes(this.int(40))));
          break;
        case 'stream':
          frames[1] = this.pick([Buffer.from('Orders'), Buffer.alloc(0), Buffer.from('orders\0'), this.bytes(this.int(30)), Buffer.from('orders'), s]);
          break;
        case 'type':
          if (h.length >= 4) h[3] = this.int(24);
          break;
        case 'version':
          if (h.length >= 3) h[2] = this.pick([0, 2, 255, this.int(256)]);
          break;
        case 'short-header':
          frames[0] = h.subarray(0, this.int(16));
          break;
        case 'append': {
          // Another well-formed record, with or without the count updated.
          const extra = this.valid(0)[2]!;
          frames[2] = Buffer.concat([b, extra]);
          if (this.int(2) === 0 && h.length === 16) h.writeUInt32BE((h.readUInt32BE(12) + countIn(extra)) >>> 0, 12);
          break;
        }
      }
      frames = frames.filter((f) => f !== undefined);
    }
    return { frames, how };
  }
}

/** Records in a body the fuzzer made from valid records alone (envelopes end to end). */
function countIn(body: Buffer): number {
  let n = 0;
  let pos = 0;
  /** Reads an Avro long (zig-zag varint) at pos, moving past it. */
  const long = () => {
    let z = 0;
    let mul = 1;
    for (;;) {
      const x = body[pos++]!;
      z += (x & 0x7f) * mul;
      if (x < 0x80) break;
      mul *= 128;
    }
    return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  };
  const skipBytes = () => {
    const len = long();
    pos += len;
  };
  while (pos < body.length) {
    skipBytes(); // key
    pos += 16; // id
    long(); // timestamp
    for (let items = long(); items !== 0; items = long()) for (let i = 0; i < items; i++) skipBytes(); // provenance
    skipBytes(); // payload
    n++;
  }
  return n;
}

/** What the portal reads as a message's seq: the header's, or 0 if the first frame is no header. */
function seqAsRead(frames: Buffer[]): number {
  const h = frames[0];
  return h && h.length === 16 && h[0] === 0x46 && h[1] === 0x4c ? h.readUInt32BE(4) : 0;
}

test('thousands of random and mutated frames: every one answered, counted by code, the portal stays up, and a valid sender afterwards loses nothing', async () => {
  const seed = Number(process.env.FLOTILLA_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));
  process.stderr.write(`# fuzz seed ${seed} (FLOTILLA_FUZZ_SEED=${seed} repeats this run)\n`);
  const d = await oneStream({ stream: { max_batch_bytes: 16_384 } });
  for (let slot = 0; slot < SLOTS; slot++) d.startRecorder('orders', slot);
  await d.waitSlotsConnected('orders', SLOTS);
  const port = d.map.streams[0]!.port;
  const before = await d.stats('orders');
  const fuzz = new Fuzzer(seed);

  const DEALERS = 4;
  const PER_DEALER = Number(process.env.FLOTILLA_FUZZ_PER_DEALER ?? 1500);
  const replies = { total: 0, ACK: 0, codes: {} as Record<string, number>, unexpected: [] as string[] };
  const lanes = Array.from({ length: DEALERS }, () => ({ socket: new zmq.Dealer({ linger: 0 }), owed: new Map<number, number>(), sent: 0, got: 0 }));
  const kinds = new Map<string, number>();
  const fuzzStarted = Date.now();
  try {
    const receiving = lanes.map(async (lane, i) => {
      for (;;) {
        let msg: Buffer[];
        try {
          msg = await lane.socket.receive();
        } catch {
          return; // closed
        }
        lane.got++;
        replies.total++;
        const h = msg[0]!;
        const seq = h.readUInt32BE(4);
        const left = lane.owed.get(seq) ?? 0;
        if (left === 0 && replies.unexpected.length < 10) replies.unexpected.push(`dealer ${i}: a reply for seq ${seq}, which no message of it had (or already answered)`);
        if (left <= 1) lane.owed.delete(seq);
        else lane.owed.set(seq, left - 1);
        if (h[3] === MessageType.ACK) replies.ACK++;
        else if (h[3] === MessageType.ERROR) replies.codes[msg[1]!.toString()] = (replies.codes[msg[1]!.toString()] ?? 0) + 1;
        else if (replies.unexpected.length < 10) replies.unexpected.push(`dealer ${i}: reply of type ${h[3]}`);
      }
    });
    for (const lane of lanes) lane.socket.connect(`tcp://127.0.0.1:${port}`);
    await Promise.all(
      lanes.map(async (lane, i) => {
        for (let n = 0; n < PER_DEALER; n++) {
          const { frames, how } = fuzz.message(i * PER_DEALER + n + 1);
          for (const op of how) kinds.set(op, (kinds.get(op) ?? 0) + 1);
          const seq = seqAsRead(frames);
          lane.owed.set(seq, (lane.owed.get(seq) ?? 0) + 1);
          lane.sent++;
          await lane.socket.send(frames);
        }
      }),
    );
    await waitFor(
      `a reply to each of the ${DEALERS * PER_DEALER} messages (seed ${seed})`,
      () => lanes.every((l) => l.got === l.sent),
      30_000,
    );
    process.stderr.write(
      `# fuzz: ${DEALERS * PER_DEALER} messages in ${Date.now() - fuzzStarted} ms; replies ${JSON.stringify({ ACK: replies.ACK, ...replies.codes })}; mutations ${JSON.stringify(Object.fromEntries(kinds))}\n`,
    );
    assert.deepEqual(replies.unexpected, [], `seed ${seed}`);
    assert.ok(lanes.every((l) => l.owed.size === 0), `seed ${seed}: every message answered once, with its seq`);
  } finally {
    for (const lane of lanes) lane.socket.close();
  }

  // A frame beyond what libzmq takes from a sender (4 x max_batch_bytes + 64 KiB) costs that
  // sender its connection, nothing more.
  const big = new zmq.Dealer({ linger: 0 });
  const events = big.events;
  let dropped = false;
  void (async () => {
    for await (const e of events) if (e.type === 'disconnect') dropped = true;
  })();
  big.connect(`tcp://127.0.0.1:${port}`);
  await big.send([encodeHeader(MessageType.BATCH, 1, 1, 1), Buffer.from('orders'), Buffer.alloc(200_000)]);
  await waitFor('the portal to drop the connection of the oversized frame', () => dropped);
  big.close();

  // The portal: up, counted every refusal by code, exactly as the replies said.
  const stats = await assertAllUp(d);
  const seedNote = `seed ${seed}`;
  for (const code of new Set([...Object.keys(replies.codes), ...Object.keys(stats.errors)])) {
    assert.equal((stats.errors[code] ?? 0) - (before.errors[code] ?? 0), replies.codes[code] ?? 0, `${seedNote}: portal's ${code} count vs. replies`);
  }
  assert.ok((replies.codes.MALFORMED ?? 0) > 1000, `${seedNote}: mostly MALFORMED`);
  for (const code of ['UNSUPPORTED_VERSION', 'UNKNOWN_STREAM', 'TOO_LARGE']) assert.ok((replies.codes[code] ?? 0) > 0, `${seedNote}: some ${code}`);
  assert.equal(stats.batchesIn - before.batchesIn, replies.ACK, `${seedNote}: a batch taken for every ACK`);
  await waitFor('every accepted batch finished', async () => {
    const s = await d.stats('orders');
    return s.batchesAcked === s.batchesIn && s.queuedRecords === 0;
  });
  // The log: each cause, a few lines (once per 5 s interval with a count), never one per frame;
  // and no handler failure.
  await waitFor('the MALFORMED cause in the portal log', () => portalLog(d).some((l) => l.includes('"cause":"MALFORMED"')));
  const causeLines = portalLog(d).filter((l) => l.includes('"cause":'));
  const causes = new Set(causeLines.map((l) => /"cause":"([A-Z_]+)"/.exec(l)?.[1]));
  const intervals = Math.ceil((Date.now() - fuzzStarted) / 5000) + 1;
  assert.ok(causeLines.length <= causes.size * 2 * intervals, `${causeLines.length} cause lines (${causes.size} causes, ${intervals} intervals) for ${DEALERS * PER_DEALER} bad messages`);
  assert.deepEqual(portalLog(d).filter((l) => /unexpected error/.test(l)), [], 'no handler failed');

  // A valid sender afterwards: everything through, exactly once, in order.
  const KEYS = 200;
  const ROUNDS = 50;
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  try {
    for (let q = 0; q < ROUNDS; q++) {
      for (let k = 0; k < KEYS; k++) if (!sender.send('orders', { key: `good-${k}`, seq: q })) await sender.writable();
    }
    await sender.flush();
  } finally {
    sender.close();
  }
  assert.equal(sender.stats.acked, KEYS * ROUNDS);
  assert.equal(sender.stats.refused, 0);
  const a = analyse(d.map, readRows([0, 1, 2, 3].map((s) => d.outOf('orders', s)), (k) => k.startsWith('good-')), expectedOf('good-', KEYS, ROUNDS));
  assert.deepEqual(a.missing, []);
  assert.deepEqual(a.problems, []);
  assert.deepEqual(a.duplicates, [0, 0, 0, 0]);
  await assertAllUp(d);
});
