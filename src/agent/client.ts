/**
 * Request/reply with an agent: one JSON request, one JSON reply, over ipc (this server's agent,
 * in the run directory) or tcp (another server's agent, at its `agent_port`), bounded by a
 * timeout. The agent uses the same call to reach its portals' control sockets.
 *
 *   portalctl --REQ {"cmd":"status"}--> agent --REQ {"cmd":"pause"}--> portal control socket
 */
import { existsSync } from 'node:fs';
import { requestJson } from '../transport/request';
import { type ErrorCode, FlotillaError } from '../errors';
import type { MapServer } from '../map/types';
import { agentControlEndpoint } from '../protocol/endpoints';
import type { AgentStatus, PauseReply, ReloadReply } from './agent';

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

export { requestJson };

/** An error reply, `{"error": "...", "code": "..."}`, as every Flotilla control socket sends. */
export interface ErrorReply {
  error: string;
  code?: string;
}

function isErrorReply(reply: unknown): reply is ErrorReply {
  return typeof reply === 'object' && reply !== null && typeof (reply as ErrorReply).error === 'string';
}

/**
 * Asks an agent and returns its reply. Throws AGENT_UNREACHABLE if it does not answer in time,
 * and an error reply parsed back into a FlotillaError with the agent's code.
 */
export async function askAgent<T>(target: AgentTarget, request: object, timeoutMs = DEFAULT_AGENT_TIMEOUT_MS): Promise<T> {
  const path = target.endpoint.startsWith('ipc://') ? target.endpoint.slice('ipc://'.length) : null;
  if (path !== null && !existsSync(path)) {
    throw new FlotillaError('AGENT_UNREACHABLE', `no agent at ${target.endpoint}: the socket does not exist; is flotilla-agent running, with this run directory?`);
  }
  let reply: unknown;
  try {
    reply = await requestJson(target.endpoint, request, timeoutMs);
  } catch (err) {
    throw new FlotillaError('AGENT_UNREACHABLE', `no answer from ${describeAgent(target)} within ${timeoutMs} ms; is flotilla-agent running?`, { cause: err });
  }
  if (isErrorReply(reply)) {
    throw new FlotillaError((reply.code ?? 'BAD_REQUEST') as ErrorCode, `${describeAgent(target)}: ${reply.error}`);
  }
  return reply as T;
}

/** The agent's status: its map, and each stream's portal as its beacons last said. */
export function agentStatus(target: AgentTarget, opts: { fresh?: boolean; timeoutMs?: number } = {}): Promise<AgentStatus> {
  return askAgent<AgentStatus>(target, { cmd: 'status', fresh: opts.fresh ?? false }, opts.timeoutMs);
}

/** Pauses `streams` (default every stream of the map) on the agent's server. */
export function agentPause(target: AgentTarget, streams?: string[], timeoutMs?: number): Promise<PauseReply> {
  return askAgent<PauseReply>(target, { cmd: 'pause', ...(streams && streams.length > 0 ? { streams } : {}) }, timeoutMs);
}

/** Resumes `streams` (default every stream of the map) on the agent's server. */
export function agentResume(target: AgentTarget, streams?: string[], timeoutMs?: number): Promise<PauseReply> {
  return askAgent<PauseReply>(target, { cmd: 'resume', ...(streams && streams.length > 0 ? { streams } : {}) }, timeoutMs);
}

/** Makes the agent read its map file again now. */
export function agentReload(target: AgentTarget, timeoutMs?: number): Promise<ReloadReply> {
  return askAgent<ReloadReply>(target, { cmd: 'reload' }, timeoutMs);
}
