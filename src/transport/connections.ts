/**
 * The connection cap of a TCP server socket (a portal's ingress, an agent's control port), and
 * what its handshakes came to. libzmq accepts every connection it is offered, each taking a file
 * descriptor; once the process has none left, its next ipc accept fails with EMFILE and libzmq
 * 4.3.5 aborts the process (`ipc_listener.cpp`). So, counting open connections from the socket's
 * events:
 *
 *   open > cap             ZAP refuses every handshake (CONNECTION_CAP): the connection closes at once
 *   handshake not done     dropped after HANDSHAKE_MS (curve.ts): an idle flood drains by itself
 *   open >= flood mark     (3/4 of the descriptors) the socket stops listening for HANDSHAKE_MS
 *                          (CONNECTION_FLOOD). libzmq's unbind closes every connection accepted on
 *                          the endpoint, listed clients' too: they reconnect and resend what was
 *                          not acknowledged, where the process would otherwise abort.
 *
 * The cap is the map's `security.max_connections`, lowered to half of what the descriptor limit
 * leaves after a reserve for the process's own files, ipc sockets and slots.
 */
import { readFileSync } from 'node:fs';
import type * as zmq from 'zeromq';
import type { CauseCounter, Logger } from '../log';
import type { ZapCounts } from './zap';

/** How long a new connection has to finish its handshake before it is dropped, ms. */
export const HANDSHAKE_MS = 5000;

/** Descriptors kept for the process's own files and ipc connections, out of the limit. */
const RESERVED_FDS = 256;

/** What status shows of a TCP server socket's security and connections. */
export interface SecurityStatus {
  /** `curve`: keys from the map, ZAP admits the listed ones; `plain`: plain TCP on loopback. */
  transport: 'curve' | 'plain';
  /** TCP connections open now, and the most kept open. */
  connections: number;
  maxConnections: number;
  /** False for HANDSHAKE_MS after a flood reached 3/4 of the descriptors (the port is closed). */
  listening: boolean;
  /** Handshakes refused past the cap (CONNECTION_CAP), and times the port was closed by a flood (CONNECTION_FLOOD). */
  capReached: number;
  floods: number;
  /** Handshakes whose key the map lists for this socket (plain TCP: every one), and those refused (KEY_REFUSED). */
  admitted: number;
  refused: number;
  /** Handshakes that failed before a key could be checked: a wrong secret, not ZMTP, too slow. */
  handshakeFailed: number;
}

/** The soft limit of open files of this process (Node raises it to the hard limit at start). */
export function openFileLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    if (soft && soft !== 'unlimited') return Number(soft);
  } catch {
    // not Linux: no limit known
  }
  return Number.POSITIVE_INFINITY;
}

/** The cap in force: the map's, lowered to what the descriptor limit can hold with room to spare. */
export function effectiveCap(mapCap: number, fileLimit = openFileLimit()): number {
  return Math.max(1, Math.min(mapCap, Math.floor((fileLimit - RESERVED_FDS) / 2)));
}

/** Where a flood closes the port: 3/4 of the descriptors left after the reserve. */
export function floodMark(fileLimit = openFileLimit()): number {
  return Math.max(2, Math.floor(((fileLimit - RESERVED_FDS) * 3) / 4));
}

export class ConnectionGuard {
  /** Set by guardServer once ZAP guards the socket; whether it runs CURVE. */
  zap: ZapCounts | null = null;
  curve = false;
  readonly cap: number;
  private readonly mark: number;
  private open = 0;
  private listening = true;
  private floods = 0;
  private handshakeFailed = 0;
  private moving: Promise<void> = Promise.resolve();
  private closed = false;
  /** Where the socket listens, noted at the first accept (its lastEndpoint: a port the OS chose is kept). */
  private endpoint = '';

  /** Watches `socket`, made before it binds (its TCP endpoint must be the last it binds). */
  constructor(
    private readonly socket: zmq.Socket,
    mapCap: number,
    private readonly causes: CauseCounter,
    private readonly log: Logger,
    private readonly what: string,
  ) {
    const fileLimit = openFileLimit(); // /proc/self/limits, read once
    this.cap = effectiveCap(mapCap, fileLimit);
    this.mark = floodMark(fileLimit);
    const events = socket.events;
    events.on('accept', () => this.accepted());
    events.on('disconnect', () => {
      this.open = Math.max(0, this.open - 1);
    });
    const failed = (e: { address: string; error: Error }) => {
      this.handshakeFailed++;
      causes.count('HANDSHAKE_FAILED', `a handshake on ${e.address} failed: ${e.error.message}`);
    };
    events.on('handshake:error:protocol', failed);
    events.on('handshake:error:other', failed);
  }

  /** True while the socket has more connections than its cap (ZAP refuses every handshake). */
  full(): boolean {
    return this.open > this.cap;
  }

  /** Stops acting on events (the socket is closing). */
  close(): void {
    this.closed = true;
  }

  status(): SecurityStatus {
    return {
      transport: this.curve ? 'curve' : 'plain',
      connections: this.open,
      maxConnections: this.cap,
      listening: this.listening,
      capReached: this.zap?.overCap ?? 0,
      floods: this.floods,
      admitted: this.zap?.admitted ?? 0,
      refused: this.zap?.refused ?? 0,
      handshakeFailed: this.handshakeFailed,
    };
  }

  private accepted(): void {
    this.open++;
    if (this.endpoint === '') this.endpoint = this.socket.lastEndpoint ?? '';
    if (this.open < this.mark || !this.listening || this.closed) return;
    this.listening = false;
    this.floods++;
    this.causes.count('CONNECTION_FLOOD', `${this.what}: ${this.open} connections open, 3/4 of the descriptors: ${this.endpoint} closed for ${HANDSHAKE_MS} ms (every connection on it dropped; clients reconnect)`);
    this.move(async () => {
      await this.socket.unbind(this.endpoint);
      this.open = 0; // unbind closed every connection accepted on the endpoint, without events
      await new Promise((resolve) => setTimeout(resolve, HANDSHAKE_MS));
      if (this.closed) return;
      await this.socket.bind(this.endpoint);
      this.listening = true;
      this.log.info(`${this.what}: listening again on ${this.endpoint}`);
    });
  }

  /** Unbinds and binds one at a time; a failure is logged (the next flood tries again). */
  private move(step: () => Promise<void>): void {
    this.moving = this.moving.then(step).catch((err: unknown) => {
      this.listening = true;
      if (!this.closed) this.log.warn({ err: String(err) }, `${this.what}: could not close and open ${this.endpoint} again: ${String(err)}`);
    });
  }
}
