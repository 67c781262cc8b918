/**
 * The control protocol: JSON requests and replies on a portal's control socket
 * (`<run_dir>/<stream>.ctl.ipc`) and an agent's (`<run_dir>/agent.ctl.ipc`, and its TCP
 * `agent_port`). One request, one reply; every request names its command in `cmd`.
 *
 *   portalctl --AgentRequest--> agent --PortalRequest--> portal
 *             <--AgentReplies---      <--PortalReplies--
 *
 * Any request may instead be answered `{"error": "...", "code": "..."}` (ErrorReply), the code
 * one of `ErrorCode`; clients parse it back into a FlotillaError with that code. Servers check
 * every field of a request here (`parsePortalRequest`, `parseAgentRequest`) before acting on it.
 */
import { type ErrorCode, FlotillaError } from '../errors';
import type { MapRejection } from '../map/keeper';
import type { SpoolStats } from '../spool/spool';
import type { PortalBeacon, SlotView } from './beacons';

// ---- the portal's control socket -------------------------------------------------------------

/** A request to a portal. */
export type PortalRequest =
  | { cmd: 'ping' }
  | { cmd: 'stats' }
  | { cmd: 'beacon' }
  | { cmd: 'pause' }
  | { cmd: 'resume' }
  /** Switch to the map's next epoch (read again from the map file). */
  | { cmd: 'switch'; epoch: number }
  /** Has everything accepted before the last switch been processed (and forwarded)? */
  | { cmd: 'drained' }
  /** `from` has drained the buckets it gave this server at `epoch`. */
  | { cmd: 'release'; from: string; epoch: number };

/** The portal's commands, as `parsePortalRequest` lists them in an error. */
export const PORTAL_COMMANDS = ['ping', 'stats', 'beacon', 'pause', 'resume', 'switch', 'drained', 'release'] as const;

/** A portal's pause state after `pause` or `resume`. */
export interface PausedReply {
  ok: true;
  paused: boolean;
}

/** What a portal did on `switch`: buckets it gives up, and those it takes, per old owner. */
export interface SwitchReply {
  ok: true;
  epoch: number;
  outgoing: number;
  incoming: Record<string, number>;
}

/** The reply to each portal command. */
export interface PortalReplies {
  ping: { ok: true };
  stats: PortalStats;
  beacon: PortalBeacon;
  pause: PausedReply;
  resume: PausedReply;
  switch: SwitchReply;
  drained: { drained: boolean; epoch: number };
  release: { ok: true; released: number };
}

/** What a portal's `stats` returns; the demo and tests read it. */
export interface PortalStats {
  server: string;
  stream: string;
  epoch: number;
  port: number;
  uptimeMs: number;
  recordsIn: number;
  recordsOut: number;
  batchesIn: number;
  batchesAcked: number;
  /** Spooled records sent on to a bucket's new owner after a map change. */
  recordsForwarded: number;
  queuedRecords: number;
  readingPaused: boolean;
  /** The stream is paused: batches are refused with PAUSED until resume (with a spool, spooled). */
  paused: boolean;
  /** The spool, when the stream has one; `blocked` when a batch waits for room in it. */
  spool: (SpoolStats & { blocked: boolean }) | null;
  rates: { inPerSec: number; outPerSec: number };
  errors: Record<string, number>;
  slots: SlotView[];
}

// ---- the agent's control socket --------------------------------------------------------------

/** A request to an agent. */
export type AgentRequest =
  | { cmd: 'ping' }
  /** `fresh`: ask every portal for its beacon first. */
  | { cmd: 'status'; fresh?: boolean }
  /** `streams`: default every stream of the map in force. */
  | { cmd: 'pause' | 'resume'; streams?: string[] }
  | { cmd: 'reload' }
  /** From another server's agent: it has drained what it gave this server of `stream`. */
  | { cmd: 'release'; stream: string; from: string; epoch: number };

/** The agent's commands, as `parseAgentRequest` lists them in an error. */
export const AGENT_COMMANDS = ['ping', 'status', 'pause', 'resume', 'reload', 'release'] as const;

/** The reply to each agent command. */
export interface AgentReplies {
  ping: { ok: true; server: string; pid: number };
  status: AgentStatus;
  pause: PauseReply;
  resume: PauseReply;
  reload: ReloadReply;
  release: PortalReplies['release'];
}

/** A portal as its agent sees it: running (taking records), paused, idle, dead (beacons stopped) or missing (never heard). */
export type PortalState = 'running' | 'paused' | 'idle' | 'dead' | 'missing';

/** One stream of the map on the agent's server. */
export interface StreamStatus {
  stream: string;
  state: PortalState;
  /** The portal's last beacon said it is paused. */
  paused: boolean;
  /** The portal is present, its beacons are fresh, and the last one said idle. */
  idle: boolean;
  /** Milliseconds since the last beacon arrived; null if none ever did. */
  ageMs: number | null;
  /** The last beacon (also when dead: what the portal said last). */
  beacon: PortalBeacon | null;
}

/** What an agent's `status` returns. */
export interface AgentStatus {
  server: string;
  pid: number;
  mapFile: string;
  instance: string;
  /** Epoch of the map in force. */
  epoch: number;
  heartbeatMs: number;
  runDir: string;
  uptimeMs: number;
  /** Why the last edit of the map file was rejected; null when the file is the map in force. */
  mapErrors: MapRejection | null;
  /** Every portal of the map is present, fresh and idle. */
  idle: boolean;
  streams: StreamStatus[];
  /** The last switch of the portals to a new epoch: running, or how each stream went. */
  epochSwitch: EpochSwitchStatus | null;
}

/** What happened to one stream on this server in an epoch switch. */
export interface StreamSwitch {
  stream: string;
  outgoing: number;
  incoming: Record<string, number>;
  /** Servers told that this one has drained the buckets it gave them. */
  released: string[];
  error?: string;
}

/** How the agent's last epoch switch went. */
export interface EpochSwitchStatus {
  epoch: number;
  from: number;
  done: boolean;
  streams: StreamSwitch[];
}

/** One stream's part of a pause or resume. */
export interface StreamResult {
  stream: string;
  ok: boolean;
  /** The portal's state after the command, when it answered. */
  paused?: boolean;
  error?: string;
  code?: ErrorCode;
}

/** What an agent's `pause` and `resume` return: ok only if every portal did it. */
export interface PauseReply {
  server: string;
  ok: boolean;
  results: StreamResult[];
}

/** What an agent's `reload` returns. */
export interface ReloadReply {
  server: string;
  /** False when the edit was rejected. */
  ok: boolean;
  outcome: 'applied' | 'unchanged' | 'rejected';
  /** Epoch in force after the reload. */
  epoch: number;
  /** Epoch in force before, when the edit was applied. */
  from?: number;
  mapErrors: MapRejection | null;
}

// ---- errors and parsing ----------------------------------------------------------------------

/** The reply to a request that failed. */
export interface ErrorReply {
  error: string;
  code: ErrorCode;
}

/** The error reply for `err`. */
export function errorReply(err: FlotillaError): ErrorReply {
  return { error: err.message, code: err.code };
}

/** True if `reply` is an error reply (`error` is a string). */
export function isErrorReply(reply: unknown): reply is { error: string; code?: unknown } {
  return typeof reply === 'object' && reply !== null && typeof (reply as { error?: unknown }).error === 'string';
}

/** Reads a portal request; throws BAD_REQUEST naming what is wrong with it. */
export function parsePortalRequest(v: unknown): PortalRequest {
  const o = object(v);
  switch (o.cmd) {
    case 'ping':
    case 'stats':
    case 'beacon':
    case 'pause':
    case 'resume':
    case 'drained':
      return { cmd: o.cmd };
    case 'switch':
      return { cmd: 'switch', epoch: epoch(o, 'switch') };
    case 'release':
      return { cmd: 'release', from: name(o, 'from', 'release'), epoch: epoch(o, 'release') };
    default:
      throw unknownCommand(o.cmd, PORTAL_COMMANDS);
  }
}

/** Reads an agent request; throws BAD_REQUEST naming what is wrong with it. */
export function parseAgentRequest(v: unknown): AgentRequest {
  const o = object(v);
  switch (o.cmd) {
    case 'ping':
    case 'reload':
      return { cmd: o.cmd };
    case 'status':
      return { cmd: 'status', fresh: o.fresh === true };
    case 'pause':
    case 'resume': {
      if (o.streams === undefined) return { cmd: o.cmd };
      if (!Array.isArray(o.streams) || !o.streams.every((s) => typeof s === 'string')) throw badRequest('"streams" must be a list of stream names');
      return { cmd: o.cmd, streams: o.streams as string[] };
    }
    case 'release':
      if (typeof o.stream !== 'string' || typeof o.from !== 'string' || typeof o.epoch !== 'number') throw badRequest('release needs "stream", "from" and "epoch"');
      return { cmd: 'release', stream: o.stream, from: o.from, epoch: epoch(o, 'release') };
    default:
      throw unknownCommand(o.cmd, AGENT_COMMANDS);
  }
}

function badRequest(message: string): FlotillaError {
  return new FlotillaError('BAD_REQUEST', message);
}

function object(v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badRequest('request is not a JSON object');
  return v as Record<string, unknown>;
}

function unknownCommand(cmd: unknown, commands: readonly string[]): FlotillaError {
  return badRequest(`unknown command ${JSON.stringify(cmd) ?? 'undefined'}; commands: ${commands.join(', ')}`);
}

function epoch(o: Record<string, unknown>, cmd: string): number {
  const e = o.epoch;
  if (typeof e !== 'number' || !Number.isInteger(e) || e < 0 || e > 0xffffffff) throw badRequest(`${cmd} needs "epoch", a whole number from 0 to 4294967295`);
  return e;
}

function name(o: Record<string, unknown>, field: string, cmd: string): string {
  const v = o[field];
  if (typeof v !== 'string' || v.length === 0) throw badRequest(`${cmd} needs "${field}", a server name`);
  return v;
}
