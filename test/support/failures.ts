/**
 * What the failure tests share (component crash, busy loop, overload, disconnect mid-batch,
 * fuzzed frames; docs/delivery.md, "What survives what"): a one-stream deployment, the component
 * that fails on cue (fixtures/faulty.ts) and what it leaves behind, and the checks each test makes
 * once its failure is over: every other process still up and the portal answering, the failure
 * shown in the logs and in `portalctl status`.
 *
 * Each test file calls `after(stopDeployments)` to tear down the deployments it made.
 */
import { strict as assert } from 'node:assert';
import { type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentStatus } from '../../src/protocol/control';
import type { PortalStats } from '../../src/portal/portal';
import { deploy, DIST, portalctlAsync, startAgent, type Deployment } from './deploy';
import { RECORD_SCHEMA } from './flows';
import { freePorts } from './ports';

/** The heartbeat of the failure tests' maps: short, so a silent slot is judged dead quickly. */
export const HEARTBEAT_MS = 200;
/** Slots of the stream `orders`. */
export const SLOTS = 4;

const deployments: Deployment[] = [];

/** Stops every deployment made by oneStream (for `after`); FLOTILLA_TEST_LOGS=1 prints their logs. */
export async function stopDeployments(): Promise<void> {
  await Promise.all(deployments.map((d) => d.stop()));
  if (process.env.FLOTILLA_TEST_LOGS) for (const d of deployments) process.stderr.write(d.logs.join(''));
}

/**
 * One server `solo`, one stream `orders` of 4 slots (256 buckets), 200 ms heartbeats, its
 * portal started, and an agent when asked; `stream` adds to or overrides the stream's fields.
 */
export async function oneStream(opts: { agent?: boolean; stream?: Record<string, unknown> } = {}): Promise<Deployment> {
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

/** The record files of the slots of `orders`, in slot order. */
export const slotFiles = (d: Deployment): string[] => Array.from({ length: SLOTS }, (_, s) => d.outOf('orders', s));

const FAULTY = join(DIST, 'test', 'fixtures', 'faulty.js');

/** What fixtures/faulty.ts writes just before it fails. */
export interface FaultMarker {
  pid: number;
  fault: string;
  /** When it failed, ms since the Unix epoch. */
  at: number;
  /** The number of the delivery it failed in (its deliveries count from 1). */
  delivery: number;
  /** Records in that delivery. */
  records: number;
  /** Of them, those it processed (and recorded) before failing. */
  processed: number;
}

const markerOf = (d: Deployment, slot: number) => join(d.dir, `fault-${slot}.json`);

/** Starts fixtures/faulty.js for a slot of `orders`: a recorder that fails on cue (or never). */
export function startFaulty(d: Deployment, slot: number, fault?: { fault: 'exit' | 'kill' | 'spin'; after: number }): ChildProcess {
  const args = ['--map', d.mapFile, '--server', 'solo', '--stream', 'orders', '--slot', String(slot), '--run-dir', d.runDirOf(), '--out', d.outOf('orders', slot)];
  if (fault) args.push('--fault', fault.fault, '--after', String(fault.after), '--marker', markerOf(d, slot));
  return d.startComponent(FAULTY, args);
}

/** The marker of the faulty component of `slot` (throws until it has failed: the file is written whole). */
export const readMarker = (d: Deployment, slot: number): FaultMarker => JSON.parse(readFileSync(markerOf(d, slot), 'utf8')) as FaultMarker;

export const alive = (p: ChildProcess): boolean => p.exitCode === null && p.signalCode === null;
export const exited = (p: ChildProcess): boolean => !alive(p);
/** The portal process of the deployment. */
export const portalProc = (d: Deployment): ChildProcess => d.procs.find((p) => p.spawnargs.some((a) => a.endsWith(join('portal', 'main.js'))))!;
export const logText = (d: Deployment): string => d.logs.join('');
/** Lines of the portal's JSON log (pino, name "portal"). */
export const portalLog = (d: Deployment): string[] => logText(d).split('\n').filter((l) => l.includes('"name":"portal"'));

/** `portalctl status --json` against this server's agent, as an operator's script would. */
export async function portalctlStatus(d: Deployment): Promise<AgentStatus> {
  const r = await portalctlAsync(['status', '--json', '--map', d.mapFile, '--run-dir', d.runDirOf()]);
  // 0 healthy, 3 and up a health code (a dead slot is what these tests make); 1 and 2 are failures.
  assert.ok(r.status === 0 || (r.status !== null && r.status >= 3), `portalctl status exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as AgentStatus;
}

/**
 * A line in the portal's or agent's log that says slot `slot` of `pid` stopped answering: what
 * an operator reading `journalctl` would need.
 */
const SLOT_TROUBLE = /\b(dead|silent|not heard|gone|lost|disconnected|unreachable|stopped answering|missing)\b/i;
export function slotTroubleLogged(d: Deployment, slot: number, pid: number): boolean {
  return logText(d)
    .split('\n')
    .some((l) => (l.includes('"name":"portal"') || l.includes('"name":"agent"')) && l.includes(`slot ${slot}`) && l.includes(String(pid)) && SLOT_TROUBLE.test(l));
}

/** Processes a test killed (or made to crash) on purpose: assertAllUp does not count them. */
export const expectedDead = new Set<ChildProcess>();

/** Asserts that every process of the deployment is up (but those killed on purpose) and the portal answers stats. */
export async function assertAllUp(d: Deployment): Promise<PortalStats> {
  const down = d.procs.filter((p) => !alive(p) && !expectedDead.has(p)).map((p) => `${p.spawnargs.slice(1, 2).join(' ')} (pid ${p.pid}): ${p.exitCode ?? p.signalCode}`);
  assert.deepEqual(down, [], 'every process still up');
  return d.stats('orders');
}
