/**
 * How `portalctl` shows a switch that waits and the holds of a server: whom each waits for,
 * why, since when, and for a stuck hold the command that ends it.
 *
 *   switching to epoch 3 (map 1f2e3d4c5b6a) from 2:
 *     waiting for beta for 12 s: has epoch 2 (map 9a8b7c6d5e4f), not yet 3
 *     CONFLICT: gamma has map 0a1b2c3d4e5f at epoch 3, here 1f2e3d4c5b6a: fix the files; nothing moves
 *   hold: orders, 12 buckets (340 records) from alpha, 5 s: alpha: its orders portal is still draining
 *   STUCK hold: ... ; to end it: portalctl release orders --from alpha --server beta
 */
import { shortDigest } from '../src/map/digest';
import type { EpochSwitchStatus, HandoverStatus } from '../src/protocol/control';

const secs = (ms: number) => `${Math.round(ms / 1000)} s`;

/** Lines (indented by `indent`) for a switch not done and every hold; none when all is settled. */
export function handoverLines(st: { epochSwitch?: EpochSwitchStatus | null; handovers?: HandoverStatus[] }, indent = '  '): string[] {
  const lines: string[] = [];
  const sw = st.epochSwitch;
  if (sw && !sw.done) {
    lines.push(`${indent}switching to epoch ${sw.epoch} (map ${shortDigest(sw.digest)}) from ${sw.from}:`);
    for (const w of sw.waitingFor) lines.push(`${indent}  waiting for ${w.server} for ${secs(w.waitingMs)}: ${w.reason}`);
    for (const c of sw.conflicts) {
      lines.push(`${indent}  CONFLICT: ${c.server} has map ${shortDigest(c.digest)} at epoch ${sw.epoch}, here ${shortDigest(sw.digest)}: give every server the same file; no bucket moves until then`);
    }
    for (const s of sw.streams) if (s.error) lines.push(`${indent}  ${s.stream} (at epoch ${s.epoch ?? '?'}): ${s.error}`);
  }
  for (const h of st.handovers ?? []) {
    const what = `${h.stream}, ${h.buckets.length} buckets (${h.records} records) from ${h.from}, ${secs(h.waitingMs)}: ${h.reason}`;
    lines.push(h.stuck ? `${indent}STUCK hold: ${what}; to end it: ${h.command}` : `${indent}hold: ${what}`);
  }
  return lines;
}
