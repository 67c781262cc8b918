/**
 * How `portalctl status` shows the management bus: per stream with a configuration, the version
 * the agent keeps and what the slots run (from the portal's last beacon), the slots that run
 * another version named, with the reason of a rejection.
 *
 *   configuration orders: version 3; slots 0 1 3 run it; slot 2 runs v2 (rejected v3: cache must be a boolean)
 */
import type { AgentStatus } from '../src/protocol/control';

/** One line per configured stream of `st`, indented for the status block. */
export function configLines(st: AgentStatus): string[] {
  const out: string[] = [];
  for (const c of st.configs ?? []) {
    const s = st.streams.find((x) => x.stream === c.stream);
    const slots = s?.beacon && s.state !== 'dead' ? s.beacon.slots : [];
    const current = slots.filter((x) => x.config && x.config.wanted !== 0 && x.config.running === x.config.wanted).map((x) => x.slot);
    const parts = [`version ${c.version}`];
    if (current.length > 0) parts.push(`slot${current.length === 1 ? '' : 's'} ${current.join(' ')} run${current.length === 1 ? 's' : ''} their version`);
    for (const x of slots) {
      const cfg = x.config;
      if (!cfg || cfg.wanted === 0 || cfg.running === cfg.wanted) continue;
      const runs = x.state === 'missing' || x.state === 'dead' ? `${x.state}, gets v${cfg.wanted} when it registers` : `runs ${cfg.running === null || cfg.running === 0 ? 'none' : `v${cfg.running}`}`;
      const why = cfg.rejected ? ` (rejected v${cfg.rejected.version}: ${cfg.rejected.reason})` : x.state === 'missing' || x.state === 'dead' ? '' : `, waiting for v${cfg.wanted}`;
      parts.push(`slot ${x.slot} ${runs}${why}`);
    }
    if (!s?.beacon || s.state === 'dead' || s.state === 'missing') parts.push('the portal is not running: it is given the version when it starts');
    out.push(`  configuration ${c.stream}: ${parts.join('; ')}`);
  }
  return out;
}
