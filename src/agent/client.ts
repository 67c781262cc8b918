/**
 * Request/reply with an agent: one JSON request, one JSON reply, over ipc (this server's agent,
 * in the run directory) or tcp (another server's agent, at its `agent_port`), bounded by a
 * timeout. The agent uses the same call to reach its portals' control sockets.
 *
 *   portalctl --REQ {"cmd":"status"}--> agent --REQ {"cmd":"pause"}--> portal control socket
 */
import { FlotillaError } from '../errors';
import type { MapServer } from '../map/types';
import type { AgentReplies, AgentRequest, AgentStatus, PauseReply, ReloadReply } from '../protocol/control';
import { agentControlEndpoint } from '../protocol/endpoints';
import { type ConfigureReply, type ConfigureRequest, DEFAULT_CONFIGURE_WAIT_MS } from '../protocol/configure';
import { callControl, missingIpc } from '../transport/request';

/** How long a caller waits for an agent's reply unless told otherwise. */
export const DEFAULT_AGENT_TIMEOUT_MS = 2000;

/** An agent to talk to: its server's name when known, and where it listens. */
export interface AgentTarget {
  /** The server's name in the map, or null for "the agent in this run directory". */
  server: string | null;
  endpoint: string;
}

/** The agent of this server, on its ipc control socket in `runDir`. */
export function localAgent(runDir: string): AgentTarget {
  return { server: null, endpoint: agentControlEndpoint(runDir) };
}

/** Another server's agent, on TCP at the server's host and `agent_port`; null if it has none. */
export function remoteAgent(server: Pick<MapServer, 'name' | 'host' | 'agentPort'>): AgentTarget | null {
  if (server.agentPort === undefined) return null;
  return { server: server.name, endpoint: `tcp://${server.host}:${server.agentPort}` };
}

/** How a target is named in messages: `the agent of beta (tcp://...)`. */
export function describeAgent(target: AgentTarget): string {
  return target.server === null ? `the agent at ${target.endpoint}` : `the agent of ${target.server} at ${target.endpoint}`;
}

/**
 * Asks an agent and returns its reply. Throws AGENT_UNREACHABLE if it does not answer in time,
 * and an error reply parsed back into a FlotillaError with the agent's code.
 */
export async function askAgent<R extends AgentRequest>(target: AgentTarget, request: R, timeoutMs = DEFAULT_AGENT_TIMEOUT_MS): Promise<AgentReplies[R['cmd']]> {
  if (missingIpc(target.endpoint) !== null) {
    throw new FlotillaError('AGENT_UNREACHABLE', `no agent at ${target.endpoint}: the socket does not exist; is flotilla-agent running, with this run directory?`);
  }
  return callControl<AgentReplies[R['cmd']]>(
    target.endpoint,
    request,
    timeoutMs,
    (cause) => new FlotillaError('AGENT_UNREACHABLE', `no answer from ${describeAgent(target)} within ${timeoutMs} ms; is flotilla-agent running?`, { cause }),
    (message) => `${describeAgent(target)}: ${message}`,
  );
}

/** The agent's status: its map, and each stream's portal as its beacons last said. */
export function agentStatus(target: AgentTarget, opts: { fresh?: boolean; timeoutMs?: number } = {}): Promise<AgentStatus> {
  return askAgent(target, { cmd: 'status', fresh: opts.fresh ?? false }, opts.timeoutMs);
}

/** Pauses `streams` (default every stream of the map) on the agent's server. */
export function agentPause(target: AgentTarget, streams?: string[], timeoutMs?: number): Promise<PauseReply> {
  return askAgent(target, { cmd: 'pause', ...(streams && streams.length > 0 ? { streams } : {}) }, timeoutMs);
}

/** Resumes `streams` (default every stream of the map) on the agent's server. */
export function agentResume(target: AgentTarget, streams?: string[], timeoutMs?: number): Promise<PauseReply> {
  return askAgent(target, { cmd: 'resume', ...(streams && streams.length > 0 ? { streams } : {}) }, timeoutMs);
}

/** Makes the agent read its map file again now. */
export function agentReload(target: AgentTarget, timeoutMs?: number): Promise<ReloadReply> {
  return askAgent(target, { cmd: 'reload' }, timeoutMs);
}

/**
 * Gives `request.stream`'s components on the agent's server a configuration (the management bus)
 * and resolves with how each slot answered, once every live one has (or `request.timeoutMs` is
 * over): what `portalctl configure` does. `ok` is false if a live component rejected it or did not answer.
 */
export function agentConfigure(target: AgentTarget, request: Omit<ConfigureRequest, 'cmd'>, timeoutMs = (request.timeoutMs ?? DEFAULT_CONFIGURE_WAIT_MS) + 5000): Promise<ConfigureReply> {
  return askAgent(target, { cmd: 'configure', ...request }, timeoutMs);
}
