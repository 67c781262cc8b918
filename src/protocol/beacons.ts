/**
 * Heartbeats (beacons): every process says, every `heartbeat_ms` of the map, what state it is in.
 *
 *   component --HEARTBEAT (ipc, to its portal)--> portal --PortalBeacon (ipc PUSH)--> agent
 *
 * Idle means: nothing received since the last beacon, nothing in flight (unacknowledged), queues
 * empty. A process that misses `DEAD_AFTER_BEATS` beacons in a row is dead: its records are held
 * for it (never handed to another slot) until it registers again.
 */

/** Beacons missed in a row before a process is reported dead. */
export const DEAD_AFTER_BEATS = 3;

/** What a component reports to its portal every interval (JSON in a HEARTBEAT message). */
export interface ComponentBeacon {
  slot: number;
  pid: number;
  /** Records received since the previous beacon. */
  received: number;
  /** Records received and not yet acknowledged (DONE not sent). */
  inflight: number;
  /** Map epoch the component runs under. */
  epoch: number;
  /** The configuration version the component runs (the management bus); 0 before any. */
  configVersion?: number;
}

/** A slot as its portal sees it. */
export type SlotState = 'idle' | 'busy' | 'dead' | 'missing';

export interface SlotBeacon {
  slot: number;
  pid: number;
  state: SlotState;
  /** Records waiting in the portal for this slot, and sent to it without DONE. */
  queued: number;
  inflight: number;
  /** Records received by the component since its previous beacon (from its beacon). */
  received: number;
  /** Milliseconds since the portal last heard from the component; -1 if never. */
  silentMs: number;
  /** Records done by the component (cumulative since the portal started). */
  processed: number;
  /** Mean time from DELIVER to DONE, ms, smoothed. */
  serviceMs: number;
  /** Records sent to the slot's component, each once (a resend after a restart is not counted again; cumulative, never down). */
  routed: number;
  /**
   * Deliveries by time from DELIVER to DONE (cumulative): `serviceCounts[i]` counts those that
   * took at most `SERVICE_MS_BOUNDS[i]` ms and more than the bound before it; the last entry
   * counts those above the last bound.
   */
  serviceCounts: number[];
  /** Sum of those times, ms. */
  serviceMsSum: number;
  /** Milliseconds the slot has finished nothing while records are in flight to it; 0 when none are. */
  stuckMs: number;
  /** The slot's configuration (the management bus): absent from a portal without it. */
  config?: SlotConfigView;
}

/** A slot's configuration as its portal sees it (docs/components.md, "Configuration"). */
export interface SlotConfigView {
  /** The version the component runs, from its CONFIGURED or its beacon; null before it said. */
  running: number | null;
  /** The version it must run (0: the stream has no configuration for it). */
  wanted: number;
  /** The last version it rejected while registered, and why; null if none. */
  rejected: { version: number; reason: string } | null;
}

/** Upper bounds (ms) of the processing-time histogram each slot keeps (`serviceCounts`). */
export const SERVICE_MS_BOUNDS: readonly number[] = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/**
 * A slot as its portal shows it, in its beacons and its stats: the beacon's fields, and the
 * component's map epoch, whether a component is registered, how often one registered, and
 * whether the slot's records go through the spool.
 */
export interface SlotView extends SlotBeacon {
  /** The map epoch the component said it runs under in its last heartbeat; null before one. */
  epoch: number | null;
  connected: boolean;
  registrations: number;
  spooling: boolean;
  /** Bytes of the slot's backlog: records queued for it or in flight (bounded by max_slot_bytes). */
  bytes: number;
}

/**
 * A portal's memory limits (the stream's `memory` in the map) beside what they bound now, and
 * how often each was reached since the portal started (docs/security.md, "Limits").
 */
export interface LimitsView {
  /** Bytes of records held (queued or in flight), and `max_queued_bytes`. */
  queuedBytes: number;
  maxQueuedBytes: number;
  /** Times reading from senders stopped because the records held passed max_queued_bytes. */
  queuedBytesStops: number;
  maxSlotBytes: number;
  /** Times a slot's backlog passed max_slot_bytes (it spooled, or reading stopped). */
  slotBytesStops: number;
  maxUnreadReplies: number;
  /** Replies dropped because their sender connection had max_unread_replies unread (REPLIES_DROPPED). */
  repliesDropped: number;
  /** The portal's resident memory now, and `max_rss_bytes`. */
  rssBytes: number;
  maxRssBytes: number;
  /** Times every sender connection was dropped because memory passed max_rss_bytes (MEMORY_LIMIT). */
  memoryResets: number;
}

/** Buckets a portal holds for their old owner in a handover, until it has drained them. */
export interface HoldView {
  from: string;
  /** The epoch whose switch made the hold. */
  epoch: number;
  buckets: number[];
  /** Records accepted for those buckets and waiting (in memory) for the release. */
  records: number;
  /** How long the hold has waited, ms. */
  waitingMs: number;
}

/** A portal's spool, as its beacon reports it. */
export interface SpoolBeacon {
  mode: string;
  /** ok, or why the spool takes no records: full (max_bytes), low_disk (under min_free_bytes), write_failed. */
  state: string;
  whenFull: string;
  /** A batch waits for room (when_full: block). */
  blocked: boolean;
  records: number;
  bytes: number;
  maxBytes: number;
  freeBytes: number;
  minFreeBytes: number;
  tornTails: number;
}

/** What a portal reports to its agent every interval (JSON, one frame, on the agent's PULL). */
export interface PortalBeacon {
  type: 'portal';
  server: string;
  stream: string;
  pid: number;
  port: number;
  epoch: number;
  /** Content digest of the map the portal runs (map/digest.ts). */
  digest: string;
  /** Buckets held for their old owners (a handover waiting), per old owner. */
  holds: HoldView[];
  /** True while the stream is paused (persisted across portal restarts). */
  paused: boolean;
  /** Records received from senders since the previous beacon. */
  received: number;
  /** Records accepted from senders, and records done by components, since the portal started. */
  recordsIn: number;
  recordsOut: number;
  /** Records sent to components and not yet DONE. */
  inflight: number;
  /** Records waiting in the portal for a slot. */
  queued: number;
  /** The portal and every slot are idle (see above); a missing or dead slot with no records is idle. */
  idle: boolean;
  rates: { inPerSec: number; outPerSec: number };
  errors: Record<string, number>;
  /** Batches refused as flow control, by code (PAUSED, RESEND): not errors, so not in `errors`. */
  flowRefusals: Record<string, number>;
  /** Records dropped by cancellations, and roots in force (absent from portals before cancellation). */
  cancelled?: CancelCounts;
  slots: SlotBeacon[];
  /** The stream's disk spool on this server; absent when its mode is off. */
  spool?: SpoolBeacon;
  /** The memory limits and what they bound (absent from a portal older than them). */
  limits?: LimitsView;
  /** When the beacon was made (ms since the Unix epoch). */
  at: number;
  /** The newest configuration version its agent gave the portal (the management bus); 0 none. */
  configVersion?: number;
}

/** What a portal counts of cancellation since it started, and the roots in force. */
export interface CancelCounts {
  /** Records of cancelled roots the portal dropped (queued, held, read back from the spool, arriving). */
  dropped: number;
  /** Records its components skipped as cancelled (delivered before the CANCEL reached them, not begun). */
  skipped: number;
  inForce: number;
}
