/**
 * A stopping portal's drain (docs/operations.md, "Stopping a portal"): the wait between "take
 * nothing new" and closing the sockets, until everything the portal accepted is processed and
 * acknowledged and its senders have been quiet for a moment (so every batch sent to it has had
 * an answer), or until waiting cannot help.
 */
import type { Egress } from './egress';
import type { Ingress } from './ingress';

/** A stopping portal closes only once no sender message has come for this long. */
export const STOP_QUIET_MS = 100;
/** How long the last replies (ACKs) may take to leave when the ingress socket closes. */
export const STOP_LINGER_MS = 2000;
/** How often the drain looks. */
const POLL_MS = 20;

/**
 * Waits until nothing accepted is unacknowledged, no record is queued or in flight, no reply
 * waits to be sent, nothing is staged for the spool (`staged`), and no sender has sent anything
 * for STOP_QUIET_MS: resolves null. Or resolves why it gave up: `deadline` (performance.now())
 * passed, or every slot that holds records has no live component (stopped with the portal, or
 * dead), so waiting on cannot help.
 */
export async function drain(
  ingress: Pick<Ingress, 'unacked' | 'unsent' | 'lastReadAt'>,
  egress: Pick<Egress, 'queued' | 'slots' | 'live'>,
  staged: () => boolean,
  deadline: number,
): Promise<string | null> {
  for (;;) {
    const now = performance.now();
    const done = ingress.unacked === 0 && egress.queued === 0 && ingress.unsent === 0 && !staged();
    if (done && now - ingress.lastReadAt >= STOP_QUIET_MS) return null;
    if (now >= deadline) return 'stop_drain_ms';
    const holding = egress.slots.filter((s) => s.queuedRecords + s.inflightRecords > 0);
    if (holding.length > 0 && holding.every((s) => !egress.live(s))) return `no live component on slot ${holding.map((s) => s.index).join(', ')}`;
    await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(1, deadline - now))));
  }
}
