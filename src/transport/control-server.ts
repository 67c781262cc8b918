/**
 * The one JSON control server: a ROUTER socket that takes a JSON request (from a REQ, or a DEALER
 * sending the body alone) and answers it with the handler's JSON reply. Requests are handled
 * concurrently, so a slow one (a pause waiting on an unreachable portal) holds up no other.
 *
 *   portalctl / agent --REQ {"cmd": ...}--> ControlServer --handler(request)--> reply | {"error", "code"}
 *
 * A request that is not JSON, or that the handler refuses with a FlotillaError, is answered with
 * an error reply carrying the error's code; any other failure is logged and answered INTERNAL.
 * The process stays up whatever a client sends.
 */
import { chmodSync } from 'node:fs';
import * as zmq from 'zeromq';
import { FlotillaError } from '../errors';
import { bindNamed } from './bind';
import type { Logger } from '../log';
import { errorReply } from '../protocol/control';
import { Outbox } from './outbox';
import { receiveEach } from './receive';
import { requestJson } from './request';

export interface ControlServerOptions {
  /** Names the process in log lines (`agent`, `portal orders`). */
  what: string;
  log: Logger;
  /** Counts a failure by cause (REPLY_FAILED, BAD_REQUEST), as the process's other errors. */
  count: (cause: string, example: string) => void;
  /** Largest request read; a bigger message is not a control request and is dropped by libzmq. */
  maxRequestBytes: number;
  /** Answers a request (parsed JSON, not yet checked); throws a FlotillaError to refuse it. */
  handle: (request: unknown) => unknown;
}

export class ControlServer {
  private readonly socket: zmq.Router;
  private readonly replies: Outbox;
  private closed = false;

  constructor(private readonly o: ControlServerOptions) {
    this.socket = new zmq.Router({ linger: 0, maxMessageSize: o.maxRequestBytes });
    this.replies = new Outbox('control', this.socket, (err) => o.count('REPLY_FAILED', err.message));
  }

  /**
   * Binds an ipc endpoint, unless a live server answers there already: then throws `running`
   * (a second bind to an ipc path silently takes it from the first process). The socket file is
   * made readable and writable by the service's user and group only.
   */
  async bindIpc(endpoint: string, running: () => FlotillaError): Promise<void> {
    await refuseIfRunning(endpoint, running);
    await bindNamed(this.socket, endpoint, 'the control server');
    chmodSync(endpoint.slice('ipc://'.length), 0o660);
  }

  /**
   * Binds another endpoint (TCP), after `prepare` (CURVE, src/transport/curve.ts) set the socket
   * up; returns where it listens (the port the OS chose for `:*`).
   */
  async bind(endpoint: string, prepare?: (socket: zmq.Router) => Promise<unknown>): Promise<string> {
    await prepare?.(this.socket);
    await bindNamed(this.socket, endpoint, 'the control server');
    return this.socket.lastEndpoint ?? endpoint;
  }

  /** Starts answering requests. */
  start(): void {
    void this.loop();
  }

  close(): void {
    this.closed = true;
    this.replies.close();
    this.socket.close();
  }

  private loop(): Promise<void> {
    return receiveEach(this.socket, {
      closed: () => this.closed,
      handle: (frames) => this.onRequest(frames),
      crashed: (err) => this.o.log.error({ err }, `${this.o.what}: unexpected error reading a control request`),
    });
  }

  private onRequest(frames: Buffer[]): void {
    // REQ sends [delimiter, body]; a DEALER may send the body alone. Answer in kind.
    const [id, ...rest] = frames;
    const envelope = rest.length === 2 && rest[0]!.length === 0 ? [rest[0]!] : rest.length === 1 ? [] : null;
    if (!id || envelope === null) return this.o.count('BAD_REQUEST', `a control message of ${frames.length} frames`);
    void this.answer(rest[rest.length - 1]!).then((reply) => this.replies.push([id, ...envelope, Buffer.from(JSON.stringify(reply))]));
  }

  private async answer(body: Buffer): Promise<unknown> {
    let request: unknown;
    try {
      request = JSON.parse(body.toString('utf8'));
    } catch {
      return errorReply(new FlotillaError('BAD_REQUEST', 'request is not a JSON object'));
    }
    try {
      return await this.o.handle(request);
    } catch (err) {
      if (err instanceof FlotillaError) return errorReply(err);
      const cmd = (request as { cmd?: unknown } | null)?.cmd;
      this.o.log.error({ err }, `${this.o.what}: ${String(cmd)} failed`);
      return errorReply(new FlotillaError('INTERNAL', `internal error: ${(err as Error).message}`));
    }
  }
}

/** Throws `running()` if something answers a ping at `endpoint`. */
async function refuseIfRunning(endpoint: string, running: () => FlotillaError): Promise<void> {
  try {
    await requestJson(endpoint, { cmd: 'ping' }, 300);
  } catch {
    return; // no answer: nobody there (a stale socket file is simply bound over)
  }
  throw running();
}
