/**
 * Logging: pino, one JSON line per event on stderr. Level from FLOTILLA_LOG_LEVEL (default info).
 * Hot paths never log per record: they count, and `CauseCounter` writes one line per cause per
 * interval.
 *
 * Where the lines go decides their form (FLOTILLA_LOG_FORMAT=json|pretty overrides it):
 * - to journald (systemd sets JOURNAL_STREAM to stderr's device:inode): JSON, each line led by
 *   its syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), which journald
 *   takes as the entry's PRIORITY, so `journalctl -p warning` shows warnings and worse;
 * - to a terminal: pino-pretty, one readable line per event (time, level, message, fields);
 * - anywhere else (a file, a pipe): plain JSON lines.
 * A key appears once per line: a field that repeats one of the logger's own (`pid`, `stream`,
 * ...) is dropped when equal and kept as `log_<key>` when not. An error logged as `err` keeps
 * its `code`.
 */
import { fstatSync } from 'node:fs';
import pino from 'pino';
import type PinoPretty from 'pino-pretty';

export type Logger = pino.Logger;

/** How log lines are written: see the file comment. */
export type LogFormat = 'json' | 'journal' | 'pretty';

/** pino's levels as syslog priorities, the numbers journald keeps in PRIORITY. */
export const SYSLOG_PRIORITY: Record<pino.Level, number> = { fatal: 2, error: 3, warn: 4, info: 6, debug: 7, trace: 7 };

/** True when fd 2 is the stream systemd connected to journald ($JOURNAL_STREAM is "dev:inode"). */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(2, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** The format for this process: FLOTILLA_LOG_FORMAT, else journal, pretty or json as fd 2 is. */
export function logFormat(env: NodeJS.ProcessEnv = process.env): LogFormat {
  const given = env.FLOTILLA_LOG_FORMAT;
  if (given === 'json' || given === 'pretty') return given;
  if (stderrIsJournal(env)) return 'journal';
  return process.stderr.isTTY ? 'pretty' : 'json';
}

/** One stream per level, each writing its lines to fd 2 behind the level's syslog prefix. */
function journalStream(): pino.MultiStreamRes {
  const out = pino.destination({ fd: 2, sync: true });
  const levels = Object.keys(SYSLOG_PRIORITY) as pino.Level[];
  return pino.multistream(
    levels.map((level) => {
      const prefix = `<${SYSLOG_PRIORITY[level]}>`;
      return { level, stream: { write: (line: string) => out.write(prefix + line) } };
    }),
    { dedupe: true },
  );
}

function destination(format: LogFormat): pino.DestinationStream {
  if (format === 'journal') return journalStream();
  if (format === 'pretty') {
    // Loaded only for a terminal: daemons under systemd never need it.
    const pretty = require('pino-pretty') as typeof PinoPretty;
    return pretty({ destination: 2, sync: true, colorize: process.stderr.isTTY, translateTime: 'SYS:HH:MM:ss.l', ignore: 'hostname' });
  }
  return pino.destination({ fd: 2, sync: true });
}

/** A logger for one process, named for it (`portal`, `component`, `sender`). */
export function createLogger(name: string, bindings: Record<string, unknown> = {}, format: LogFormat = logFormat()): Logger {
  const base: Record<string, unknown> = { pid: process.pid, ...bindings };
  const own = new Set(['name', 'level', 'time', 'msg', ...Object.keys(base)]);
  return pino(
    {
      name,
      level: process.env.FLOTILLA_LOG_LEVEL ?? 'info',
      base,
      formatters: {
        // pino writes the logger's bindings and the call's fields side by side, so a field of the
        // same name would appear twice in one JSON object (and journald tools keep one of them).
        log(fields) {
          let out: Record<string, unknown> | null = null;
          for (const key of Object.keys(fields)) {
            if (!own.has(key)) continue;
            out ??= { ...fields };
            delete out[key];
            if (base[key] !== fields[key]) out[`log_${key}`] = fields[key];
          }
          return out ?? fields;
        },
      },
    },
    destination(format),
  );
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
