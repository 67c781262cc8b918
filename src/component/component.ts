/**
 * The component SDK: a worker process that serves one slot of a stream on its server.
 *
 *   portal --DELIVER (batch)--> component.onBatch(records, ctx) --DONE--> portal
 *                                      \--ctx.emit(stream, value)--> sender --> next portal
 *
 * Deliveries are handled one at a time, in order, so records of a key are seen in the order they
 * were sent. A delivery is acknowledged (DONE) only after `onBatch` returns (or its promise
 * resolves) and every record it emitted has been acknowledged by the portal it went to, so a
 * crash at any point loses nothing: the portal holds unacknowledged deliveries and gives them to
 * the slot again when a component registers for it.
 *
 *   portal --CONFIGURE {version, config}--> onConfigure(config, version) --CONFIGURED--> portal
 *
 * A CONFIGURE (the management bus) is read as it arrives, beside the deliveries, never behind
 * them: deliveries received are queued here (at most the portal's slot window) while a receive
 * loop goes on reading. `onConfigure` may run while `onBatch` awaits; the next `onBatch` starts
 * only once it has settled. Configurations are handled one at a time, in order.
 */
import type avro from 'avsc';
import * as zmq from 'zeromq';
import { decodeBody, type Delivered } from '../protocol/envelope';
import type { ComponentBeacon } from '../protocol/beacons';
import { CauseCounter, createLogger, type Logger } from '../log';
import { serverOf, slotCount, streamOf } from '../map/lookup';
import { MapKeeper } from '../map/keeper';
import { FlotillaError } from '../errors';
import { int, parseOptions, text } from '../options';
import type { FlotillaMap } from '../map/types';
import { slotsEndpoint } from '../protocol/endpoints';
import { Outbox } from '../transport/outbox';
import { Sender } from '../sender/sender';
import { countFrame, decodeHeader, encodeHeader, MessageType } from '../protocol/wire';
import type { CancelMessage } from '../protocol/cancel';
import { provenanceFrom, rootOf } from '../protocol/root';
import { type Config, MAX_REASON_CHARS, parseConfigureBody } from '../protocol/configure';

/** What a handler can do besides read its records. */
export interface ComponentContext {
  server: string;
  stream: string;
  slot: number;
  /**
   * Sends a record on `stream` (any stream of the map, this one included). `from` is the record
   * it was made from: its provenance, plus this hop, goes with the new record. Returns false
   * when batches queue behind a full window downstream: a handler that emits a lot should then
   * `await ctx.writable()`.
   */
  emit(stream: string, value: Record<string, unknown>, from?: Delivered<unknown>): boolean;
  /** Resolves when emitting may go on (see `emit`). */
  writable(): Promise<void>;
  /**
   * True if `record`'s root (src/protocol/root.ts) has been cancelled: work on it may stop. The
   * portal tells the component out of band (CANCEL), even while a delivery is being handled.
   */
  cancelled(record: Delivered<unknown>): boolean;
  /** The configuration this component runs (the management bus); `{}` before any. */
  readonly config: Config;
  /** Its version; 0 before any. */
  readonly configVersion: number;
}

/** How long `stop()` waits for emitted records to be acknowledged downstream. */
export const STOP_FLUSH_MS = 5000;

export interface ComponentOptions<T> {
  /**
   * The map: a file (read again when the portal or a downstream redirect shows a newer epoch),
   * a map given whole, or the process's keeper of it (shared).
   */
  map: FlotillaMap | string | MapKeeper;
  server: string;
  stream: string;
  slot: number;
  runDir?: string;
  /** Told the roots of each cancellation as it arrives, out of band (portal-exec passes them on). */
  onCancel?: (roots: string[]) => void;
  /** Handles one delivery's records, in order. Throwing crashes the component (see above). */
  onBatch?: (records: Delivered<T>[], ctx: ComponentContext) => void | Promise<void>;
  /** Instead of onBatch: the envelopes undecoded (`count` of them end to end in `body`). */
  onRawBatch?: (body: Buffer, count: number, ctx: ComponentContext) => void | Promise<void>;
  /**
   * A configuration from the management bus (`portalctl configure`): `config` is a JSON object,
   * `version` its version on the stream. Return (or resolve) nothing to take it; return a
   * non-empty string, or throw, to reject it with that reason (the message of what was thrown):
   * the component then keeps the configuration it ran, and the operator sees the reason. An error
   * here never ends the component. Without `onConfigure` every configuration is taken (and
   * readable as `ctx.config`). Not called again for the version the component already runs.
   */
  onConfigure?: (config: Config, version: number, ctx: ComponentContext) => void | string | Promise<void | string>;
  log?: Logger;
}

export class Component<T = Record<string, unknown>> {
  /** The map in force in this process: its epoch is what the component's beacons report. */
  readonly keeper: MapKeeper;
  private readonly socket = new zmq.Dealer({ linger: 0, receiveHighWaterMark: 0 });
  private readonly log: Logger;
  private readonly ctx: ComponentContext;
  /** The stream's payload type under the map in force. */
  private type: avro.Type;
  private readonly endpoint: string;
  private readonly outbox: Outbox;
  private sender: Sender | null = null;
  private emitted = false;
  private closed = false;
  private done: Promise<void> = Promise.resolve();
  private heartbeat: NodeJS.Timeout | null = null;
  /** Deliveries received and not yet handled (the portal sends at most its slot window). */
  private readonly queue: Buffer[][] = [];
  private wake: (() => void) | null = null;
  /** The configurations being handled, in order; a delivery waits for them. */
  private configuring: Promise<void> = Promise.resolve();
  private config: Config = {};
  private configVersion = 0;
  /** Records received since the last beacon, and in the delivery being handled. */
  private receivedSinceBeat = 0;
  private inflight = 0;
  /** Records and deliveries handled so far; records whose payload did not decode; records of cancelled roots skipped. */
  readonly stats = { records: 0, deliveries: 0, badRecords: 0, cancelled: 0 };
  /** Cancelled roots and when each expires (ms since the Unix epoch). */
  private readonly cancelledRoots = new Map<string, number>();
  private causes: CauseCounter;
  private readonly badRecord = (index: number, why: string) => {
    this.stats.badRecords++;
    this.causes.count('BAD_PAYLOAD', `record ${index} of a delivery: ${why}`);
  };

  private readonly opts: ComponentOptions<T>;

  constructor(options: ComponentOptions<T>) {
    const opts = (this.opts = parseOptions('Component', options, {}, { server: text, stream: text, slot: int({ min: 0, max: 1023 }) }));
    if (!opts.onBatch === !opts.onRawBatch) throw new FlotillaError('CONFIG_INVALID', 'give a component exactly one of onBatch and onRawBatch');
    this.keeper = MapKeeper.of(opts.map);
    const stream = streamOf(this.keeper.map, opts.stream);
    const slots = slotCount(serverOf(this.keeper.map, opts.server), stream);
    if (opts.slot >= slots) throw new FlotillaError('CONFIG_INVALID', `Component option slot is ${opts.slot}; stream ${opts.stream} has slots 0 to ${slots - 1} on server ${opts.server}`);
    this.type = stream.type;
    // A new epoch may give the stream a new schema version: decode by the map in force.
    this.keeper.onChange((map) => (this.type = streamOf(map, opts.stream).type));
    this.log = opts.log ?? createLogger('component', { stream: opts.stream, slot: opts.slot });
    this.endpoint = slotsEndpoint(opts.runDir ?? this.keeper.map.runDir, opts.stream);
    this.causes = new CauseCounter(this.log, `component ${opts.stream}/${opts.slot}`);
    this.outbox = new Outbox('component', this.socket, (err) => this.log.warn({ err: err.message }, 'component: send to portal failed'));
    const hop = `${opts.server}/${opts.stream}/${opts.slot}`;
    const self = this; // the getters below read the component
    this.ctx = {
      get config() {
        return self.config;
      },
      get configVersion() {
        return self.configVersion;
      },
      server: opts.server,
      stream: opts.stream,
      slot: opts.slot,
      emit: (stream, value, from) => {
        this.emitted = true;
        return this.senderFor().send(stream, value, from ? provenanceFrom(from, hop) : [hop]);
      },
      writable: () => (this.sender ? this.sender.writable() : Promise.resolve()),
      cancelled: (record) => this.cancelledRoots.size > 0 && this.isCancelled(record, Date.now()),
    };
  }

  /** True if `record`'s root is cancelled as of `now` (ms since the Unix epoch). */
  private isCancelled(record: Delivered<unknown>, now: number): boolean {
    return (this.cancelledRoots.get(rootOf(record)) ?? 0) > now;
  }

  private forgetExpired(now: number): void {
    for (const [root, expires] of this.cancelledRoots) if (expires <= now) this.cancelledRoots.delete(root);
  }

  /** Connects to the portal and registers for the slot; records start arriving. */
  start(): void {
    // Watch before connecting: an ipc connect can complete before a later watcher would see it.
    void this.watchConnection(this.socket.events);
    this.socket.connect(this.endpoint);
    this.ready();
    this.heartbeat = setInterval(() => this.beat(), this.keeper.map.heartbeatMs);
    this.heartbeat.unref();
    this.done = Promise.all([this.receive(), this.work()]).then(() => undefined);
    this.log.info({ endpoint: this.endpoint }, `component ${this.opts.stream}/${this.opts.slot} connecting to ${this.endpoint}`);
  }

  /** Resolves when the component has stopped (after `stop()`, or on a handler error). */
  get finished(): Promise<void> {
    return this.done;
  }

  /**
   * Stops taking deliveries, waits (up to `flushMs`) for emitted records to settle, closes.
   * Giving up loses nothing: the delivery they came from was not acknowledged, so the portal
   * gives it to the slot again.
   */
  async stop(flushMs = STOP_FLUSH_MS): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wake?.();
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.outbox.close();
    this.socket.close();
    if (this.sender) {
      let timer: NodeJS.Timeout | undefined;
      const settled = await Promise.race([
        this.sender.flush().then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), flushMs))),
      ]);
      clearTimeout(timer);
      if (!settled) this.log.warn(`component ${this.opts.stream}/${this.opts.slot}: ${this.sender.pending} emitted records unacknowledged after ${flushMs} ms; their sources will be delivered again`);
      this.sender.close();
    }
  }

  private senderFor(): Sender {
    this.sender ??= new Sender({ map: this.keeper, log: this.log, inner: true }); // shares the process's map; batches from inside the flow
    return this.sender;
  }

  private ready(): void {
    this.outbox.push([
      encodeHeader(MessageType.READY, 0, this.keeper.map.epoch, 0),
      Buffer.from(JSON.stringify({ slot: this.opts.slot, pid: process.pid })),
    ]);
  }

  /** Tells the portal this component is alive, and how busy (see heartbeat.ts). */
  private beat(): void {
    // Cancellations that expired are forgotten, so deliveries stop checking records once none is in force.
    if (this.cancelledRoots.size > 0) this.forgetExpired(Date.now());
    const beacon: ComponentBeacon = {
      slot: this.opts.slot,
      pid: process.pid,
      received: this.receivedSinceBeat,
      inflight: this.inflight,
      epoch: this.keeper.map.epoch,
      configVersion: this.configVersion,
    };
    this.receivedSinceBeat = 0;
    this.outbox.push([encodeHeader(MessageType.HEARTBEAT, 0, this.keeper.map.epoch, 0), Buffer.from(JSON.stringify(beacon))]);
  }

  /** Registers again after every (re)connect: ZeroMQ reconnects, but the portal must be told. */
  private async watchConnection(events: zmq.Observer): Promise<void> {
    for await (const event of events) {
      if (this.closed) return;
      if (event.type === 'connect') this.ready();
    }
  }

  /**
   * Reads the portal's messages: deliveries are queued for `work`; configurations and
   * cancellations are handled at once (out of band: also while a delivery is being handled).
   */
  private async receive(): Promise<void> {
    while (!this.closed) {
      let msg: Buffer[];
      try {
        msg = await this.socket.receive();
      } catch {
        if (this.closed) break;
        continue;
      }
      const header = decodeHeader(msg[0]);
      if (header?.type === MessageType.CANCEL) {
        this.onCancel(header.seq, msg[1]);
        continue;
      }
      if (header?.type === MessageType.CONFIGURE) {
        const frame = msg[1];
        this.configuring = this.configuring.then(() => this.configure(frame));
        continue;
      }
      if (!header || header.type !== MessageType.DELIVER || !msg[1]) continue;
      this.receivedSinceBeat += header.count;
      this.queue.push(msg);
      this.wake?.();
    }
  }

  /** Puts a CANCEL's roots in force here, and confirms it (CANCELLED with its seq). */
  private onCancel(seq: number, frame: Buffer | undefined): void {
    let body: CancelMessage;
    try {
      body = JSON.parse(frame?.toString('utf8') ?? '') as CancelMessage;
    } catch {
      return this.causes.count('BAD_CANCEL', 'a CANCEL without a JSON body');
    }
    this.forgetExpired(Date.now());
    const roots: string[] = [];
    for (const c of Array.isArray(body.cancellations) ? body.cancellations : []) {
      if (typeof c?.root !== 'string' || typeof c.expiresAt !== 'number') continue;
      this.cancelledRoots.set(c.root, c.expiresAt);
      roots.push(c.root);
    }
    if (seq !== 0) this.outbox.push([encodeHeader(MessageType.CANCELLED, seq, this.keeper.map.epoch, 0)]);
    if (roots.length > 0) this.opts.onCancel?.(roots);
  }

  /** Handles one CONFIGURE: onConfigure, then CONFIGURED (taken, or rejected with the reason). */
  private async configure(frame: Buffer | undefined): Promise<void> {
    const body = parseConfigureBody(frame);
    if (!body) return this.causes.count('BAD_CONFIGURE', 'a CONFIGURE without a JSON body {version, config}');
    let reason: string | undefined;
    if (body.version !== this.configVersion) {
      try {
        const answer = await this.opts.onConfigure?.(body.config, body.version, this.ctx);
        if (typeof answer === 'string' && answer !== '') reason = answer.slice(0, MAX_REASON_CHARS);
      } catch (err) {
        reason = (err instanceof Error ? err.message : String(err)).slice(0, MAX_REASON_CHARS) || 'onConfigure threw';
      }
      if (reason === undefined) {
        this.config = body.config;
        this.configVersion = body.version;
      }
    }
    const where = `component ${this.opts.stream}/${this.opts.slot}`;
    if (reason === undefined) this.log.info({ version: body.version }, `${where}: runs configuration version ${body.version}`);
    else this.log.warn({ version: body.version, reason }, `${where}: rejected configuration version ${body.version}: ${reason}; runs version ${this.configVersion}`);
    if (this.closed) return;
    const answer = { slot: this.opts.slot, version: body.version, ok: reason === undefined, ...(reason === undefined ? {} : { reason }) };
    this.outbox.push([encodeHeader(MessageType.CONFIGURED, body.version, this.keeper.map.epoch, 0), Buffer.from(JSON.stringify(answer))]);
  }

  /** Handles the queued deliveries one at a time, in order, each after the configurations before it. */
  private async work(): Promise<void> {
    const { onBatch, onRawBatch } = this.opts;
    while (!this.closed) {
      const msg = this.queue.shift();
      if (!msg) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = null;
        continue;
      }
      await this.configuring;
      if (this.closed) return;
      const header = decodeHeader(msg[0])!;
      // The portal has switched to a newer epoch: so has the map in force.
      if (header.epoch > this.keeper.map.epoch) this.keeper.reload();
      this.emitted = false;
      this.inflight = header.count;
      let skipped = 0;
      if (onRawBatch) await onRawBatch(msg[1], header.count, this.ctx);
      else {
        let records = decodeBody<T>(msg[1], this.type, this.badRecord);
        // Records of a cancelled root not yet begun are skipped (docs/components.md, "Cancellation").
        if (this.cancelledRoots.size > 0) {
          const now = Date.now();
          const kept = records.filter((r) => !this.isCancelled(r, now));
          skipped = records.length - kept.length;
          this.stats.cancelled += skipped;
          records = kept;
        }
        if (records.length > 0 || skipped === 0) await onBatch!(records, this.ctx);
      }
      // Records made from this delivery must be safe downstream before it counts as done.
      if (this.emitted) await this.sender!.flush();
      this.stats.records += header.count;
      this.stats.deliveries++;
      this.inflight = 0;
      if (this.closed) return;
      const done = encodeHeader(MessageType.DONE, header.seq, this.keeper.map.epoch, header.count);
      this.outbox.push(skipped > 0 ? [done, countFrame(skipped)] : [done]);
    }
  }
}

/**
 * Runs a component until SIGTERM or SIGINT, then stops it cleanly. A handler that throws ends
 * the process with exit code 1: its unfinished delivery stays with the portal, which gives it
 * to the slot again once the component restarts (under systemd, at once).
 */
export function runComponent<T = Record<string, unknown>>(opts: ComponentOptions<T>): Component<T> {
  const component = new Component<T>(opts);
  const log = opts.log ?? createLogger('component', { stream: opts.stream, slot: opts.slot });
  const shutdown = (signal: string) => {
    log.info(`component ${opts.stream}/${opts.slot}: ${signal}, stopping`);
    component.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  component.start();
  component.finished.catch((err: unknown) => {
    log.error({ err }, `component ${opts.stream}/${opts.slot}: handler failed; exiting so the delivery is given again`);
    process.exit(1);
  });
  return component;
}
