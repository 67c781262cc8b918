/**
 * The portal's memory limits (the stream's `memory` in the map; docs/security.md, "Limits"):
 * the guard of its resident memory, and the view of every limit in its stats and beacons.
 *
 * Most of what a portal holds it counts itself: records queued or in flight (egress.ts, in
 * bytes and records), replies to a sender (ZeroMQ's send high-water mark, max_unread_replies).
 * One thing it cannot see: libzmq keeps the frames of a multipart message until its last frame
 * arrives, invisible to the application and with no limit of its own (ZMQ_MAXMSGSIZE bounds one
 * frame, not their number), so a connection that sends frames and never ends the message grows
 * the process without bound. The guard watches the resident memory instead: past max_rss_bytes,
 * while it still grows, it has ingress drop every sender connection (ingress.ts `reset`), which
 * makes libzmq free what they held; senders reconnect and send again what was not acknowledged.
 *
 *   every GUARD_MS: rss > ceiling ? reset, ceiling = rss + margin : ceiling follows rss down
 *
 * Memory freed by the C allocator often stays resident, so after a reset the ceiling stands just
 * above what is resident then: a message that fills the freed memory again is cut when resident
 * memory grows past it, and the portal is not reset again and again for memory no one holds.
 */
import type { MemoryLimits } from '../map/types';
import type { LimitsView } from '../protocol/beacons';

/** How often the guard reads the resident memory, ms. */
export const GUARD_MS = 100;
/** Growth past the ceiling that trips the guard again after a reset. */
export const GUARD_MARGIN_BYTES = 16 << 20;

/** Watches the process's resident memory and calls `trip` when it passes the limit and grows. */
export class MemoryGuard {
  /** Times it tripped. */
  resets = 0;
  /** Resident bytes at the last reading. */
  rss = 0;
  private ceiling: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly maxRssBytes: number,
    /** Called with why (for the log) when it trips: drop every sender connection. */
    private readonly trip: (why: string) => void,
    private readonly readRss: () => number = () => process.memoryUsage.rss(),
  ) {
    this.ceiling = maxRssBytes;
  }

  start(): void {
    this.check();
    this.timer = setInterval(() => this.check(), GUARD_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One reading: trips past the ceiling; otherwise the ceiling follows memory back down. */
  check(): void {
    const rss = (this.rss = this.readRss());
    if (rss > this.ceiling) {
      this.resets++;
      this.ceiling = rss + GUARD_MARGIN_BYTES;
      this.trip(`resident memory ${rss >> 20} MiB is past max_rss_bytes (${this.maxRssBytes >> 20} MiB) and growing: every sender connection is dropped (they reconnect)`);
    } else {
      this.ceiling = Math.max(this.maxRssBytes, Math.min(this.ceiling, rss + GUARD_MARGIN_BYTES));
    }
  }
}

/** The limits and what they bound, for stats and beacons. */
export function limitsView(
  m: MemoryLimits,
  ingress: { readonly repliesDropped: number; readonly queuedBytesStops: number },
  egress: { readonly queuedBytes: number; readonly slotBytesStops: number },
  guard: MemoryGuard,
): LimitsView {
  return {
    queuedBytes: egress.queuedBytes,
    maxQueuedBytes: m.maxQueuedBytes,
    queuedBytesStops: ingress.queuedBytesStops,
    maxSlotBytes: m.maxSlotBytes,
    slotBytesStops: egress.slotBytesStops,
    maxUnreadReplies: m.maxUnreadReplies,
    repliesDropped: ingress.repliesDropped,
    rssBytes: guard.rss,
    maxRssBytes: m.maxRssBytes,
    memoryResets: guard.resets,
  };
}
