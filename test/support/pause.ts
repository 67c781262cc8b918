/**
 * `pause --wait` from inside a test process: the agent is asked to pause, then polled with the
 * check portalctl uses (agent/status-view.ts notIdle) until nothing is busy. It saves the node
 * start-up of a portalctl process where a test pauses many times.
 */
import { strict as assert } from 'node:assert';
import { describeNotIdle, notIdle } from '../../agent/status-view';
import { agentPause, agentStatus, type AgentTarget } from '../../src/agent/client';

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
