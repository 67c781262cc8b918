/**
 * The control plane's speed: a full pause -> idle -> resume across three servers, with 250 ms
 * heartbeats, while records flow.
 *
 *   sender --> alpha, beta, gamma portals (2 sink slots each), each with its agent
 *   t0: pause every agent (parallel) -> poll each agent's fresh status until all idle -> resume
 *   every agent: t1. pause_resume_ms = t1 - t0 (median of RUNS).
 *
 * The agents are asked through the library `portalctl` uses (agent-client), so the figure is the
 * control plane's, without the start-up time of a `portalctl` process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { agentPause, agentResume, agentStatus, localAgent } from '../src/agent/client';
import { requestJson } from '../src/transport/request';
import { stopChildren } from '../daemon/children';
import { portalStats } from '../src/portal/client';
import { agentControlEndpoint } from '../src/protocol/endpoints';
import { Sender } from '../src/sender/sender';
import { freePorts } from '../test/support/ports';

const DIST = join(__dirname, '..');
const SERVERS = ['alpha', 'beta', 'gamma'];
const SLOTS = 2;
const RUNS = 5;
const HEARTBEAT_MS = 250;
/** Records per second the sender offers while the pauses happen. */
const RATE = 20_000;

export interface PauseResumeResult {
  /** Median of the runs, ms. */
  pauseResumeMs: number;
  runsMs: number[];
  heartbeatMs: number;
  servers: number;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`pause-resume bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runs the measurement in `dir`; every process it starts is stopped before it returns. */
export async function runPauseResume(dir: string): Promise<PauseResumeResult> {
  const ports = await freePorts(2 * SERVERS.length);
  const runDir = join(dir, 'pr-run');
  const mapFile = join(dir, 'pause-resume.yaml');
  writeFileSync(
    mapFile,
    stringify({
      instance: 'bench',
      epoch: 1,
      heartbeat_ms: HEARTBEAT_MS,
      run_dir: runDir,
      security: { plain_tcp: true }, // every server on loopback
      servers: SERVERS.map((name, i) => ({ name, host: '127.0.0.1', ports: { bench: ports[i] }, agent_port: ports[SERVERS.length + i] })),
      streams: [
        {
          name: 'bench',
          key: 'key',
          port: ports[0],
          buckets: 1024,
          slots: SLOTS,
          schema: { type: 'record', name: 'R', fields: [{ name: 'key', type: 'string' }, { name: 'n', type: 'long' }] },
        },
      ],
    }),
  );
  const children: ChildProcess[] = [];
  const launch = (args: string[]) => children.push(spawn(process.execPath, args, { stdio: 'ignore' }));
  const serverRunDir = (s: string) => join(runDir, s);
  const sender = new Sender({ map: mapFile, log: undefined });
  let sending = true;
  try {
    for (const s of SERVERS) {
      const common = ['--map', mapFile, '--server', s, '--run-dir', serverRunDir(s)];
      launch([join(DIST, 'agent', 'main.js'), ...common]);
      launch([join(DIST, 'portal', 'main.js'), ...common, '--stream', 'bench']);
      for (let slot = 0; slot < SLOTS; slot++) launch([join(DIST, 'bench', 'sink.js'), mapFile, s, 'bench', String(slot), serverRunDir(s)]);
    }
    for (const s of SERVERS) {
      await until(`the agent of ${s}`, async () => Boolean(await requestJson(agentControlEndpoint(serverRunDir(s)), { cmd: 'ping' }, 500)));
      await until(`the slots of ${s}`, async () => (await portalStats(serverRunDir(s), 'bench', 500)).slots.every((x) => x.connected));
    }
    const load = (async () => {
      let n = 0;
      const started = Date.now();
      while (sending) {
        const due = Math.floor(((Date.now() - started) / 1000) * RATE);
        for (; n < due; n++) sender.send('bench', { key: `k${n % 10_000}`, n });
        await sender.writable();
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    const agents = SERVERS.map((s) => localAgent(serverRunDir(s)));
    await until('records flowing', async () => sender.stats.acked > RATE / 2);
    const runsMs: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      await Promise.all(agents.map((a) => agentPause(a)));
      await until('every server idle', async () => (await Promise.all(agents.map((a) => agentStatus(a, { fresh: true })))).every((st) => st.idle));
      await Promise.all(agents.map((a) => agentResume(a)));
      runsMs.push(performance.now() - t0);
      // Let the flow pick up again before the next run.
      const acked = sender.stats.acked;
      await until('records flowing again', async () => sender.stats.acked > acked + RATE / 10);
    }
    sending = false;
    await load;
    const sorted = [...runsMs].sort((a, b) => a - b);
    return {
      pauseResumeMs: Math.round(sorted[Math.floor(sorted.length / 2)]! * 10) / 10,
      runsMs: runsMs.map((x) => Math.round(x * 10) / 10),
      heartbeatMs: HEARTBEAT_MS,
      servers: SERVERS.length,
    };
  } finally {
    sending = false;
    sender.close();
    await stopChildren(children, 2000);
  }
}
