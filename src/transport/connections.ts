/**
 * The connection cap of a TCP server socket (a portal's ingress, an agent's control port), and
 * what its handshakes came to. libzmq accepts every connection it is offered, each taking a file
 * descriptor; once the process runs out, an ipc accept fails with EMFILE and libzmq 4.3.5 aborts
 * the process (`ipc_listener.cpp`). So the guard counts open connections from the socket's
 * events and stops listening at the cap (the kernel then refuses new connections), listening
 * again once a quarter of them have closed. A connection that never finishes its handshake is
 * dropped after HANDSHAKE_MS (src/transport/curve.ts), so an idle flood drains by itself, while
 * the connections already made keep being served.
 *
 *   accept  -> open + 1; at the cap: unbind (CONNECTION_CAP counted)
 *   disconnect -> open - 1; at 3/4 of the cap: bind again
 *
 * The cap is the map's `security.max_connections`, lowered to half of what the descriptor limit
 * leaves after a reserve for the process's own files, ipc sockets and slots.
 */
import { readFileSync } from 'node:fs';
import type * as zmq from 'zeromq';
import type { CauseCounter, Logger } from '../log';
import type { ZapCounts } from './zap';

/** Descriptors kept for the process's own files and ipc connections, out of the limit. */
const RESERVED_FDS = 256;

/** What status shows of a TCP server socket's security and connections. */
export interface SecurityStatus {
  /** `curve`: keys from the map, ZAP admits the listed ones; `plain`: plain TCP on loopback. */
  transport: 'curve' | 'plain';
  /** TCP connections open now, and the most kept open. */
  connections: number;
  maxConnections: number;
  /** False while the cap is reached (new connections are refused by the kernel). */
  listening: boolean;
  /** Times the cap was reached. */
  capReached: number;
  /** CURVE handshakes whose key the map lists for this socket, and those refused (KEY_REFUSED). */
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

export class ConnectionGuard {
  private open = 0;
  private listening = true;
  private capReached = 0;
  private handshakeFailed = 0;
  private moving: Promise<void> = Promise.resolve();
  private closed = false;
  readonly cap: number;

  /** Where the socket listens, noted at the first accept (its lastEndpoint: a port the OS chose is kept). */
  private endpoint = '';

  /** Watches `socket`, made before it binds (its TCP endpoint must be the last it binds). */
  constructor(
    private readonly socket: zmq.Socket,
    mapCap: number,
    private readonly zap: ZapCounts | null,
    private readonly causes: CauseCounter,
    private readonly log: Logger,
    private readonly what: string,
  ) {
    this.cap = effectiveCap(mapCap);
    const events = socket.events;
    events.on('accept', () => this.accepted());
    events.on('disconnect', () => this.dropped());
    const failed = (e: { address: string; error: Error }) => {
      this.handshakeFailed++;
      causes.count('HANDSHAKE_FAILED', `a handshake on ${e.address} failed: ${e.error.message}`);
    };
    events.on('handshake:error:protocol', failed);
    events.on('handshake:error:other', failed);
  }

  /** Stops acting on events (the socket is closing). */
  close(): void {
    this.closed = true;
  }

  status(): SecurityStatus {
    return {
      transport: this.zap ? 'curve' : 'plain',
      connections: this.open,
      maxConnections: this.cap,
      listening: this.listening,
      capReached: this.capReached,
      admitted: this.zap?.admitted ?? 0,
      refused: this.zap?.refused ?? 0,
      handshakeFailed: this.handshakeFailed,
    };
  }

  private accepted(): void {
    this.open++;
    if (this.endpoint === '') this.endpoint = this.socket.lastEndpoint ?? '';
    if (this.open < this.cap || !this.listening || this.closed) return;
    this.listening = false;
    this.capReached++;
    this.causes.count('CONNECTION_CAP', `${this.what}: ${this.open} connections open, the cap (security.max_connections, or the descriptor limit): new connections are refused until some close`);
    this.move(() => this.socket.unbind(this.endpoint));
  }

  private dropped(): void {
    this.open = Math.max(0, this.open - 1);
    if (this.listening || this.closed || this.open > Math.floor((this.cap * 3) / 4)) return;
    this.listening = true;
    this.log.info({ connections: this.open }, `${this.what}: ${this.open} connections open, taking new ones again on ${this.endpoint}`);
    this.move(() => this.socket.bind(this.endpoint));
  }

  /** Binds and unbinds one at a time, in order; a failure is logged and tried no further. */
  private move(step: () => Promise<void>): void {
    this.moving = this.moving
      .then(step)
      .catch((err: unknown) => {
        if (!this.closed) this.log.warn({ err: String(err) }, `${this.what}: could not change listening on ${this.endpoint}: ${String(err)}`);
      });
  }
}
