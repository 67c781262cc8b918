/**
 * `portalctl top`: a live view of rates, like `vector top`. Every interval it asks the agents
 * (this server's, `--server`'s or, with `--cluster`, every one of the map) for their status and
 * redraws: one line per server, one per stream on each server, then the busiest slots, as many
 * as fit the terminal. Slot rates are the change of each slot's processed count between frames.
 */
import type { AgentStatus } from '../src/protocol/control';
import { agentStatus, type AgentTarget, describeAgent } from '../src/agent/client';
import { problemsOf, stateText } from '../src/agent/problems';
import { slotStates, table as columns } from './status-view';

/** One frame's view of a slot, for its rate in the next. */
type Processed = Map<string, { processed: number; at: number }>;

/** Runs the view: `count` frames (default until interrupted), one every `intervalMs`. */
export async function runTop(targets: AgentTarget[], opts: { intervalMs: number; count?: number; out?: NodeJS.WriteStream }): Promise<void> {
  const out = opts.out ?? process.stdout;
  let last: Processed = new Map();
  for (let frame = 0; opts.count === undefined || frame < opts.count; frame++) {
    if (frame > 0) await new Promise((r) => setTimeout(r, opts.intervalMs));
    const results = await Promise.all(targets.map((t) => agentStatus(t).then((st) => ({ t, st }), (err: Error) => ({ t, err }))));
    const now = Date.now();
    const statuses = results.flatMap((r) => ('st' in r ? [r.st] : []));
    const errors = results.flatMap((r) => ('err' in r ? [`${describeAgent(r.t)}: ${r.err.message}`] : []));
    const { lines, processed } = renderTop(statuses, last, now, out.isTTY ? out.rows || 40 : Infinity, opts.intervalMs);
    last = processed;
    const text = [...lines, ...errors.map((e) => `error: ${e}`)].join('\n');
    if (out.isTTY) out.write(`\x1b[H\x1b[2J${text}\n`);
    else out.write(`${text}\n\n`);
  }
}

/** One frame as lines of text, and the slots' processed counts for the next frame's rates. */
export function renderTop(statuses: AgentStatus[], last: Processed, now: number, rows: number, intervalMs: number): { lines: string[]; processed: Processed } {
  const processed: Processed = new Map();
  const lines = [`flotilla top  ${new Date(now).toISOString().slice(11, 19)}  every ${intervalMs / 1000} s  (Ctrl-C quits)`, ''];
  const servers: string[][] = [['SERVER', 'EPOCH', 'IN/S', 'OUT/S', 'QUEUED', 'INFLIGHT', 'PROBLEMS']];
  const streams: string[][] = [['SERVER', 'STREAM', 'STATE', 'IN/S', 'OUT/S', 'QUEUED', 'INFLIGHT', 'SPOOL', 'SLOTS']];
  const slots: { rate: number; row: string[] }[] = [];
  for (const st of statuses) {
    let inS = 0;
    let outS = 0;
    let queued = 0;
    let inflight = 0;
    for (const s of st.streams) {
      const b = s.state === 'dead' ? null : s.beacon;
      if (!b) {
        streams.push([st.server, s.stream, s.state, '-', '-', '-', '-', '-', '-']);
        continue;
      }
      inS += b.rates.inPerSec;
      outS += b.rates.outPerSec;
      queued += b.queued;
      inflight += b.inflight;
      streams.push([st.server, s.stream, stateText(s), String(b.rates.inPerSec), String(b.rates.outPerSec), String(b.queued), String(b.inflight), b.spool ? String(b.spool.records) : '-', slotStates(b.slots)]);
      for (const x of b.slots) {
        const key = `${st.server}/${s.stream}/${x.slot}`;
        processed.set(key, { processed: x.processed, at: now });
        const prev = last.get(key);
        const rate = prev && x.processed >= prev.processed && now > prev.at ? Math.round(((x.processed - prev.processed) * 1000) / (now - prev.at)) : -1;
        slots.push({ rate, row: [st.server, s.stream, String(x.slot), x.state, rate < 0 ? '-' : String(rate), String(x.queued), String(x.inflight), x.serviceMs.toFixed(1)] });
      }
    }
    const problems = problemsOf(st).filter((p) => p.severity === 'error').length;
    servers.push([st.server, String(st.epoch), String(inS), String(outS), String(queued), String(inflight), problems === 0 ? '-' : String(problems)]);
  }
  lines.push(...columns(servers), '', ...columns(streams), '');
  // The busiest first; slots that hold records before idle ones.
  slots.sort((a, b) => b.rate - a.rate || Number(b.row[5]) + Number(b.row[6]) - Number(a.row[5]) - Number(a.row[6]));
  const room = Math.max(3, rows - lines.length - 2);
  const shown = slots.slice(0, room);
  lines.push(...columns([['SERVER', 'STREAM', 'SLOT', 'STATE', 'OUT/S', 'QUEUED', 'INFLIGHT', 'MS/DELIVERY'], ...shown.map((s) => s.row)]));
  if (slots.length > shown.length) lines.push(`(${slots.length - shown.length} more slots; a taller terminal shows more)`);
  return { lines, processed };
}

