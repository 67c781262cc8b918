/**
 * Names of the ipc sockets a server's processes share, all under the instance's run directory,
 * so two instances on one host never meet. Linux limits a socket path to 107 bytes; a longer
 * one is an error that names the path, not a silent truncation.
 */
import { join, resolve } from 'node:path';
import { FlotillaError } from '../errors';
import { ensureOwnDir, RUN_DIR_MODE } from '../dirs';

export const MAX_IPC_PATH = 107;

function ipc(path: string): string {
  if (Buffer.byteLength(path) > MAX_IPC_PATH) {
    throw new FlotillaError(
      'IPC_PATH_TOO_LONG',
      `ipc socket path is ${Buffer.byteLength(path)} bytes, over Linux's ${MAX_IPC_PATH}: ${path}; choose a shorter run_dir`,
    );
  }
  return `ipc://${path}`;
}

/** Where a stream's portal and its components meet. */
export function slotsEndpoint(runDir: string, stream: string): string {
  return ipc(join(resolve(runDir), `${stream}.slots.ipc`));
}

/** The portal's control socket (stats, ping). */
export function controlEndpoint(runDir: string, stream: string): string {
  return ipc(join(resolve(runDir), `${stream}.ctl.ipc`));
}

/**
 * Creates the run directory, or puts it back to its mode (0770: the service's user and group
 * only); refuses one owned by another user (DIR_UNSAFE).
 */
export function ensureRunDir(runDir: string): void {
  ensureOwnDir(runDir, RUN_DIR_MODE, 'run directory');
}

/** Where portals send their beacons: the agent's PULL socket. */
export function agentBeaconEndpoint(runDir: string): string {
  return ipc(join(resolve(runDir), 'agent.beacons.ipc'));
}

/** The agent's control socket for `portalctl` on this server. */
export function agentControlEndpoint(runDir: string): string {
  return ipc(join(resolve(runDir), 'agent.ctl.ipc'));
}

/** The file whose presence says a stream's portal is paused; it outlives portal restarts. */
export function pauseFile(runDir: string, stream: string): string {
  return join(resolve(runDir), `${stream}.paused`);
}

/** A portal's handover file: the map it runs and the buckets it holds (portal/handover-file.ts). */
export function handoverFile(runDir: string, stream: string): string {
  return join(resolve(runDir), `${stream}.handover.json`);
}

/** The agent's configurations of the streams' components (agent/config-store.ts): they outlive restarts. */
export function configsFile(runDir: string): string {
  return join(resolve(runDir), 'configs.json');
}
