/**
 * Every failure Flotilla reports has a stable `code`. A person reads the message; a script or a
 * sender in another language matches the code. Codes that travel on the wire (see
 * docs/protocol.md) are the `WireErrorCode` subset.
 */

/** Codes a portal may put in an ERROR reply. Stable: senders in other languages match them. */
export const WIRE_ERROR_CODES = [
  'UNKNOWN_STREAM',
  'MALFORMED',
  'TOO_LARGE',
  'WRONG_OWNER',
  /** WRONG_OWNER at the sender's own epoch: its hash or map differs from the portal's. */
  'MISROUTED',
  'WINDOW_EXCEEDED',
  'UNSUPPORTED_VERSION',
  'PAUSED',
  'RESEND',
  'SPOOL_FULL',
] as const;
export type WireErrorCode = (typeof WIRE_ERROR_CODES)[number];

/** Every code a Flotilla error may carry, the wire's included. Stable: scripts match them. */
export const ERROR_CODES = [
  ...WIRE_ERROR_CODES,
  'MAP_INVALID',
  'MAP_UNREADABLE',
  'CONFIG_INVALID',
  'IPC_PATH_TOO_LONG',
  'PORTAL_ALREADY_RUNNING',
  'SENDER_CLOSED',
  'RECORD_INVALID',
  'UNKNOWN_SERVER',
  'PORTAL_UNREACHABLE',
  'EPOCH_BUSY',
  'EPOCH_MISMATCH',
  'AGENT_UNREACHABLE',
  'AGENT_ALREADY_RUNNING',
  /** A control request that is not JSON, names no known command, or lacks a field. */
  'BAD_REQUEST',
  /** A control request failed for a reason that is a bug, not the caller's doing (logged). */
  'INTERNAL',
  'NOT_IDLE',
  /** Two servers (or a request and a portal) state one epoch but different map content (digest). */
  'MAP_DISAGREES',
  /** A release that does not name exactly the buckets held for its old owner. */
  'RELEASE_MISMATCH',
  /** A map edit the running system cannot take (records would be stranded, or a restart is needed). */
  'EDIT_REFUSED',
  /** A run or spool directory that is not a directory, or belongs to another user. */
  'DIR_UNSAFE',
  /** A socket could not listen on its address (in use, not this host's, not permitted). */
  'BIND_FAILED',
  // ---- cancellation (docs/protocol.md, "Cancellation") ----
  /** A cancellation some agents of the map did not take (the message names them); send it again. */
  'CANCEL_INCOMPLETE',
  // ---- the management bus (portalctl configure; docs/components.md, "Configuration") ----
  /** A configuration version that is not above the stream's current one (two configures raced). */
  'CONFIG_STALE',
  /** A component rejected a configuration (its reason is in the message). */
  'CONFIG_REJECTED',
  /** A live component did not answer a configuration in time. */
  'CONFIG_NOT_TAKEN',
  // --- maps in etcd (map store, `portalctl map apply`)
  /** A map apply lost its compare-and-swap: someone wrote the map in force since it was read. */
  'MAP_STALE',
  /** The map's store (etcd) cannot be reached. */
  'STORE_UNREACHABLE',
  // CURVE keys and authorization (docs/security.md)
  /** A key file that is missing, unreadable, open to others (not 0600) or not a CURVE key. */
  'KEY_INVALID',
  /** A secret key whose public key is not the one the map gives this server. */
  'KEY_MISMATCH',
  /** The map has keys but this process was given none (--key, FLOTILLA_KEY). */
  'KEY_REQUIRED',
  /** Plain TCP on an address that is not loopback, or keys missing from the map. */
  'PLAIN_TCP_REFUSED',
  /** A control request over TCP from a key that may not make it (only operators and servers change things). */
  'NOT_AUTHORIZED',
  // ---- memory limits (issue 11 item 3; docs/security.md, "Limits") ----
  /** A portal's memory passed `max_rss_bytes` and still grew: it dropped every sender connection. */
  'MEMORY_LIMIT',
  /** Replies to a sender connection that does not read them passed `max_unread_replies`: dropped. */
  'REPLIES_DROPPED',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** True if `code` is one of Flotilla's error codes. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && (ERROR_CODES as readonly string[]).includes(code);
}

/** Base class: every Flotilla error has a `code` and a message meant for a person. */
export class FlotillaError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'FlotillaError';
    this.code = code;
  }

  /**
   * An error that arrived as `{"error", "code"}` on a control socket, parsed back into a typed
   * error. A code this version does not know (a newer peer's) is kept in the message, as INTERNAL.
   */
  static fromReply(code: unknown, message: string): FlotillaError {
    if (isErrorCode(code)) return new FlotillaError(code, message);
    return new FlotillaError('INTERNAL', `${String(code)}: ${message}`);
  }
}

/** One problem found in a map file, at a JSON-pointer-like path (`streams[0].port`). */
export interface MapProblem {
  path: string;
  /** For a person; ends with "(line N)" when the problem has a line. */
  message: string;
  /** The line of the file the problem is on (1-based), when it has one. */
  line?: number;
}

/** The map file failed validation; `problems` lists every problem found, not just the first. */
export class MapInvalidError extends FlotillaError {
  readonly problems: MapProblem[];
  readonly file: string;
  constructor(file: string, problems: MapProblem[]) {
    super(
      'MAP_INVALID',
      `${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n` +
        problems.map((p) => `  ${p.path}: ${p.message}`).join('\n'),
    );
    this.name = 'MapInvalidError';
    this.file = file;
    this.problems = problems;
  }
}

/**
 * An error reply from a portal, parsed back from the wire. `epoch` is the portal's map epoch;
 * for WRONG_OWNER it tells the sender which map to load before it routes the batch again.
 */
export class WireError extends FlotillaError {
  declare readonly code: WireErrorCode;
  readonly epoch: number;
  constructor(code: WireErrorCode, message: string, epoch = 0) {
    super(code, message);
    this.name = 'WireError';
    this.epoch = epoch;
  }

  /** Parses the code frame of an ERROR reply; an unknown code is kept as MALFORMED. */
  static parse(code: string, message: string, epoch: number): WireError {
    const known = (WIRE_ERROR_CODES as readonly string[]).includes(code);
    return new WireError(known ? (code as WireErrorCode) : 'MALFORMED', known ? message : `${code}: ${message}`, epoch);
  }
}
