/** A portal's options, their defaults, and the one check of them (see src/options.ts). */
import type { Logger } from '../log';
import type { MapKeeper } from '../map/keeper';
import type { FlotillaMap } from '../map/types';
import { int, parseOptions, text } from '../options';

/** Deliveries a slot may have in flight (sent, no DONE yet). */
export const DEFAULT_SLOT_WINDOW = 4;
/** Records waiting in the portal before it stops reading from senders. */
export const DEFAULT_MAX_QUEUED_RECORDS = 200_000;

export interface PortalOptions {
  /** The map; a keeper (shared with the process) or a file is read again at each epoch switch. */
  map: FlotillaMap | MapKeeper;
  /** The map's file, read again when the agent switches the portal to a new epoch. */
  mapFile?: string;
  /** This server's name in the map. */
  server: string;
  stream: string;
  /** Overrides the map's run_dir (tests, the demo). */
  runDir?: string;
  /** Overrides the stream's spool dir from the map (tests, the bench). */
  spoolDir?: string;
  /** Address to bind the TCP port on; default the server's host from the map. */
  bindHost?: string;
  /** Overrides the port from the map; 0 lets the OS choose (read `port` after start). */
  port?: number;
  slotWindow?: number;
  maxQueuedRecords?: number;
  /**
   * How long `stop()` lets what was accepted finish before it exits anyway, ms; default the
   * map's `stop_drain_ms` (20 s). See docs/operations.md, "Stopping a portal".
   */
  stopDrainMs?: number;
  log: Logger;
}

/** The options with defaults merged in; throws CONFIG_INVALID naming a field that cannot work. */
export function parsePortalOptions(opts: PortalOptions) {
  return parseOptions(
    'Portal',
    opts,
    { slotWindow: DEFAULT_SLOT_WINDOW, maxQueuedRecords: DEFAULT_MAX_QUEUED_RECORDS },
    {
      server: text,
      stream: text,
      port: int({ min: 0, max: 65535 }),
      slotWindow: int({ min: 1, max: 1 << 16 }),
      maxQueuedRecords: int({ min: 1 }),
      stopDrainMs: int({ min: 0, max: 600_000 }),
    },
  );
}
