/**
 * Logging: pino, JSON lines on stderr (journald keeps them under systemd). Level from
 * FLOTILLA_LOG_LEVEL (default info). Hot paths never log per record: they count, and
 * `CauseCounter` writes one line per cause per interval.
 */
import pino from 'pino';

export type Logger = pino.Logger;

/** A logger for one process, named for it (`portal`, `component`, `sender`). */
export function createLogger(name: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ name, level: process.env.FLOTILLA_LOG_LEVEL ?? 'info', base: { pid: process.pid, ...bindings } }, pino.destination(2));
}

/**
 * Counts failures by cause and logs each cause at most once per interval, with the number seen
 * since the last line and one example, so a flood of bad frames is a few log lines, not millions.
 */
export class CauseCounter {
  /** Totals since start, by cause. */
  readonly totals: Record<string, number> = {};
  private pending = new Map<string, { count: number; example: string }>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly log: Logger,
    private readonly what: string,
    private readonly intervalMs = 5000,
  ) {}

  /** Counts one occurrence of `cause`; the first of an interval is logged at once. */
  count(cause: string, example: string): void {
    this.totals[cause] = (this.totals[cause] ?? 0) + 1;
    const p = this.pending.get(cause);
    if (p) {
      p.count++;
      return;
    }
    this.log.warn({ cause, example }, `${this.what}: ${cause}: ${example}`);
    this.pending.set(cause, { count: 0, example });
    if (!this.timer) {
      this.timer = setInterval(() => this.flush(), this.intervalMs);
      this.timer.unref();
    }
  }

  private flush(): void {
    for (const [cause, p] of this.pending) {
      if (p.count > 0) this.log.warn({ cause, count: p.count, example: p.example }, `${this.what}: ${cause} x${p.count} more in the last ${this.intervalMs / 1000}s`);
    }
    this.pending.clear();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  stop(): void {
    this.flush();
  }
}
