/**
 * How a server's memory limits look to a person in `portalctl status` (docs/security.md,
 * "Limits"): one line per portal that reached a limit since it started, with what it holds now.
 *
 *   orders: memory limits reached: max_slot_bytes 3 times; max_unread_replies: 420800 replies dropped (rss 131 MiB of max_rss_bytes 1 GiB, records held 32 MiB of 256 MiB)
 */
import { bytes } from '../src/agent/problems';
import type { AgentStatus } from '../src/protocol/control';

/** The lines for the portals of `st` that reached a memory limit; none when none did. */
export function limitsLines(st: AgentStatus): string[] {
  const lines: string[] = [];
  for (const s of st.streams) {
    const l = s.beacon?.limits;
    if (!l || s.state === 'dead') continue;
    const reached = [
      l.queuedBytesStops > 0 ? `max_queued_bytes ${times(l.queuedBytesStops)}` : '',
      l.slotBytesStops > 0 ? `max_slot_bytes ${times(l.slotBytesStops)}` : '',
      l.repliesDropped > 0 ? `max_unread_replies: ${l.repliesDropped} replies dropped` : '',
      l.memoryResets > 0 ? `max_rss_bytes ${times(l.memoryResets)} (every sender connection dropped)` : '',
    ].filter((x) => x !== '');
    if (reached.length === 0) continue;
    const now = `rss ${bytes(l.rssBytes)} of max_rss_bytes ${bytes(l.maxRssBytes)}, records held ${bytes(l.queuedBytes)} of ${bytes(l.maxQueuedBytes)}`;
    lines.push(`  ${s.stream}: memory limits reached: ${reached.join('; ')} (${now})`);
  }
  return lines;
}

const times = (n: number) => (n === 1 ? 'once' : `${n} times`);
