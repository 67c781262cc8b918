/**
 * sd_notify for daemons run by systemd (Type=notify): READY=1, STATUS=, RELOADING=1, STOPPING=1
 * and the watchdog's WATCHDOG=1, written straight to $NOTIFY_SOCKET, a unix datagram socket.
 *
 * Node has no unix datagram sockets, so this uses `node-unix-socket` (a maintained N-API
 * addon shipped prebuilt for Linux x64/arm64, so installing it runs no compiler and no install
 * script). Sending one datagram costs about 20 µs; running `systemd-notify` for each message, as
 * this code did before, cost about 60 ms and a process each, and systemd had to be told to accept
 * messages from any process of the unit (NotifyAccess=all) instead of the main one.
 *
 * Outside systemd ($NOTIFY_SOCKET unset) every call does nothing.
 */
import { DgramSocket } from 'node-unix-socket';

/** What a daemon tells systemd about its life. */
export interface Notifier {
  /** Start-up finished: sockets bound, ready to serve. */
  ready(status?: string): void;
  /** A line for `systemctl status` (state, rates). */
  status(text: string): void;
  /** A reload (the map read again) has begun; `ready()` ends it. */
  reloading(): void;
  /** A stop has begun. */
  stopping(): void;
  /** Stops the watchdog and closes the socket. */
  close(): void;
}

/** The socket address as the kernel wants it: "@name" is an abstract socket ("\0name"). */
function socketAddress(path: string): string {
  return path.startsWith('@') ? `\0${path.slice(1)}` : path;
}

/**
 * The watchdog interval systemd asks for ($WATCHDOG_USEC, meant for this process when
 * $WATCHDOG_PID is unset or ours), in ms; 0 when there is no watchdog.
 */
export function watchdogMs(env: NodeJS.ProcessEnv = process.env): number {
  const usec = Number(env.WATCHDOG_USEC);
  if (!(usec > 0)) return 0;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== process.pid) return 0;
  return Math.floor(usec / 1000);
}

class SocketNotifier implements Notifier {
  private readonly socket = new DgramSocket();
  private readonly address: string;
  private watchdog: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(path: string, private readonly onError: (err: Error) => void) {
    this.address = socketAddress(path);
    this.socket.on('error', (err: Error) => this.onError(err));
  }

  send(message: string): void {
    if (this.closed) return;
    const buf = Buffer.from(message);
    this.socket.sendTo(buf, 0, buf.length, this.address, (err) => err && this.onError(err));
  }

  ready(status?: string): void {
    this.send(status ? `READY=1\nSTATUS=${status}` : 'READY=1');
    this.startWatchdog();
  }

  status(text: string): void {
    this.send(`STATUS=${text.replace(/\n/g, ' ')}`);
  }

  reloading(): void {
    this.send('RELOADING=1');
  }

  stopping(): void {
    this.send('STOPPING=1');
  }

  /**
   * WATCHDOG=1 from a timer on the event loop at half the interval: a loop that hangs (a busy
   * loop, a deadlock) stops the pings, and systemd kills and restarts the daemon.
   */
  private startWatchdog(): void {
    const ms = watchdogMs();
    if (ms === 0 || this.watchdog) return;
    this.send('WATCHDOG=1');
    this.watchdog = setInterval(() => this.send('WATCHDOG=1'), Math.max(1, Math.floor(ms / 2)));
    this.watchdog.unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.watchdog) clearInterval(this.watchdog);
    this.socket.close();
  }
}

const quiet: Notifier = { ready() {}, status() {}, reloading() {}, stopping() {}, close() {} };

/**
 * The notifier of this process: talks to systemd when $NOTIFY_SOCKET names a socket, does
 * nothing otherwise. `onError` hears of a message that could not be sent (never thrown).
 */
export function systemdNotifier(onError: (err: Error) => void, env: NodeJS.ProcessEnv = process.env): Notifier {
  const path = env.NOTIFY_SOCKET;
  return path ? new SocketNotifier(path, onError) : quiet;
}
