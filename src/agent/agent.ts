/**
 * The agent: one per server and instance, the server's control plane. It collects the beacons
 * of the server's portals, tells who is idle, dead or missing, pauses and resumes the portals,
 * and holds the map in force (an invalid edit of the map file never replaces it).
 *
 *   portal --PortalBeacon (PUSH)--> agent.beacons.ipc (PULL)
 *   portalctl --{"cmd":...} (REQ)--> agent.ctl.ipc | tcp://host:agent_port (ROUTER)
 *   agent --{"cmd":"pause"} (REQ)--> <stream>.ctl.ipc (the portal's control socket)
 *
 * The control socket speaks REQ/REP (one JSON request, one JSON reply) but is a ROUTER, so a
 * slow request (a pause waiting on an unreachable portal) does not hold up a status.
 */
import { chmodSync, existsSync, type Stats, unwatchFile, watchFile } from 'node:fs';
import * as zmq from 'zeromq';
import { askAgent, remoteAgent } from './client';
import { requestJson } from '../transport/request';
import { type StreamSwitch, switchEpoch } from './epoch-switch';
import { MapKeeper, type MapRejection } from '../map/keeper';
import { FlotillaError } from '../errors';
import { DEAD_AFTER_BEATS, type PortalBeacon } from '../protocol/beacons';
import { CauseCounter, type Logger } from '../log';
import { type FlotillaMap } from '../map/types';
import { serverOf } from '../map/lookup';
import { Outbox } from '../transport/outbox';
import { agentBeaconEndpoint, agentControlEndpoint, controlEndpoint, ensureRunDir } from '../protocol/endpoints';

/** How often the map file is checked for an edit. */
export const DEFAULT_WATCH_MS = 250;
/** How long the agent waits for a portal's control socket to answer. */
export const DEFAULT_PORTAL_TIMEOUT_MS = 1000;
/** Largest request the control socket reads; anything bigger is not a control request. */
const MAX_REQUEST_BYTES = 64 * 1024;

export interface AgentOptions {
  mapFile: string;
  /** This server's name in the map. */
  server: string;
  /** Directory of the server's ipc sockets (default the map's run_dir). */
  runDir?: string;
  log: Logger;
  /** Interval of the map file check in ms; 0 turns watching off (reload on request only). */
  watchMs?: number;
  /** Address the TCP control socket binds (default the server's host in the map). */
  bindHost?: string;
  portalTimeoutMs?: number;
}

/** A portal as its agent sees it: running (taking records), paused, idle, dead (beacons stopped) or missing (never heard). */
export type PortalState = 'running' | 'paused' | 'idle' | 'dead' | 'missing';

/** One stream of the map on this server. */
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

/** What `{"cmd":"status"}` returns. */
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

/** How the agent's last epoch switch went (see epoch-switch.ts). */
export interface EpochSwitchStatus {
  epoch: number;
  from: number;
  done: boolean;
  streams: StreamSwitch[];
}

/** How long an agent keeps trying to tell another agent that it has drained its buckets. */
const RELEASE_RETRY_MS = 60_000;

/** One stream's part of a pause or resume. */
export interface StreamResult {
  stream: string;
  ok: boolean;
  /** The portal's state after the command, when it answered. */
  paused?: boolean;
  error?: string;
  code?: string;
}

/** What `{"cmd":"pause"}` and `{"cmd":"resume"}` return: ok only if every portal did it. */
export interface PauseReply {
  server: string;
  ok: boolean;
  results: StreamResult[];
}

/** What `{"cmd":"reload"}` returns. */
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

/** The commands the control socket answers. */
export const AGENT_COMMANDS = ['ping', 'status', 'pause', 'resume', 'reload', 'release'] as const;

interface Seen {
  beacon: PortalBeacon;
  receivedAt: number;
}

/** The agent of one server. `start()` binds its sockets; `stop()` closes them. */
export class Agent {
  private readonly keeper: MapKeeper;
  private readonly runDir: string;
  private readonly log: Logger;
  private readonly causes: CauseCounter;
  private readonly beacons = new Map<string, Seen>();
  private readonly pull = new zmq.Pull({ linger: 0, maxMessageSize: 4 << 20 });
  private readonly control = new zmq.Router({ linger: 0, maxMessageSize: MAX_REQUEST_BYTES });
  private readonly replies: Outbox;
  private readonly startedAt = Date.now();
  private closed = false;
  private watching = false;
  private settle: NodeJS.Timeout | null = null;
  private epochSwitch: EpochSwitchStatus | null = null;
  /** Where the TCP control socket listens, if the map gives this server an agent_port. */
  tcpEndpoint: string | null = null;

  constructor(private readonly opts: AgentOptions) {
    this.keeper = new MapKeeper(opts.mapFile, opts.server, 'agent');
    this.runDir = opts.runDir ?? this.keeper.map.runDir;
    this.log = opts.log;
    this.causes = new CauseCounter(this.log, 'agent');
    this.replies = new Outbox(this.control, (err) => this.causes.count('REPLY_FAILED', err.message));
  }

  /** The map in force. */
  get map(): FlotillaMap {
    return this.keeper.map;
  }

  /** Binds the beacon and control sockets and starts watching the map file. */
  async start(): Promise<void> {
    ensureRunDir(this.runDir);
    const ctl = agentControlEndpoint(this.runDir);
    await this.refuseIfRunning(ctl);
    await this.pull.bind(agentBeaconEndpoint(this.runDir));
    await this.control.bind(ctl);
    // Sockets for the service's user and group only, whatever the umask was.
    chmodSync(ctl.slice('ipc://'.length), 0o660);
    chmodSync(agentBeaconEndpoint(this.runDir).slice('ipc://'.length), 0o660);
    const self = serverOf(this.map, this.opts.server);
    if (self.agentPort !== undefined) {
      await this.control.bind(`tcp://${this.opts.bindHost ?? self.host}:${self.agentPort}`);
      this.tcpEndpoint = this.control.lastEndpoint;
    }
    void this.beaconLoop();
    void this.controlLoop();
    const watchMs = this.opts.watchMs ?? DEFAULT_WATCH_MS;
    if (watchMs > 0) {
      watchFile(this.opts.mapFile, { interval: watchMs, persistent: false }, this.onMapFile);
      this.watching = true;
    }
    this.log.info(
      { epoch: this.map.epoch, runDir: this.runDir, tcp: this.tcpEndpoint },
      `agent of ${this.opts.server} serving ${ctl}${this.tcpEndpoint ? ` and ${this.tcpEndpoint}` : ''}, map epoch ${this.map.epoch}`,
    );
  }

  /** Closes every socket and stops watching the map file. */
  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.watching) unwatchFile(this.opts.mapFile, this.onMapFile);
    if (this.settle) clearTimeout(this.settle);
    this.causes.stop();
    this.replies.close();
    this.pull.close();
    this.control.close();
  }

  /** Records a portal's beacon (what arrives on the PULL socket). */
  noteBeacon(beacon: PortalBeacon, receivedAt = Date.now()): void {
    // A periodic beacon can arrive after a fresher one asked for on the control socket.
    const seen = this.beacons.get(beacon.stream);
    if (seen && seen.beacon.pid === beacon.pid && seen.beacon.at > beacon.at) return;
    this.beacons.set(beacon.stream, { beacon, receivedAt });
  }

  /** Every stream of the map in force with its portal's state, as `portalctl status` shows it. */
  status(now = Date.now()): AgentStatus {
    const map = this.map;
    const streams = map.streams.map((s) => streamStatus(s.name, this.beacons.get(s.name), now, map.heartbeatMs));
    return {
      server: this.opts.server,
      pid: process.pid,
      mapFile: this.opts.mapFile,
      instance: map.instance,
      epoch: map.epoch,
      heartbeatMs: map.heartbeatMs,
      runDir: this.runDir,
      uptimeMs: now - this.startedAt,
      mapErrors: this.keeper.rejection,
      epochSwitch: this.epochSwitch,
      idle: streams.every((s) => s.idle),
      streams,
    };
  }

  /** Asks every portal for its current beacon (those that answer), then reports status. */
  async freshStatus(): Promise<AgentStatus> {
    const timeout = Math.min(500, this.map.heartbeatMs);
    await Promise.all(
      this.map.streams.map(async (s) => {
        try {
          const reply = await this.askPortal(s.name, { cmd: 'beacon' }, timeout);
          if (isBeacon(reply)) this.noteBeacon(reply);
        } catch {
          // No answer: the periodic beacons (or their absence) tell.
        }
      }),
    );
    return this.status();
  }

  /** Pauses (or resumes) the portals of `streams`, default every stream of the map in force. */
  async setPaused(paused: boolean, streams?: string[]): Promise<PauseReply> {
    const names = streams && streams.length > 0 ? streams : this.map.streams.map((s) => s.name);
    const unknown = names.filter((n) => !this.map.streams.some((s) => s.name === n));
    if (unknown.length > 0) {
      throw new FlotillaError('UNKNOWN_STREAM', `no stream ${unknown.map((n) => `"${n}"`).join(', ')} in the map in force (streams: ${this.map.streams.map((s) => s.name).join(', ')})`);
    }
    const cmd = paused ? 'pause' : 'resume';
    const timeoutMs = this.opts.portalTimeoutMs ?? DEFAULT_PORTAL_TIMEOUT_MS;
    const results = await Promise.all(
      names.map(async (stream): Promise<StreamResult> => {
        try {
          const reply = (await this.askPortal(stream, { cmd }, timeoutMs)) as { ok?: boolean; paused?: boolean; error?: string; code?: string };
          if (reply.error !== undefined) return { stream, ok: false, error: `the ${stream} portal refused ${cmd}: ${reply.error}`, code: reply.code ?? 'BAD_REQUEST' };
          return { stream, ok: reply.paused === paused, paused: reply.paused };
        } catch (err) {
          return { stream, ok: false, error: (err as Error).message, code: 'PORTAL_UNREACHABLE' };
        }
      }),
    );
    const ok = results.every((r) => r.ok);
    const failed = results.filter((r) => !r.ok);
    if (ok) this.log.info({ streams: names }, `${cmd}: ${names.join(', ')}`);
    else this.log.warn({ streams: names, failed }, `${cmd}: failed for ${failed.map((r) => r.stream).join(', ')}`);
    return { server: this.opts.server, ok, results };
  }

  /** Reads the map file again: takes a valid edit that raises the epoch, rejects anything else. */
  reload(): ReloadReply {
    const before = this.keeper.map;
    const outcome = this.keeper.reload();
    const reply: ReloadReply = {
      server: this.opts.server,
      ok: outcome.type !== 'rejected',
      outcome: outcome.type,
      epoch: outcome.epoch,
      mapErrors: this.keeper.rejection,
    };
    if (outcome.type === 'applied') {
      reply.from = outcome.from;
      this.log.info({ epoch: outcome.epoch, from: outcome.from }, `map ${this.opts.mapFile}: epoch ${outcome.epoch} in force (was ${outcome.from})`);
      void this.switchPortals(before, this.keeper.map);
    } else if (outcome.type === 'rejected') {
      const problems = outcome.rejection.problems.map((p) => `${p.path}: ${p.message}`);
      this.log.error(
        { epoch: outcome.epoch, problems: outcome.rejection.problems },
        `map ${this.opts.mapFile}: edit rejected, epoch ${outcome.epoch} stays in force:\n  ${problems.join('\n  ')}`,
      );
    }
    return reply;
  }

  /**
   * Carries this server's portals into the map's new epoch: each switches, gives up and drains
   * the buckets it loses, and this agent then tells each new owner's agent to release them.
   */
  private async switchPortals(before: FlotillaMap, after: FlotillaMap): Promise<void> {
    const status: EpochSwitchStatus = { epoch: after.epoch, from: before.epoch, done: false, streams: [] };
    this.epochSwitch = status;
    status.streams = await switchEpoch({
      server: this.opts.server,
      runDir: this.runDir,
      before,
      after,
      log: this.log,
      sendRelease: (to, stream, epoch) => this.sendRelease(after, to, stream, epoch),
    });
    status.done = true;
  }

  /** Tells `to`'s agent that this server has drained what it gave `to` of `stream`; retries. */
  private async sendRelease(map: FlotillaMap, to: string, stream: string, epoch: number): Promise<void> {
    const target = remoteAgent(serverOf(map, to));
    if (!target) throw new FlotillaError('AGENT_UNREACHABLE', `server ${to} has no agent_port in the map: cannot tell it to take over ${stream}`);
    const deadline = Date.now() + RELEASE_RETRY_MS;
    for (;;) {
      try {
        await askAgent(target, { cmd: 'release', stream, from: this.opts.server, epoch });
        return;
      } catch (err) {
        if (this.closed || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /** Answers one control request; a bad request gets `{"error", "code"}`, never an exception. */
  async handle(body: Buffer): Promise<unknown> {
    let req: { cmd?: unknown; streams?: unknown; fresh?: unknown };
    try {
      req = JSON.parse(body.toString('utf8')) as typeof req;
      if (typeof req !== 'object' || req === null || Array.isArray(req)) throw new Error('not an object');
    } catch {
      return badRequest('request is not a JSON object');
    }
    try {
      switch (req.cmd) {
        case 'ping':
          return { ok: true, server: this.opts.server, pid: process.pid };
        case 'status':
          return req.fresh === true ? await this.freshStatus() : this.status();
        case 'pause':
        case 'resume':
          if (req.streams !== undefined && !(Array.isArray(req.streams) && req.streams.every((s) => typeof s === 'string'))) {
            return badRequest('"streams" must be a list of stream names');
          }
          return await this.setPaused(req.cmd === 'pause', req.streams as string[] | undefined);
        case 'reload':
          return this.reload();
        case 'release': {
          const r = req as { stream?: unknown; from?: unknown; epoch?: unknown };
          if (typeof r.stream !== 'string' || typeof r.from !== 'string' || typeof r.epoch !== 'number') {
            return badRequest('release needs "stream", "from" and "epoch"');
          }
          return await this.askPortal(r.stream, { cmd: 'release', from: r.from, epoch: r.epoch }, 2000);
        }
        default:
          return badRequest(`unknown command ${JSON.stringify(req.cmd)}; commands: ${AGENT_COMMANDS.join(', ')}`);
      }
    } catch (err) {
      if (err instanceof FlotillaError) return { error: err.message, code: err.code };
      this.log.error({ err }, `agent: ${String(req.cmd)} failed`);
      return { error: `internal error: ${(err as Error).message}`, code: 'BAD_REQUEST' };
    }
  }

  /** One request to a portal's control socket; fails at once if the portal has no socket here. */
  private async askPortal(stream: string, request: object, timeoutMs: number): Promise<unknown> {
    const endpoint = controlEndpoint(this.runDir, stream);
    if (!existsSync(endpoint.slice('ipc://'.length))) throw new Error(`no ${stream} portal on this server: ${endpoint} does not exist`);
    try {
      return await requestJson(endpoint, request, timeoutMs);
    } catch (err) {
      throw new Error(`no answer from the ${stream} portal at ${endpoint} within ${timeoutMs} ms`, { cause: err });
    }
  }

  private readonly onMapFile = (curr: Stats, prev: Stats): void => {
    if (this.closed || (curr.mtimeMs === prev.mtimeMs && curr.size === prev.size && curr.ino === prev.ino)) return;
    // The file may be half written: read it once it has kept still for one more interval.
    if (this.settle) clearTimeout(this.settle);
    this.settle = setTimeout(() => {
      this.settle = null;
      if (!this.closed) this.reload();
    }, this.opts.watchMs ?? DEFAULT_WATCH_MS);
  };

  private async refuseIfRunning(ctl: string): Promise<void> {
    // A second bind to an ipc path silently takes it from the first process, so ask first.
    try {
      await requestJson(ctl, { cmd: 'ping' }, 300);
    } catch {
      return; // no answer: no agent there (a stale socket file is simply bound over)
    }
    throw new FlotillaError('AGENT_ALREADY_RUNNING', `an agent already serves ${ctl}`);
  }

  private async beaconLoop(): Promise<void> {
    while (!this.closed) {
      let frames: Buffer[];
      try {
        frames = await this.pull.receive();
      } catch {
        if (this.closed) return;
        continue;
      }
      let beacon: unknown;
      try {
        beacon = JSON.parse(frames[0]!.toString('utf8'));
      } catch {
        this.causes.count('BAD_BEACON', 'a beacon that is not JSON');
        continue;
      }
      if (!isBeacon(beacon)) {
        this.causes.count('BAD_BEACON', `not a portal beacon: ${frames[0]!.toString('utf8').slice(0, 120)}`);
        continue;
      }
      if (beacon.server !== this.opts.server) {
        this.causes.count('OTHER_SERVER', `a beacon from the ${beacon.stream} portal of ${beacon.server}; this agent is ${this.opts.server}`);
        continue;
      }
      this.noteBeacon(beacon);
    }
  }

  private async controlLoop(): Promise<void> {
    while (!this.closed) {
      let frames: Buffer[];
      try {
        frames = await this.control.receive();
      } catch {
        if (this.closed) return;
        continue;
      }
      // REQ sends [delimiter, body]; a DEALER may send the body alone. Answer in kind.
      const [id, ...rest] = frames;
      const envelope = rest.length === 2 && rest[0]!.length === 0 ? [rest[0]!] : rest.length === 1 ? [] : null;
      if (!id || envelope === null) {
        this.causes.count('BAD_REQUEST', `a control message of ${frames.length} frames`);
        continue;
      }
      void this.handle(rest[rest.length - 1]!).then((reply) => this.replies.push([id, ...envelope, Buffer.from(JSON.stringify(reply))]));
    }
  }
}

/** A stream's portal state from its last beacon (if any) at time `now`. */
export function streamStatus(stream: string, seen: Seen | undefined, now: number, heartbeatMs: number): StreamStatus {
  if (!seen) return { stream, state: 'missing', paused: false, idle: false, ageMs: null, beacon: null };
  const ageMs = now - seen.receivedAt;
  const { beacon } = seen;
  if (ageMs > DEAD_AFTER_BEATS * heartbeatMs) return { stream, state: 'dead', paused: beacon.paused, idle: false, ageMs, beacon };
  const state: PortalState = beacon.paused ? 'paused' : beacon.idle ? 'idle' : 'running';
  return { stream, state, paused: beacon.paused, idle: beacon.idle, ageMs, beacon };
}

function isBeacon(v: unknown): v is PortalBeacon {
  const b = v as PortalBeacon;
  return typeof v === 'object' && v !== null && b.type === 'portal' && typeof b.stream === 'string' && typeof b.server === 'string' && Array.isArray(b.slots);
}

function badRequest(message: string): { error: string; code: 'BAD_REQUEST' } {
  return { error: message, code: 'BAD_REQUEST' };
}
