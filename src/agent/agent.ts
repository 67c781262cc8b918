/**
 * The agent: one per server and instance, the server's control plane. It collects the beacons
 * of the server's portals (beacons.ts), tells who is idle, dead or missing, pauses and resumes
 * the portals (portals.ts), holds the newest valid map (map/keeper.ts: an invalid edit of the map
 * file never replaces it; edit-checks.ts: nor one the running system cannot take), and carries
 * the portals into each new epoch once the other servers have the same map (epoch-switch.ts,
 * peers.ts).
 *
 *   portal --PortalBeacon (PUSH)--> agent.beacons.ipc (PULL)
 *   portalctl --AgentRequest (REQ)--> agent.ctl.ipc | tcp://host:agent_port (ControlServer)
 *   agent --PortalRequest (REQ)--> <stream>.ctl.ipc (the portal's control socket)
 *   agent --map, drained (REQ)--> other agents' agent_port
 */
import { type Stats, unwatchFile, watchFile } from 'node:fs';
import { FlotillaError } from '../errors';
import { CauseCounter, type Logger } from '../log';
import { MapKeeper } from '../map/keeper';
import { serverOf } from '../map/lookup';
import type { FlotillaMap } from '../map/types';
import { int, parseOptions, text } from '../options';
import type { PortalBeacon } from '../protocol/beacons';
import { type AgentReplies, type AgentRequest, type AgentStatus, type MapInfo, parseAgentRequest, type PauseReply, type ReloadReply } from '../protocol/control';
import { agentBeaconEndpoint, agentControlEndpoint, ensureRunDir } from '../protocol/endpoints';
import { ControlServer } from '../transport/control-server';
import { guardServer, ownKey } from '../transport/curve';
import type { ConnectionGuard } from '../transport/connections';
import { verifyRequest } from '../transport/proof';
import { keyHolder } from '../map/security';
import { authorize, type Caller, callerOf, redact } from './authorize';
import { BeaconBook } from './beacons';
import { runningEditProblems } from './edit-checks';
import { type ControlPlane, controlPlaneOf } from './control-plane';
import type { MapStore } from '../map/store';
import { answerDrained, BUSY_ROUND_MS, DEFAULT_HOLD_LIMIT_MS, EpochSwitcher, forceRelease } from './epoch-switch';
import { Peers } from './peers';
import { freshBeacons, pausePortals, portalLoads } from './portals';
import { cancelHere } from './cancels';
import { DEFAULT_HOST_SAMPLE_MS, HostSampler, processesOf } from './host-health';
import { ConfigStore } from './config-store';
import { ConfigPusher, configureStream, type ConfigureHost } from './configure';

/** How often the map file is checked for an edit. */
export const DEFAULT_WATCH_MS = 250;
/** How long the agent waits for a portal's control socket to answer. */
export const DEFAULT_PORTAL_TIMEOUT_MS = 1000;
/** Largest request the control socket reads; anything bigger is not a control request. */
const MAX_REQUEST_BYTES = 64 * 1024;

export interface AgentOptions {
  mapFile: string;
  /** The map's store, already open (map/open.ts); default the file `mapFile`. An etcd store is followed instead of watching a file. */
  store?: MapStore;
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
  /** A hold that waits longer than this (ms) is shown as stuck (default 120000). */
  holdLimitMs?: number;
  /** How often the host's health is sampled (default DEFAULT_HOST_SAMPLE_MS); 0 turns sampling off. */
  hostSampleMs?: number;
}

/** The agent of one server. `start()` binds its sockets; `stop()` closes them. */
export class Agent {
  /** Where the TCP control socket listens, if the map gives this server an agent_port. */
  tcpEndpoint: string | null = null;
  private readonly o: ReturnType<typeof parseAgentOptions>;
  private readonly keeper: MapKeeper;
  private readonly runDir: string;
  private readonly log: Logger;
  private readonly causes: CauseCounter;
  private readonly book: BeaconBook;
  private readonly control: ControlServer;
  /** The TCP control socket (agent_port): each request authorized first (authorize.ts). */
  private readonly remote: ControlServer;
  private readonly startedAt = Date.now();
  private closed = false;
  private watching = false; // the map file's watch (not for an etcd map)
  private settle: NodeJS.Timeout | null = null;
  private readonly peers: Peers;
  private readonly switcher: EpochSwitcher;
  private before: FlotillaMap;
  private roundTimer: NodeJS.Timeout | null = null;
  private rounding: Promise<void> | null = null;
  private readonly host: HostSampler | null;
  /** The management bus: the configurations kept (configs.json) and the push to portals behind. */
  private readonly configs: ConfigureHost;
  private readonly pusher: ConfigPusher;
  private configTimer: NodeJS.Timeout | null = null;
  /** Where the map and handovers are kept: files and the agents, or etcd (control-plane.ts). */
  private readonly plane: ControlPlane;
  private publishError: string | null = null;
  /** The TCP control socket's connection cap and CURVE handshakes (null: no agent_port). */
  private guard: ConnectionGuard | null = null;

  constructor(opts: AgentOptions) {
    this.o = parseAgentOptions(opts);
    this.keeper = new MapKeeper(opts.store ?? opts.mapFile, opts.server, 'agent');
    this.runDir = opts.runDir ?? this.keeper.map.runDir;
    this.log = opts.log;
    this.plane = controlPlaneOf(this.keeper.store, opts.server, this.runDir, this.o.portalTimeoutMs, this.log);
    this.causes = new CauseCounter(this.log, 'agent');
    const count = (cause: string, example: string) => this.causes.count(cause, example);
    this.book = new BeaconBook(opts.server, count);
    this.control = new ControlServer({ what: 'agent', log: this.log, count, maxRequestBytes: MAX_REQUEST_BYTES, handle: (request) => this.handle(request) });
    this.remote = new ControlServer({ what: 'agent', log: this.log, count, maxRequestBytes: MAX_REQUEST_BYTES, handle: (request) => this.handleRemote(request) });
    this.before = this.keeper.map;
    this.keeper.onChange((_next, before) => (this.before = before));
    this.peers = new Peers(opts.server, this.o.portalTimeoutMs, this.plane.lookup);
    this.switcher = new EpochSwitcher({
      server: opts.server,
      runDir: this.runDir,
      log: this.log,
      peers: this.peers,
      portalTimeoutMs: this.o.portalTimeoutMs,
      holdLimitMs: this.o.holdLimitMs,
      handovers: this.plane.handovers,
      target: () => this.keeper.map,
      previous: () => this.before,
      note: (b) => this.book.note(b),
      lastBeacons: () => this.liveBeacons(Date.now()),
    });
    this.configs = { server: opts.server, runDir: this.runDir, map: () => this.map, store: new ConfigStore(this.runDir, this.log), portalTimeoutMs: this.o.portalTimeoutMs, log: this.log };
    this.pusher = new ConfigPusher(this.configs);
    const processes = () => this.status().streams.flatMap((s) => processesOf(s.stream, s.state === 'dead' ? null : s.beacon));
    this.host =
      this.o.hostSampleMs === 0 ? null : new HostSampler({ server: opts.server, runDir: this.runDir, map: () => this.map, processes, log: this.log, intervalMs: this.o.hostSampleMs });
  }

  /** The map in force. */
  get map(): FlotillaMap {
    return this.keeper.map;
  }

  /** Binds the beacon and control sockets and starts watching the map file. */
  async start(): Promise<void> {
    ensureRunDir(this.runDir);
    const ctl = agentControlEndpoint(this.runDir);
    await this.control.bindIpc(ctl, () => new FlotillaError('AGENT_ALREADY_RUNNING', `an agent already serves ${ctl}`));
    await this.book.bind(agentBeaconEndpoint(this.runDir), 0o660);
    const self = serverOf(this.map, this.o.server);
    if (self.agentPort !== undefined) {
      this.tcpEndpoint = await this.remote.bind(`tcp://${this.o.bindHost ?? self.host}:${self.agentPort}`, async (socket) => {
        this.guard = await guardServer(socket, () => this.map, 'agent', this.causes, this.log, 'agent');
      });
    }
    this.control.start();
    this.remote.start();
    this.host?.start();
    if (this.keeper.store?.kind === 'etcd') {
      this.keeper.store.onChange(() => !this.closed && this.reload());
      this.reload();
    } else if (this.o.watchMs > 0) {
      watchFile(this.o.mapFile, { interval: this.o.watchMs, persistent: false }, this.onMapFile);
      this.watching = true;
      // An edit made between the constructor's read and the watch: taken now.
      this.reload();
    }
    this.schedule(0);
    this.configTimer = setInterval(() => this.pusher.check(this.liveBeacons(Date.now())), this.map.heartbeatMs);
    this.log.info(
      { epoch: this.map.epoch, runDir: this.runDir, tcp: this.tcpEndpoint },
      `agent of ${this.o.server} serving ${ctl}${this.tcpEndpoint ? ` and ${this.tcpEndpoint}` : ''}, map epoch ${this.map.epoch}`,
    );
  }

  /** Closes every socket and stops watching the map file. */
  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.watching) unwatchFile(this.o.mapFile, this.onMapFile);
    if (this.settle) clearTimeout(this.settle);
    if (this.roundTimer) clearTimeout(this.roundTimer);
    if (this.configTimer) clearInterval(this.configTimer);
    await this.rounding;
    await this.plane.presence?.close();
    await this.keeper.store?.close();
    this.causes.stop();
    this.host?.stop();
    this.book.close();
    this.guard?.close();
    this.control.close();
    this.remote.close();
  }

  /** Records a portal's beacon (what arrives on the PULL socket). */
  noteBeacon(beacon: PortalBeacon, receivedAt = Date.now()): void {
    this.book.note(beacon, receivedAt);
  }

  /** Every stream of the map in force with its portal's state, as `portalctl status` shows it. */
  status(now = Date.now()): AgentStatus {
    const map = this.map;
    const streams = map.streams.map((s) => this.book.status(s.name, now, map.heartbeatMs));
    return {
      server: this.o.server,
      pid: process.pid,
      mapFile: this.o.mapFile,
      instance: map.instance,
      epoch: this.runningEpoch(now),
      mapEpoch: map.epoch,
      digest: map.digest,
      heartbeatMs: map.heartbeatMs,
      runDir: this.runDir,
      uptimeMs: now - this.startedAt,
      mapErrors: this.keeper.rejection,
      epochSwitch: this.switcher.status,
      handovers: this.switcher.handovers,
      idle: streams.every((s) => s.idle),
      streams,
      ...(this.host?.latest ? { host: this.host.latest } : {}),
      configs: this.configs.store.all(),
      ...(this.keeper.store ? { mapStore: { ...this.keeper.store.health } } : {}),
      ...(this.guard ? { security: this.guard.status() } : {}),
      errors: { ...this.causes.totals },
    };
  }

  /** What this agent says of its map to the other agents. */
  mapInfo(now = Date.now()): MapInfo {
    const map = this.map;
    const rejected = this.keeper.rejection;
    return {
      server: this.o.server,
      epoch: map.epoch,
      digest: map.digest,
      running: this.runningEpoch(now),
      rejected: rejected ? { epoch: rejected.epoch, code: rejected.code } : null,
      spooled: this.spooled(now),
    };
  }

  /** The lowest epoch of the live portals here; the map's when none is live. */
  private runningEpoch(now: number): number {
    const epochs = this.liveBeacons(now).map((b) => b.epoch);
    return epochs.length > 0 ? Math.min(...epochs) : this.map.epoch;
  }

  /** The last beacon of each portal here that is neither dead nor missing. */
  private liveBeacons(now: number): PortalBeacon[] {
    return this.map.streams
      .map((s) => this.book.status(s.name, now, this.map.heartbeatMs))
      .filter((s) => s.beacon !== null && s.state !== 'dead' && s.state !== 'missing')
      .map((s) => s.beacon!);
  }

  /** Records in each stream's spool here, as the portals' last beacons said. */
  private spooled(now: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.map.streams) {
      const b = this.book.status(s.name, now, this.map.heartbeatMs).beacon;
      if (b?.spool) out[s.name] = b.spool.records;
    }
    return out;
  }

  /** Asks every portal for its current beacon (those that answer), then reports status. */
  async freshStatus(): Promise<AgentStatus> {
    const names = this.map.streams.map((s) => s.name);
    for (const b of await freshBeacons(this.runDir, names, Math.min(500, this.map.heartbeatMs))) this.book.note(b);
    return this.status();
  }

  /** Pauses (or resumes) the portals of `streams`, default every stream of the map in force. */
  async setPaused(paused: boolean, streams?: string[]): Promise<PauseReply> {
    const reply = await pausePortals({ server: this.o.server, runDir: this.runDir, map: this.map, timeoutMs: this.o.portalTimeoutMs, log: this.log }, paused, streams);
    return { ...reply, epochSwitch: this.switcher.status, handovers: this.switcher.handovers };
  }

  /**
   * Reads the map file again: takes a valid edit that raises the epoch and that the running
   * system can take, rejects anything else. A taken edit starts a switch (epoch-switch.ts).
   */
  reload(): ReloadReply {
    const now = Date.now();
    const outcome = this.keeper.reload((next, current) => runningEditProblems(current, next, this.o.server, this.spooled(now), this.peers));
    const reply: ReloadReply = {
      server: this.o.server,
      ok: outcome.type !== 'rejected',
      outcome: outcome.type,
      epoch: outcome.epoch,
      mapErrors: this.keeper.rejection,
      epochSwitch: this.switcher.status,
    };
    if (outcome.type === 'applied') {
      reply.from = outcome.from;
      this.log.info({ epoch: outcome.epoch, from: outcome.from }, `map ${this.o.mapFile}: epoch ${outcome.epoch} taken (was ${outcome.from}); switching once every server has it`);
      this.schedule(0);
    } else if (outcome.type === 'rejected') {
      const problems = outcome.rejection.problems.map((p) => `${p.path}: ${p.message}`);
      this.log.error(
        { epoch: outcome.epoch, problems: outcome.rejection.problems },
        `map ${this.o.mapFile}: edit rejected, epoch ${outcome.epoch} stays in force:\n  ${problems.join('\n  ')}`,
      );
    }
    return reply;
  }

  /**
   * Answers a request that came over TCP. With keys, the request proves its key (proof.ts) and
   * is authorized for its caller (authorize.ts), each refusal counted (NOT_AUTHORIZED); a caller
   * that is not an operator sees no local paths or pids.
   */
  private async handleRemote(raw: unknown): Promise<unknown> {
    if (!this.map.security.curve) return this.handle(raw);
    let caller: Caller;
    let req: AgentRequest;
    try {
      const proven = verifyRequest(raw, ownKey(), (key) => keyHolder(this.map, key) !== null);
      caller = callerOf(this.map, proven.key);
      req = parseAgentRequest(proven.request);
      authorize(caller, req);
    } catch (err) {
      if (err instanceof FlotillaError && err.code === 'NOT_AUTHORIZED') this.causes.count('NOT_AUTHORIZED', err.message);
      throw err;
    }
    const reply = await this.handle(req);
    return caller.role === 'operator' ? reply : redact(reply);
  }

  /** Answers one control request (JSON, not yet checked); throws a FlotillaError to refuse it. */
  private async handle(raw: unknown): Promise<AgentReplies[keyof AgentReplies]> {
    const req = parseAgentRequest(raw);
    switch (req.cmd) {
      case 'ping':
        return { ok: true, server: this.o.server, pid: process.pid };
      case 'status':
        return req.fresh ? this.freshStatus() : this.status();
      case 'pause':
      case 'resume':
        return this.setPaused(req.cmd === 'pause', req.streams);
      case 'reload':
        return this.reload();
      case 'map':
        return this.mapInfo();
      case 'load':
        return { server: this.o.server, streams: await portalLoads(this.runDir, this.map.streams.map((s) => s.name), this.o.portalTimeoutMs) };
      case 'drained':
        return answerDrained(this.o.server, this.map, this.runDir, req, this.o.portalTimeoutMs);
      case 'release': {
        if (!this.map.streams.some((s) => s.name === req.stream)) throw new FlotillaError('UNKNOWN_STREAM', `no stream "${req.stream}" in the map in force`);
        const r = await forceRelease(this.runDir, req.stream, req.from, this.o.portalTimeoutMs, this.log, this.plane.handovers);
        this.schedule(0);
        return { ...r, server: this.o.server };
      }
      case 'cancel':
        return cancelHere({ server: this.o.server, runDir: this.runDir, map: this.map, timeoutMs: this.o.portalTimeoutMs, log: this.log }, req);
      case 'configure':
        return configureStream(this.configs, req);
      case 'configs':
        return { server: this.o.server, streams: this.configs.store.all() };
    }
  }

  /** Runs a switch round (epoch-switch.ts) in `ms`, then again: soon while one is open. */
  private schedule(ms: number): void {
    if (this.closed) return;
    if (this.roundTimer) clearTimeout(this.roundTimer);
    this.roundTimer = setTimeout(() => {
      this.roundTimer = null;
      if (this.rounding) return this.schedule(BUSY_ROUND_MS);
      this.rounding = this.switcher
        .round()
        .catch((err: unknown) => {
          this.log.error({ err: String(err) }, `epoch switch round failed: ${String(err)}`);
          return true;
        })
        .then(async (open) => {
          await this.publish();
          this.rounding = null;
          this.schedule(open ? BUSY_ROUND_MS : this.map.heartbeatMs);
        });
    }, ms);
  }

  /** Writes this agent's record under its lease (etcd maps); a failure is logged once until it succeeds again. */
  private async publish(): Promise<void> {
    if (!this.plane.presence) return;
    try {
      await this.plane.presence.publish(this.mapInfo(), this.switcher.status, this.switcher.handovers);
      if (this.publishError) this.log.info(`etcd: the record of ${this.o.server} is written again`);
      this.publishError = null;
    } catch (err) {
      const message = (err as Error).message;
      if (this.publishError === null) this.log.warn({ err: message }, `etcd: cannot write the record of ${this.o.server} (${message}); running on epoch ${this.map.epoch}`);
      this.publishError = message;
    }
  }

  private readonly onMapFile = (curr: Stats, prev: Stats): void => {
    if (this.closed || (curr.mtimeMs === prev.mtimeMs && curr.size === prev.size && curr.ino === prev.ino)) return;
    // The file may be half written: read it once it has kept still for one more interval.
    if (this.settle) clearTimeout(this.settle);
    this.settle = setTimeout(() => {
      this.settle = null;
      if (!this.closed) this.reload();
    }, this.o.watchMs);
  };
}

/** The agent's options with defaults merged; throws CONFIG_INVALID naming a field that cannot work. */
function parseAgentOptions(opts: AgentOptions) {
  return parseOptions(
    'Agent',
    opts,
    { watchMs: DEFAULT_WATCH_MS, portalTimeoutMs: DEFAULT_PORTAL_TIMEOUT_MS, holdLimitMs: DEFAULT_HOLD_LIMIT_MS, hostSampleMs: DEFAULT_HOST_SAMPLE_MS },
    { mapFile: text, server: text, watchMs: int({ min: 0 }), portalTimeoutMs: int({ min: 1 }), holdLimitMs: int({ min: 1 }), hostSampleMs: int({ min: 0 }) },
  );
}
