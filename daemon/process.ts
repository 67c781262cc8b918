/**
 * Small pieces the daemons and the CLI share: which server this is, and how a fatal
 * start-up error is shown (message and code on stderr, non-zero exit).
 */
import { hostname } from 'node:os';
import { execFile } from 'node:child_process';
import { FlotillaError } from '../src/errors';
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
