/**
 * Cancelling a root from a client (docs/protocol.md, "Cancellation"): the request goes to every
 * agent of the map at once, and each keeps it on disk and tells its portals.
 *
 *   Sender.cancel(root) / portalctl cancel --{"cmd":"cancel", stream, root, ttlMs}--> every agent
 */
import { FlotillaError } from '../errors';
import { askAgent, type AgentTarget, describeAgent, localAgent, remoteAgent } from '../agent/client';
import type { FlotillaMap } from '../map/types';
import { type CancelReply, DEFAULT_CANCEL_TTL_MS } from '../protocol/cancel';
import { isRootId } from '../protocol/root';

/** An agent's `cancel` may wait for its portals, and they for their components. */
export const CANCEL_TIMEOUT_MS = 10_000;

/** Every agent of the map: those with an agent_port over TCP; with none, this server's own. */
export function agentsOf(map: FlotillaMap): AgentTarget[] {
  const remote = map.servers.map(remoteAgent).filter((t): t is AgentTarget => t !== null);
  return remote.length > 0 ? remote : [localAgent(map.runDir)];
}

/**
 * Sends a cancellation to `targets` (default every agent of `map`). Resolves with every agent's
 * reply; throws CANCEL_INCOMPLETE naming the agents that did not take it (the others did).
 */
export async function cancelEverywhere(
  map: FlotillaMap,
  req: { stream: string; root: string; ttlMs?: number },
  timeoutMs = CANCEL_TIMEOUT_MS,
  targets = agentsOf(map),
): Promise<CancelReply[]> {
  if (!isRootId(req.root)) throw new FlotillaError('BAD_REQUEST', `"${req.root}" is not a root id: a record id as 32 lowercase hex digits`);
  const request = { cmd: 'cancel' as const, stream: req.stream, root: req.root, ttlMs: req.ttlMs ?? DEFAULT_CANCEL_TTL_MS };
  const outcomes = await Promise.all(targets.map((t) => askAgent(t, request, timeoutMs).then((r) => ({ t, r, err: null }), (err: unknown) => ({ t, r: null, err }))));
  const failed = outcomes.filter((o) => o.r === null);
  if (failed.length > 0) {
    const why = failed.map((o) => `${describeAgent(o.t)}: ${(o.err as Error).message}`).join('; ');
    throw new FlotillaError('CANCEL_INCOMPLETE', `cancel ${req.root}: ${failed.length} of ${targets.length} agents did not take it (${why}); send it again`);
  }
  return outcomes.map((o) => o.r!);
}
