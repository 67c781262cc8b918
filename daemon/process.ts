/**
 * What every Flotilla daemon and the CLI do as processes, kept out of the core library: which
 * server this host is, how a fatal start-up error is shown (message and code on stderr,
 * non-zero exit), readiness for systemd (sd_notify), and a daemon's life from start to exit.
 */
import { hostname } from 'node:os';
import { FlotillaError } from '../src/errors';
import { stderrIsJournal, type Logger } from '../src/log';
import type { FlotillaMap } from '../src/map/types';
import { systemdNotifier, type Notifier } from './notify';

/** This host's server name: --server, else $FLOTILLA_SERVER, else the map server named like the host. */
export function whichServer(map: FlotillaMap, given: string | undefined): string {
  const name = given ?? process.env.FLOTILLA_SERVER;
  if (name) return name;
  const host = hostname().split('.')[0]!;
  if (map.servers.some((s) => s.name === host)) return host;
  throw new FlotillaError(
    'UNKNOWN_SERVER',
    `cannot tell which server of ${map.file} this is: pass --server or set FLOTILLA_SERVER (servers: ${map.servers.map((s) => s.name).join(', ')})`,
  );
}

/** Prints an error for a person (and its code for a script) and exits. */
export function die(err: unknown, exitCode = 1): never {
  // In the journal, at priority "err" (the line's <3>), so journalctl -p err shows it.
  const lead = stderrIsJournal() ? '<3>' : '';
  if (err instanceof FlotillaError) process.stderr.write(`${lead}error: ${err.message} [${err.code}]\n`);
  else process.stderr.write(`${lead}error: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(exitCode);
}

/**
 * Under systemd each unit has a /tmp of its own (PrivateTmp=yes), so sockets in a run directory
 * under /tmp are seen by no other unit: the agent would report every portal missing. Says so in
 * the log, with the way out, instead of leaving it to be found.
 */
export function warnPrivateTmp(log: Logger, runDir: string, env: NodeJS.ProcessEnv = process.env): void {
  if (!env.INVOCATION_ID || !/^\/(var\/)?tmp(\/|$)/.test(runDir)) return;
  log.warn({ runDir }, `run directory ${runDir} is under /tmp, which is private to each systemd unit: the other units of the instance will not see its sockets; leave run_dir out of the map (default /run/flotilla/<instance>)`);
}

/** The environment every daemon reads, as its --help lists it. */
export const DAEMON_ENVIRONMENT_HELP = `Environment:
  FLOTILLA_MAP          the map file (or etcd://HOST:PORT[,...]/PREFIX), when --map is not given
  FLOTILLA_SERVER       this server's name in the map, when --server is not given
  FLOTILLA_KEY          this server's secret key file, when --key is not given (a map with
                        keys; default /etc/flotilla/keys/<server>.key)
  FLOTILLA_LOG_LEVEL    trace, debug, info (default), warn, error
  FLOTILLA_LOG_FORMAT   json or pretty (default: pretty on a terminal, json otherwise; under
                        systemd, JSON lines with their syslog priority for journald)`;

/** How often a daemon under systemd refreshes its STATUS= line. */
export const STATUS_INTERVAL_MS = 5000;

/** What runDaemon runs: a long-lived object with a start and a stop. */
export interface Daemon {
  start(): Promise<void>;
  stop(): Promise<void>;
  /**
   * What SIGHUP (and so `systemctl reload`) does: read the configuration again, and say what came
   * of it. A daemon without one logs the signal and goes on as it was.
   */
  reload?(): string | Promise<string>;
  /** One line for `systemctl status`: state, epoch, rates. */
  status?(): string;
}

/**
 * Runs a daemon's life: `start()` (a failure goes to the caller, which shows it with `die`),
 * tells systemd it is ready (READY=1, then STATUS= every few seconds, WATCHDOG=1 when the unit
 * has WatchdogSec=), reloads on SIGHUP, and on SIGTERM or SIGINT tells systemd it is stopping and
 * calls `stop()`: the process exits 0 when the stop succeeded, and 1, after logging why, when it
 * failed.
 */
export async function runDaemon(name: string, log: Logger, daemon: Daemon): Promise<void> {
  // The handlers are in place before start: a signal's default action would end the process
  // at once. SIGHUP while starting is ignored; SIGTERM or SIGINT stops it once started.
  let reload = () => log.warn(`${name}: SIGHUP while starting, ignored`);
  let stopAsked: string | null = null;
  let stop = (signal: string) => {
    stopAsked ??= signal;
  };
  process.on('SIGHUP', () => reload());
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  await daemon.start();
  const notifier: Notifier = systemdNotifier((err) => log.warn({ err }, `${name}: cannot notify systemd: ${err.message}`));
  // A status line is news for systemctl status, never a reason to crash.
  const statusLine = (): string | undefined => {
    try {
      return daemon.status?.();
    } catch (err) {
      return `status unavailable: ${err instanceof Error ? err.message : String(err)}`;
    }
  };
  notifier.ready(statusLine());
  let statusTimer: NodeJS.Timeout | null = null;
  if (daemon.status && process.env.NOTIFY_SOCKET) {
    statusTimer = setInterval(() => notifier.status(statusLine()!), STATUS_INTERVAL_MS);
    statusTimer.unref();
  }
  let reloading = false;
  reload = () => {
    if (!daemon.reload) {
      log.info(`${name}: SIGHUP ignored (nothing to reload here)`);
      return;
    }
    if (reloading) return;
    reloading = true;
    notifier.reloading();
    Promise.resolve()
      .then(() => daemon.reload!())
      .then(
        (outcome) => log.info(`${name}: SIGHUP, reload: ${outcome}`),
        (err: unknown) => log.error({ err }, `${name}: SIGHUP, reload failed: ${err instanceof Error ? err.message : String(err)}`),
      )
      .finally(() => {
        reloading = false;
        notifier.ready(statusLine());
      });
  };
  stop = (signal: string) => {
    log.info(`${name}: ${signal}, stopping`);
    notifier.stopping();
    if (statusTimer) clearInterval(statusTimer);
    const exit = (code: number) => {
      notifier.close();
      process.exit(code);
    };
    daemon.stop().then(
      () => exit(0),
      (err: unknown) => {
        log.error({ err }, `${name}: stop failed: ${err instanceof Error ? err.message : String(err)}`);
        exit(1);
      },
    );
  };
  if (stopAsked) stop(stopAsked);
}
