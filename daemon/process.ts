/**
 * What every Flotilla daemon and the CLI do as processes, kept out of the core library: which
 * server this host is, how a fatal start-up error is shown (message and code on stderr,
 * non-zero exit), readiness for systemd (sd_notify), and a daemon's life from start to exit.
 */
import { hostname } from 'node:os';
import { execFile } from 'node:child_process';
import { FlotillaError } from '../src/errors';
import type { Logger } from '../src/log';
import type { FlotillaMap } from '../src/map/types';

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
  if (err instanceof FlotillaError) process.stderr.write(`error: ${err.message} [${err.code}]\n`);
  else process.stderr.write(`error: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(exitCode);
}

/** Tells systemd the service is ready (Type=notify), when run under it. */
export function notifyReady(): void {
  if (!process.env.NOTIFY_SOCKET) return;
  execFile('systemd-notify', ['--ready', `--pid=${process.pid}`], () => undefined);
}

/** What runDaemon runs: a long-lived object with a start and a stop. */
export interface Daemon {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Runs a daemon's life: `start()` (a failure goes to the caller, which shows it with `die`),
 * tells systemd it is ready, and on SIGTERM or SIGINT calls `stop()`: the process exits 0 when
 * the stop succeeded, and 1, after logging why, when it failed.
 */
export async function runDaemon(name: string, log: Logger, daemon: Daemon): Promise<void> {
  await daemon.start();
  notifyReady();
  const stop = (signal: string) => {
    log.info(`${name}: ${signal}, stopping`);
    daemon.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, `${name}: stop failed: ${err instanceof Error ? err.message : String(err)}`);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}
