/**
 * How `portalctl` shows an agent's status to a person: one table per server, and the list of
 * processes that keep a pause from being idle.
 */
import type { AgentStatus, StreamStatus } from '../src/protocol/control';
import type { SlotBeacon, SpoolBeacon } from '../src/protocol/beacons';
import { handoverLines } from './handover-view';

/** A process that is not idle yet: a portal, or one slot (component) of it. */
export interface NotIdle {
  server: string;
  stream: string;
  /** The component slot, or null for the portal itself. */
  slot: number | null;
  pid: number | null;
  state: string;
  inflight: number;
  queued: number;
}

/**
 * What keeps `streams` (default all) of a server from being paused and idle: missing or dead
 * portals, portals not paused yet, and the slots of busy portals that still hold records.
 */
export function notIdle(status: AgentStatus, streams?: readonly string[], wantPaused = true): NotIdle[] {
  const out: NotIdle[] = [];
  for (const s of status.streams) {
    if (streams && streams.length > 0 && !streams.includes(s.stream)) continue;
    const b = s.beacon;
    const portal = (state: string): NotIdle => ({
      server: status.server,
      stream: s.stream,
      slot: null,
      pid: b?.pid ?? null,
      state,
      inflight: b?.inflight ?? 0,
      queued: b?.queued ?? 0,
    });
    if (s.state === 'missing' || s.state === 'dead') {
      out.push(portal(s.state));
      continue;
    }
    if (wantPaused && !s.paused) {
      out.push(portal('not paused'));
      continue;
    }
    if (s.idle) continue;
    const slots = b!.slots.filter((x) => x.state !== 'idle' && (x.state === 'busy' || x.queued + x.inflight > 0));
    if (slots.length === 0) out.push(portal(b!.received > 0 ? `received ${b!.received}` : 'busy'));
    for (const x of slots) {
      out.push({ server: status.server, stream: s.stream, slot: x.slot, pid: x.pid > 0 ? x.pid : null, state: x.state, inflight: x.inflight, queued: x.queued });
    }
  }
  return out;
}

/** `alpha/orders slot 2 (pid 4242) dead, inflight 40, queued 100` (counts only when not zero). */
export function describeNotIdle(n: NotIdle): string {
  const who = `${n.server}/${n.stream} ${n.slot === null ? 'portal' : `slot ${n.slot}`}${n.pid !== null ? ` (pid ${n.pid})` : ''}`;
  const counts = [n.inflight > 0 ? `, inflight ${n.inflight}` : '', n.queued > 0 ? `, queued ${n.queued}` : ''].join('');
  return `${who} ${n.state}${counts}`;
}

/** Slots in one short field: `0:idle 1:busy 2:dead 3:idle`. */
export function slotStates(slots: readonly SlotBeacon[]): string {
  return slots.map((s) => `${s.slot}:${s.state}`).join(' ');
}

/** One server's status as a block of text: a header line, a table of its portals, map errors. */
export function formatStatus(st: AgentStatus): string {
  const lines: string[] = [];
  lines.push(
    `${st.server}: agent pid ${st.pid}, map ${st.mapFile}, epoch ${st.epoch}${st.mapEpoch !== undefined && st.mapEpoch !== st.epoch ? ` (map at ${st.mapEpoch})` : ''}, heartbeat ${st.heartbeatMs} ms, ${st.idle ? 'all idle' : 'not all idle'}`,
  );
  const rows = [['STREAM', 'STATE', 'IDLE', 'EPOCH', 'IN/S', 'OUT/S', 'QUEUED', 'INFLIGHT', 'SPOOL', 'SLOTS'], ...st.streams.map(row)];
  lines.push(...table(rows).map((l) => `  ${l}`));
  for (const s of st.streams) {
    const sp = s.beacon?.spool;
    if (sp && sp.state !== 'ok' && s.state !== 'dead') lines.push(`  ${s.stream}: ${spoolProblem(sp)}`);
  }
  if (st.mapErrors) {
    const e = st.mapErrors;
    lines.push(`  map edit rejected (${new Date(e.at).toISOString()}); epoch ${st.epoch} stays in force. ${e.file}:`);
    for (const p of e.problems) lines.push(`    ${p.path}: ${p.message}`);
  }
  lines.push(...handoverLines(st));
  return lines.join('\n');
}

/** `spool full: 1.0 GiB of max_bytes 1.0 GiB; senders wait (when_full: block)`. */
export function spoolProblem(sp: SpoolBeacon): string {
  const what =
    sp.state === 'low_disk'
      ? `spool takes no records: ${bytes(sp.freeBytes)} free on its disk, under min_free_bytes ${bytes(sp.minFreeBytes)}`
      : sp.state === 'full'
        ? `spool full: ${bytes(sp.bytes)} of max_bytes ${bytes(sp.maxBytes)}`
        : `spool cannot write (disk full or failing; see the portal's log)`;
  return `${what}; ${sp.whenFull === 'block' ? 'senders wait (when_full: block)' : 'batches are refused with SPOOL_FULL (when_full: reject)'}`;
}

/** The SPOOL column: `-` without a spool, else its state and the records it holds. */
function spoolCell(sp: SpoolBeacon | undefined): string {
  if (!sp) return '-';
  return `${sp.state === 'ok' ? '' : `${sp.state.toUpperCase()} `}${sp.records} (${bytes(sp.bytes)})`;
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

function row(s: StreamStatus): string[] {
  const b = s.beacon;
  if (!b) return [s.stream, s.state, 'no', '-', '-', '-', '-', '-', '-', 'no beacon yet'];
  if (s.state === 'dead') {
    return [s.stream, 'dead', 'no', String(b.epoch), '-', '-', '-', '-', '-', `no beacon for ${((s.ageMs ?? 0) / 1000).toFixed(1)} s (last from pid ${b.pid})`];
  }
  return [
    s.stream,
    s.state,
    s.idle ? 'yes' : 'no',
    String(b.epoch),
    String(b.rates.inPerSec),
    String(b.rates.outPerSec),
    String(b.queued),
    String(b.inflight),
    spoolCell(b.spool),
    slotStates(b.slots),
  ];
}

/** Left-aligned columns, two spaces apart; the last column is not padded. */
function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
}
