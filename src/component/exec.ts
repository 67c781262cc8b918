/**
 * The logic of `portal-exec` (portal/exec.ts): a component whose work is done by a child
 * process speaking JSON lines over stdin/stdout (docs/components.md).
 *
 *   portal --DELIVER--> Component.onBatch --record lines--> program stdin
 *   portal <--DONE----- (all acked, emits settled) <--{"ack": n} / {"emit": ...}-- program stdout
 *   portal --CONFIGURE--> onConfigure --{"configure": {...}, "version": v}--> program stdin
 *   portal <--CONFIGURED-- <--{"configured": v} / {"configured": v, "error": "why"}-- program stdout
 *
 * The program is started once and kept running. A delivery is done when the program has acked
 * all its records (and, as the SDK does for every component, when what it emitted is
 * acknowledged downstream). If the program exits, `finished` rejects: the slot's unfinished
 * records stay with the portal and go to the slot again when both restart.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type avro from 'avsc';
import { Component, type ComponentContext } from './component';
import type { Delivered } from '../protocol/envelope';
import { rootOf } from '../protocol/root';
import { FlotillaError } from '../errors';
import { CauseCounter, type Logger } from '../log';
import type { MapKeeper } from '../map/keeper';
import { streamOf } from '../map/lookup';
import { fromAvroJson, isObject, lineSplitter, within } from './lines';

/** Record lines are written to the program's stdin in chunks of about this many characters. */
const WRITE_CHUNK = 64 * 1024;
/** A stdout line longer than this is dropped (and counted) rather than buffered without bound. */
const MAX_LINE_BYTES = 16 * 1024 * 1024;
/** How long the program has to exit after SIGTERM before it is killed. */
const KILL_AFTER_MS = 5000;
/**
 * How long a stop waits for emitted records to be acknowledged downstream. Giving up loses
 * nothing: the delivery they came from was not acknowledged, so it will be given again.
 */
const SETTLE_EMITS_MS = 5000;
/** How long a program whose pipe closed has to exit before it is taken to have closed the pipe itself. */
const LOST_PIPE_GRACE_MS = 1000;
/** How long the program has to answer a configuration line before it counts as rejected. */
export const CONFIGURE_ANSWER_MS = 30_000;
/** Longest piece of an offending line quoted in the log. */
const EXAMPLE_CHARS = 200;

/** The delivery being worked on: records written to the program and not yet acked by it. */
interface OpenBatch {
  unacked: number;
  /** Records by id (hex), for `from` in emit lines. */
  byId: Map<string, Delivered>;
  ctx: ComponentContext;
  done: () => void;
}

/** What an ExecComponent needs: the map, which slot, and the program to run. */
export interface ExecOptions {
  /** The map file's keeper: the program is told the file, the component follows its epochs. */
  map: MapKeeper;
  server: string;
  stream: string;
  slot: number;
  runDir?: string;
  command: string[];
  log: Logger;
  /** Write a cancellation line to the program as each cancellation arrives (`--cancel-lines`). */
  cancelLines?: boolean;
}

/** One slot's component, backed by a child process speaking the line protocol. */
export class ExecComponent {
  private child!: ChildProcess;
  private readonly component: Component;
  private readonly causes: CauseCounter;
  private inType: avro.Type;
  private readonly streamJson: string;
  private batch: OpenBatch | null = null;
  private stopping = false;
  /** The configuration line written and not yet answered (the SDK gives one at a time). */
  private configuring: { version: number; answer: (reason: string | undefined) => void } | null = null;
  private readonly stats = { records: 0, acked: 0, emitted: 0 };

  constructor(private readonly o: ExecOptions) {
    this.inType = streamOf(o.map.map, o.stream).type;
    o.map.onChange((map) => (this.inType = streamOf(map, o.stream).type));
    this.streamJson = JSON.stringify(o.stream);
    this.causes = new CauseCounter(o.log, `portal-exec ${o.stream}/${o.slot}`);
    this.component = new Component({
      map: o.map, // shared: the SDK and its sender reload it on a newer epoch
      server: o.server,
      stream: o.stream,
      slot: o.slot,
      runDir: o.runDir,
      log: o.log,
      onBatch: (records, ctx) => this.onBatch(records, ctx),
      // Out of band, between record lines: the program may stop work on these roots.
      onCancel: (roots) => void (o.cancelLines && this.child?.stdin?.write(`${JSON.stringify({ cancel: { roots } })}\n`)),
      onConfigure: (config, version) => this.onConfigure(config, version),
    });
  }

  /** Resolves once the program is running and the component is registering with the portal. */
  async start(): Promise<void> {
    const { o } = this;
    const [cmd, ...args] = o.command;
    const child = (this.child = spawn(cmd!, args, {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: {
        ...process.env,
        FLOTILLA_MAP: o.map.file ?? '',
        FLOTILLA_SERVER: o.server,
        FLOTILLA_STREAM: o.stream,
        FLOTILLA_SLOT: String(o.slot),
      },
      // Its own process group: a Ctrl-C meant for portal-exec must not reach the program
      // directly, or its exit would race the clean stop. portal-exec signals the group itself.
      detached: true,
    }));
    child.stdin!.on('error', (err) => this.lostPipe(`its stdin (${err.message})`));
    child.stdout!.on('end', () => this.lostPipe('its stdout'));
    child.stdout!.on('data', lineSplitter(MAX_LINE_BYTES, (line) => this.onLine(line), (bytes) => this.bad('LINE_TOO_LONG', `a line of over ${bytes} bytes`)));
    await new Promise<void>((ok, fail) => {
      child.once('spawn', ok);
      child.once('error', (err) => fail(new FlotillaError('CONFIG_INVALID', `cannot run ${o.command[0]}: ${err.message}`)));
    });
    child.on('error', (err) => o.log.warn({ err: err.message }, `portal-exec ${o.stream}/${o.slot}: ${err.message}`));
    child.on('exit', (code, signal) => this.onExit(code, signal));
    o.log.info({ command: o.command, child_pid: child.pid }, `portal-exec ${o.stream}/${o.slot}: running ${o.command.join(' ')} (pid ${child.pid})`);
    this.component.start();
    this.component.finished.catch((err: unknown) => {
      o.log.error({ err }, `portal-exec ${o.stream}/${o.slot}: component failed; exiting so the delivery is given again`);
      this.signal('SIGTERM');
      process.exit(1);
    });
  }

  /** Stops taking records, asks the program to exit (SIGTERM, then SIGKILL), logs totals. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const { child, o } = this;
    await this.component.stop(SETTLE_EMITS_MS); // warns itself if emitted records did not settle
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      this.signal('SIGTERM');
      if (!(await within(KILL_AFTER_MS, exited))) {
        o.log.warn(`portal-exec ${o.stream}/${o.slot}: program still running ${KILL_AFTER_MS} ms after SIGTERM; SIGKILL`);
        this.signal('SIGKILL');
        await exited;
      }
    }
    this.causes.stop();
    o.log.info(
      { ...this.stats, ignored: this.causes.totals },
      `portal-exec ${o.stream}/${o.slot}: stopped after ${this.stats.records} records in, ${this.stats.emitted} emitted`,
    );
  }

  private async onBatch(records: Delivered[], ctx: ComponentContext): Promise<void> {
    if (records.length === 0) return;
    const byId = new Map<string, Delivered>();
    for (const r of records) byId.set(r.id.toString('hex'), r);
    const acked = new Promise<void>((done) => (this.batch = { unacked: records.length, byId, ctx, done }));
    this.stats.records += records.length;
    let chunk = '';
    for (const r of records) {
      chunk += this.recordLine(r);
      if (chunk.length >= WRITE_CHUNK) {
        await this.write(chunk);
        chunk = '';
      }
    }
    if (chunk !== '') await this.write(chunk);
    await acked;
  }

  /**
   * A configuration: written to the program as one line, `{"configure": {...}, "version": v}`,
   * between record lines; its answer line takes it or rejects it (docs/components.md).
   */
  private async onConfigure(config: Record<string, unknown>, version: number): Promise<string | undefined> {
    const answered = new Promise<string | undefined>((answer) => (this.configuring = { version, answer }));
    await this.write(`{"configure":${JSON.stringify(config)},"version":${version}}\n`);
    const inTime = await within(CONFIGURE_ANSWER_MS, answered);
    if (inTime) return answered;
    this.configuring = null;
    return `the program did not answer configuration version ${version} within ${CONFIGURE_ANSWER_MS} ms`;
  }

  private onConfiguredLine(msg: Record<string, unknown>, text: string): void {
    const open = this.configuring;
    if (!open || msg.configured !== open.version) return this.bad('BAD_CONFIGURED', `no configuration line of that version is waiting for an answer: ${text}`);
    this.configuring = null;
    if (msg.error === undefined) return open.answer(undefined);
    open.answer(typeof msg.error === 'string' && msg.error !== '' ? msg.error : `rejected (error: ${JSON.stringify(msg.error)})`);
  }

  /** One record as a stdin line; the payload in Avro's JSON encoding. */
  private recordLine(r: Delivered): string {
    return (
      `{"stream":${this.streamJson},"key":${JSON.stringify(r.key)},"id":"${r.id.toString('hex')}","root":"${rootOf(r)}",` +
      `"timestamp":${r.timestamp},"provenance":${JSON.stringify(r.provenance)},"value":${this.inType.toString(r.value)}}\n`
    );
  }

  /** Writes to the program's stdin, waiting for it to drain when its pipe is full. */
  private async write(text: string): Promise<void> {
    const stdin = this.child.stdin!;
    if (stdin.write(text)) return;
    // If the pipe breaks instead of draining, lostPipe and onExit end the process: wait for
    // that rather than fail the delivery with a less telling error.
    await once(stdin, 'drain').catch(() => new Promise<never>(() => undefined));
  }

  private onLine(text: string): void {
    if (this.stopping || text.trim() === '') return;
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      return this.bad('NOT_JSON', text);
    }
    if (isObject(msg) && 'ack' in msg) return this.onAck(msg.ack, text);
    if (isObject(msg) && 'emit' in msg) return this.onEmit(msg.emit, text);
    if (isObject(msg) && 'configured' in msg) return this.onConfiguredLine(msg, text);
    this.bad('NOT_A_MESSAGE', text);
  }

  private onAck(ack: unknown, text: string): void {
    if (typeof ack !== 'number' || !Number.isInteger(ack) || ack < 1) return this.bad('BAD_ACK', `ack must be a whole number >= 1: ${text}`);
    let n = ack;
    const batch = this.batch;
    if (!batch) return this.bad('BAD_ACK', `no records are waiting for an ack: ${text}`);
    if (n > batch.unacked) {
      this.bad('BAD_ACK', `acks ${n} records but only ${batch.unacked} are waiting; counted as ${batch.unacked}: ${text}`);
      n = batch.unacked;
    }
    batch.unacked -= n;
    this.stats.acked += n;
    if (batch.unacked > 0) return;
    this.batch = null;
    batch.done();
  }

  private onEmit(emit: unknown, text: string): void {
    const batch = this.batch;
    // An emit must come before the ack of the record it was made from: only then does the
    // delivery wait for it, so that a crash cannot lose it.
    if (!batch) return this.bad('BAD_EMIT', `emit while no records are waiting for an ack (emit before acking), dropped: ${text}`);
    if (!isObject(emit) || typeof emit.stream !== 'string') return this.bad('BAD_EMIT', `emit needs {"stream": "name", "value": {...}}: ${text}`);
    const map = this.o.map.map;
    const stream = map.streams.find((s) => s.name === emit.stream);
    if (!stream) return this.bad('BAD_EMIT', `no stream "${emit.stream}" in the map (streams: ${map.streams.map((s) => s.name).join(', ')}): ${text}`);
    let value: Record<string, unknown>;
    try {
      value = fromAvroJson(stream.type, emit.value) as Record<string, unknown>;
    } catch (err) {
      return this.bad('BAD_EMIT', `value does not match stream ${stream.name}'s schema: ${(err as Error).message}: ${text}`);
    }
    let from: Delivered | undefined;
    if (emit.from !== undefined) {
      from = typeof emit.from === 'string' ? batch.byId.get(emit.from.toLowerCase()) : undefined;
      if (!from) this.bad('UNKNOWN_FROM', `"from" is not the id of a record of this delivery; sent without its provenance: ${text}`);
    }
    try {
      batch.ctx.emit(stream.name, value, from);
      this.stats.emitted++;
    } catch (err) {
      this.bad('BAD_EMIT', `${(err as Error).message}: ${text}`);
    }
  }

  private bad(cause: string, example: string): void {
    this.causes.count(cause, example.length > EXAMPLE_CHARS ? `${example.slice(0, EXAMPLE_CHARS)}...` : example);
  }

  /** Signals the program's process group: the program and whatever it started. */
  private signal(sig: NodeJS.Signals): void {
    try {
      process.kill(-this.child.pid!, sig);
    } catch {
      this.child.kill(sig); // the group is gone or was never made; try the program itself
    }
  }

  /**
   * A pipe to the program broke or closed. Usually the program is exiting and onExit will say
   * how; if it is still running after a moment, it closed the pipe itself and cannot serve.
   */
  private lostPipe(which: string): void {
    if (this.stopping) return;
    setTimeout(() => {
      if (this.stopping) return;
      this.o.log.error(`portal-exec ${this.o.stream}/${this.o.slot}: program ${this.o.command[0]} closed ${which} but is still running; killing it and exiting`);
      this.signal('SIGKILL');
      process.exit(1);
    }, LOST_PIPE_GRACE_MS);
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.stopping) return;
    const how = signal ? `signal ${signal}` : `exit code ${code}`;
    this.o.log.error(
      { code, signal },
      `portal-exec ${this.o.stream}/${this.o.slot}: program ${this.o.command[0]} exited (${how}); exiting so that it is restarted and given its unfinished records again`,
    );
    this.signal('SIGTERM'); // anything it left running in its group
    process.exit(1);
  }
}
