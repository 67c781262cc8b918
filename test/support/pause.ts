/**
 * What the pause and stop tests of a flow share: `startFlow` starts a one-host flow of streams
 * on a deployment (a portal each, a recorder per slot, the agent); `pauseWait` is `pause --wait` from inside
 * the test process (the agent asked to pause, then polled with the check portalctl uses,
 * agent/status-view.ts notIdle), which saves the node start-up of a portalctl per pause.
 */
import { strict as assert } from 'node:assert';
import pino from 'pino';
import { describeNotIdle, notIdle } from '../../agent/status-view';
import { agentPause, agentStatus, type AgentTarget } from '../../src/agent/client';
import { startAgent, waitAgent, type Deployment } from './deploy';

/** A logger for a test's sender: warnings only (it logs every pause and resume). */
export const quietLog = pino({ level: 'warn' });

/**
 * Starts on deployment `d`, for each of `streams` (in order), its portal and a recorder on each
 * of its `slots` slots with the options given (emit, args), and with `agent` the agent too; then
 * waits until they answer. `d` is the caller's before this is called, so a test's `after` stops
 * whatever started even when the wait fails.
 */
export async function startFlow(d: Deployment, slots: number, streams: { name: string; emit?: string; args?: string[] }[], agent: boolean): Promise<void> {
  if (agent) startAgent(d);
  for (const s of streams) d.startPortal(s.name);
  for (let slot = 0; slot < slots; slot++) for (const s of streams) d.startRecorder(s.name, slot, { emit: s.emit, args: s.args });
  if (agent) await waitAgent(d);
  for (const s of streams) await d.waitSlotsConnected(s.name, slots);
}

/** Pauses `streams` (default all) through `agent` and waits until every process is paused and idle; ms taken. */
export async function pauseWait(agent: AgentTarget, timeoutMs: number, streams?: string[]): Promise<number> {
  const started = Date.now();
  const paused = await agentPause(agent, streams, 3000);
  assert.equal(paused.ok, true, JSON.stringify(paused));
  for (;;) {
    const waiting = notIdle(await agentStatus(agent, { fresh: true }), streams);
    if (waiting.length === 0) return Date.now() - started;
    if (Date.now() - started > timeoutMs) assert.fail(`not idle after ${timeoutMs} ms: ${waiting.map(describeNotIdle).join('; ')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
