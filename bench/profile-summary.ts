/**
 * Summarises a V8 .cpuprofile (from node --cpu-prof): the functions with the most self time.
 *
 *   usage: node dist/bench/profile-summary.js FILE.cpuprofile [TOP]
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

export interface HotFunction {
  /** `name (file:line)`; V8's own entries are `(garbage collector)`, `(idle)`, `(program)`. */
  where: string;
  /** Share of all samples, %. */
  selfPercent: number;
}

/** The `top` functions of a profile by self time, and the share of samples that were idle. */
export function summariseProfile(file: string, top = 15): { hot: HotFunction[]; idlePercent: number; samples: number } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[] };
  const self = new Map<string, number>();
  let total = 0;
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0;
    if (hits === 0) continue;
    const f = n.callFrame;
    const where = f.url ? `${f.functionName || '(anonymous)'} (${basename(f.url)}:${f.lineNumber + 1})` : f.functionName;
    self.set(where, (self.get(where) ?? 0) + hits);
    total += hits;
  }
  const pct = (h: number) => Math.round((h / Math.max(1, total)) * 1000) / 10;
  const hot = [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([where, hits]) => ({ where, selfPercent: pct(hits) }));
  return { hot, idlePercent: pct(self.get('(idle)') ?? 0), samples: total };
}

if (require.main === module) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('usage: profile-summary.js FILE.cpuprofile [TOP]\n');
    process.exit(2);
  }
  const s = summariseProfile(file, Number(top ?? 25));
  process.stdout.write(`${s.samples} samples, ${s.idlePercent}% idle\n`);
  for (const h of s.hot) process.stdout.write(`${String(h.selfPercent).padStart(6)}%  ${h.where}\n`);
}
