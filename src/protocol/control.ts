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
import type { StoreHealth } from '../map/store';
import { type ErrorCode, FlotillaError } from '../errors';
import type { SecurityStatus } from '../transport/connections';
import { badRequest, buckets, digest, epoch, name, object, unknownCommand } from './fields';
import type { MapRejection } from '../map/keeper';
import type { SpoolStats } from '../spool/spool';
import type { CancelCounts, HoldView, LimitsView, PortalBeacon, SlotView } from './beacons';
import type { HostHealth } from './host';
import { type AgentCancelRequest, type CancelReply, parseAgentCancel, parsePortalCancel, type PortalCancelReply, type PortalCancelRequest } from './cancel';
import { type ConfigureReply, type ConfigureRequest, parseConfigureRequest, parsePortalConfigure, type PortalConfigureRequest, type StreamConfigs } from './configure';

export type { HoldView } from './beacons';

// ---- the portal's control socket -------------------------------------------------------------

/** A request to a portal. */
export type PortalRequest =
  | { cmd: 'ping' }
  | { cmd: 'stats' }
  | { cmd: 'beacon' }
  | { cmd: 'pause' }
  | { cmd: 'resume' }
  /** Switch to the map's next epoch (read again from the map file; with `digest`, it must be that map). */
  | { cmd: 'switch'; epoch: number; digest?: string }
  /** Has everything accepted before the last switch been processed (and forwarded)? */
  | { cmd: 'drained' }
  /** Records per bucket and each slot's busy time, since the portal started. */
  | { cmd: 'load' }
  | ReleaseRequest
  | PortalCancelRequest
  /** Management bus (configure.ts): from its agent, the stream's configurations for its components. */
  | PortalConfigureRequest;

/** What a portal has measured of its load since it started (weights.ts reads it). */
export interface LoadReport {
  server: string;
  stream: string;
  epoch: number;
  /** Milliseconds the figures cover. */
  sinceMs: number;
  /** Records accepted per bucket (every bucket of the stream; 0 for those owned elsewhere). */
  buckets: number[];
  /** Per slot: records processed and the component's busy time in ms. */
  slots: { slot: number; processed: number; busyMs: number }[];
}

/** `from` has drained `buckets`, which it gave this server in the switch to `epoch` (map `digest`). */
export interface ReleaseRequest {
  cmd: 'release';
  from: string;
  epoch: number;
  digest: string;
  buckets: number[];
}

/** The answer to `drained`, with the map it is about. */
export interface DrainedReply {
  drained: boolean;
  epoch: number;
  digest: string;
}

/** The portal's commands, as `parsePortalRequest` lists them in an error. */
export const PORTAL_COMMANDS = ['ping', 'stats', 'beacon', 'pause', 'resume', 'switch', 'drained', 'load', 'release', 'configure', 'cancel'] as const;

/** A portal's pause state after `pause` or `resume`. */
export interface PausedReply {
  ok: true;
  paused: boolean;
}

/** What a portal did on `switch`: buckets it gives up, and those it takes, per old owner. */
export interface SwitchReply {
  ok: true;
  epoch: number;
  digest: string;
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
  drained: DrainedReply;
  load: LoadReport;
  release: { ok: true; released: number };
  cancel: PortalCancelReply;
  configure: { ok: true; version: number };
}

/** What a portal's `stats` returns; the demo and tests read it. */
export interface PortalStats {
  server: string;
  stream: string;
  epoch: number;
  digest: string;
  port: number;
  uptimeMs: number;
  /** Buckets held for their old owners (a handover waiting). */
  holds: HoldView[];
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
  /** The ingress's transport, connections and handshakes (docs/security.md); absent before it binds. */
  security?: SecurityStatus;
  /** Records dropped by cancellations, and the roots in force (docs/protocol.md, "Cancellation"). */
  cancelled?: CancelCounts;
  /** The memory limits and what they bound (docs/security.md, "Limits"). */
  limits: LimitsView;
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
  /** From another server's agent: the map this agent has and the epoch its portals run. */
  | { cmd: 'map' }
  /** Each portal's load report (portalctl weights, buckets). */
  | { cmd: 'load' }
  /** From another server's agent: has this server drained what it gave up of `stream` at `epoch`? */
  | { cmd: 'drained'; stream: string; epoch: number; digest: string }
  /**
   * From an operator: end the hold of `stream`'s buckets taken from `from` without waiting for
   * `from` to say it has drained them (it is gone for good, or was removed from the map).
   */
  | { cmd: 'release'; stream: string; from: string }
  | AgentCancelRequest
  | ConfigureRequest | { cmd: 'configs' }; // the management bus (configure.ts): configure a stream's components; the configurations kept

/** The agent's commands, as `parseAgentRequest` lists them in an error. */
export const AGENT_COMMANDS = ['ping', 'status', 'pause', 'resume', 'reload', 'map', 'load', 'drained', 'release', 'configure', 'configs', 'cancel'] as const;

/** What an agent says of its map to another agent (`map`), to agree before buckets move. */
export interface MapInfo {
  server: string;
  /** The newest valid map this agent has read (it may still be waiting to switch to it). */
  epoch: number;
  digest: string;
  /** The lowest epoch its live portals run (the map's epoch when none is live). */
  running: number;
  /** The last edit it rejected, if its file says something else. */
  rejected: { epoch: number | null; code: string } | null;
  /** Records in each stream's spool here, from the portals' last beacons. */
  spooled: Record<string, number>;
}

/** An agent's answer to `drained`. */
export interface HandoverReply {
  server: string;
  stream: string;
  drained: boolean;
  /** Why not, in words, when not drained. */
  reason?: string;
}

/** The reply to each agent command. */
export interface AgentReplies {
  ping: { ok: true; server: string; pid: number };
  status: AgentStatus;
  pause: PauseReply;
  resume: PauseReply;
  reload: ReloadReply;
  map: MapInfo;
  load: { server: string; streams: LoadReport[] };
  drained: HandoverReply;
  release: PortalReplies['release'] & { server: string };
  cancel: CancelReply;
  configure: ConfigureReply; configs: { server: string; streams: StreamConfigs[] };
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
  /** The epoch this server runs: the lowest of its live portals' (the map's when none is live). */
  epoch: number;
  /** The newest valid map the agent has read, and its digest; above `epoch` while a switch waits. */
  mapEpoch: number;
  digest: string;
  heartbeatMs: number;
  runDir: string;
  uptimeMs: number;
  /** Why the last edit of the map file was rejected; null when the file is the map in force. */
  mapErrors: MapRejection | null;
  /** Every portal of the map is present, fresh and idle. */
  idle: boolean;
  streams: StreamStatus[];
  /** The last switch of the portals to a new epoch: waiting, running, or how each stream went. */
  epochSwitch: EpochSwitchStatus | null;
  /** Buckets this server's portals hold for their old owners, and whom each waits for. */
  handovers: HandoverStatus[];
  /** The host's memory, load, disks and processes, sampled by the agent (absent before the first sample). */
  host?: HostHealth;
  /** The configurations the agent keeps, per stream that has one (the management bus). */
  configs?: StreamConfigs[];
  // --- map store (etcd maps): whether the store answers; absent from agents without one.
  /** Where the map comes from and whether it can be reached (an etcd map: false while etcd is lost). */
  mapStore?: StoreHealth;
  /** The TCP control port's transport, connections and handshakes (docs/security.md); absent without an agent_port. */
  security?: SecurityStatus;
  /** Failures by cause since start (KEY_REFUSED, HANDSHAKE_FAILED, CONNECTION_CAP, NOT_AUTHORIZED, ...). */
  errors?: Record<string, number>;
}

/** One stream on this server in an epoch switch. */
export interface StreamSwitch {
  stream: string;
  /** The epoch its portal runs, when known. */
  epoch: number | null;
  error?: string;
}

/** A server the switch waits for before any bucket moves, and why. */
export interface SwitchWait {
  server: string;
  reason: string;
  /** How long it has been waited for, ms. */
  waitingMs: number;
}

/** How the agent's last epoch switch goes or went. */
export interface EpochSwitchStatus {
  epoch: number;
  digest: string;
  from: number;
  /** Every portal here runs `epoch`. */
  done: boolean;
  /** Servers of the map not yet known to have this map (the switch waits for them). */
  waitingFor: SwitchWait[];
  /** Servers that state this epoch with different content: the switch is refused until fixed. */
  conflicts: { server: string; digest: string }[];
  streams: StreamSwitch[];
}

/** A hold on this server: buckets of `stream` taken from `from`, waiting for it to drain them. */
export interface HandoverStatus extends HoldView {
  stream: string;
  /** Why it still waits, in words (the old owner's answer, or why it could not be asked). */
  reason: string;
  /** Waited longer than the documented limit: shown as an error, with `command` to end it. */
  stuck: boolean;
  command: string;
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
  /** A switch of this server that waits, and its holds, as in status (so a pause names them too). */
  epochSwitch?: EpochSwitchStatus | null;
  handovers?: HandoverStatus[];
}

/** What an agent's `reload` returns. */
export interface ReloadReply {
  server: string;
  /** False when the edit was rejected. */
  ok: boolean;
  outcome: 'applied' | 'unchanged' | 'rejected';
  /** The switch this edit started (or one still waiting): whom it waits for. */
  epochSwitch?: EpochSwitchStatus | null;
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
    case 'load':
      return { cmd: o.cmd };
    case 'switch':
      if (o.digest !== undefined) return { cmd: 'switch', epoch: epoch(o, 'switch'), digest: digest(o, 'switch') };
      return { cmd: 'switch', epoch: epoch(o, 'switch') };
    case 'release':
      return { cmd: 'release', from: name(o, 'from', 'release'), epoch: epoch(o, 'release'), digest: digest(o, 'release'), buckets: buckets(o, 'release') };
    case 'cancel':
      return parsePortalCancel(o);
    case 'configure':
      return parsePortalConfigure(o);
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
    case 'map':
    case 'load':
    case 'configs':
      return { cmd: o.cmd };
    case 'status':
      return { cmd: 'status', fresh: o.fresh === true };
    case 'pause':
    case 'resume': {
      if (o.streams === undefined) return { cmd: o.cmd };
      if (!Array.isArray(o.streams) || !o.streams.every((s) => typeof s === 'string')) throw badRequest('"streams" must be a list of stream names');
      return { cmd: o.cmd, streams: o.streams as string[] };
    }
    case 'drained':
      return { cmd: 'drained', stream: name(o, 'stream', 'drained', 'a stream name'), epoch: epoch(o, 'drained'), digest: digest(o, 'drained') };
    case 'release':
      return { cmd: 'release', stream: name(o, 'stream', 'release', 'a stream name'), from: name(o, 'from', 'release') };
    case 'cancel':
      return parseAgentCancel(o);
    case 'configure':
      return parseConfigureRequest(o);
    default:
      throw unknownCommand(o.cmd, AGENT_COMMANDS);
  }
}
