/**
 * What a map is once loaded: a validated, resolved `FlotillaMap` with every default filled in
 * (docs/map.md). Built by load.ts; read everywhere, never changed: a new map file is a new object.
 */
import type avro from 'avsc';

export const DEFAULT_HEARTBEAT_MS = 1000;
/** How long a stopping portal drains before it exits anyway (below systemd's TimeoutStopSec). */
export const DEFAULT_STOP_DRAIN_MS = 20_000;
export const DEFAULT_BUCKETS = 1024;
export const DEFAULT_SLOTS = 4;
export const DEFAULT_WINDOW = 16;
export const DEFAULT_MAX_BATCH_BYTES = 1 << 20;
export const DEFAULT_WEIGHT = 1;
export const DEFAULT_SPOOL_MAX_BYTES = 1 << 30;
export const DEFAULT_SPOOL_MIN_FREE_BYTES = 64 << 20;
export const DEFAULT_FSYNC_INTERVAL_MS = 1000;
// ---- memory limits of a portal (issue 11: bounded under abuse; docs/security.md, "Limits") ----
/** Bytes of records a portal holds (queued for its slots or in flight) before it stops reading. */
export const DEFAULT_MAX_QUEUED_BYTES = 256 << 20;
/** Bytes one slot's backlog may hold: past it the slot is full (spooled, or reading stops). */
export const DEFAULT_MAX_SLOT_BYTES = 64 << 20;
/** Replies (ACK, ERROR) ZeroMQ may queue for one sender connection that does not read them. */
export const DEFAULT_MAX_UNREAD_REPLIES = 1024;
/** A portal's resident memory: past it, while it still grows, every sender connection is dropped. */
export const DEFAULT_MAX_RSS_BYTES = 1 << 30;
/** Where an agent's HTTP server (metrics, status page, /healthz) binds unless the map says. */
export const DEFAULT_HTTP_HOST = '127.0.0.1';

export type SpoolMode = 'off' | 'spill' | 'always';
export type SpoolFullPolicy = 'block' | 'reject';
export type FsyncPolicy = 'always' | 'interval' | 'never';

/** A stream's disk buffering, with its defaults filled in (see docs/delivery.md). */
export interface SpoolSettings {
  mode: SpoolMode;
  /** Base directory; a portal spools under `<dir>/<server>/<stream>`. */
  dir: string;
  maxBytes: number;
  whenFull: SpoolFullPolicy;
  fsync: FsyncPolicy;
  fsyncIntervalMs: number;
  /** Below this much free space on the spool's filesystem the spool takes no more records. */
  minFreeBytes: number;
}

/** A stream's memory limits in its portals, with defaults filled in (docs/security.md, "Limits"). */
export interface MemoryLimits {
  /** `max_queued_bytes`: bytes of records held in the portal before it stops reading from senders. */
  maxQueuedBytes: number;
  /** `max_slot_bytes`: bytes of one slot's backlog before the slot counts as full. */
  maxSlotBytes: number;
  /** `max_unread_replies`: replies queued for one sender connection that does not read them. */
  maxUnreadReplies: number;
  /** `max_rss_bytes`: the portal's resident memory, past which sender connections are dropped. */
  maxRssBytes: number;
}

/** A server of the map, with its defaults filled in. */
export interface MapServer {
  name: string;
  host: string;
  weight: number;
  agentPort: number | undefined;
  /** The agent's HTTP port (metrics, status page, /healthz); none when absent. */
  httpPort: number | undefined;
  /** The address the HTTP server binds (default loopback). */
  httpHost: string;
  /** Per-stream overrides of the stream's port and slot count, as written. */
  ports: Record<string, number>;
  slots: Record<string, number>;
  /** The server's CURVE public key (Z85); undefined in a map without keys (plain TCP). */
  publicKey: string | undefined;
}

/** A stream of the map, resolved: its Avro type is built and its buckets are placed. */
export interface MapStream {
  name: string;
  /** Name of the payload field whose value is the record's key. */
  keyField: string;
  port: number;
  buckets: number;
  slots: number;
  window: number;
  maxBatchBytes: number;
  /** The payload's Avro type, built once. */
  type: avro.Type;
  /** The schema as written (after loading a file reference). */
  schema: object;
  /** owner[bucket] is the index in `map.servers` of the server that owns the bucket. */
  owner: Uint16Array;
  spool: SpoolSettings;
  /** `memory`: the bounds of what the stream's portals hold in memory. */
  memory: MemoryLimits;
}

/** A validated, resolved map. Immutable once built: a new map file is a new object. */
export interface FlotillaMap {
  file: string;
  instance: string;
  epoch: number;
  /** The content digest (digest.ts): equal for two files that say the same, whatever their layout. */
  digest: string;
  /** The text the map was read from (kept so a portal can come back on the map it last ran). */
  text: string;
  /** Some stream's schema is a file the map names (read with the map: reading the map again reads them again). */
  schemaFiles: boolean;
  heartbeatMs: number;
  /** `stop_drain_ms`: how long a portal that is told to stop drains what it accepted. */
  stopDrainMs: number;
  runDir: string;
  servers: MapServer[];
  streams: MapStream[];
  /** Keys, who may do what, and the connection cap (src/map/security.ts, docs/security.md). */
  security: MapSecurity;
}

/** Most TCP connections a portal or agent keeps open unless the map's `security.max_connections` says. */
export const DEFAULT_MAX_CONNECTIONS = 2048;

/** A named client key of the map (`operators`, `senders`). */
export interface MapKey {
  name: string;
  publicKey: string;
}

/** The map's transport security, resolved. */
export interface MapSecurity {
  /** True when the servers have keys: every TCP socket runs CURVE. */
  curve: boolean;
  /** `security.plain_tcp` as written (false when absent). */
  plainTcp: boolean;
  maxConnections: number;
  operators: MapKey[];
  senders: MapKey[];
}
