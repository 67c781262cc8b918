/**
 * How `portalctl` shows an agent's status to a person: one table per server, and the list of
 * processes that keep a pause from being idle.
 */
import type { SecurityStatus } from '../src/transport/connections';
import type { AgentStatus, StreamStatus } from '../src/protocol/control';
import type { HostHealth } from '../src/protocol/host';
import type { SlotBeacon, SpoolBeacon } from '../src/protocol/beacons';
import { handoverLines } from './handover-view';
import { limitsLines } from './limits-view';
import { bytes, problemsOf, spooledWaiting, stateText } from '../src/agent/problems';
import { configLines } from './config-view';

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

/** Up to this many slots, the SLOTS column lists each (`0:idle 1:busy`); past it, a summary. */
export const SLOT_LIST_MAX = 8;

/**
 * Slots in one short field: `0:idle 1:busy 2:dead 3:idle` for a few; for many, counts by state
 * with the slots that are dead or missing named: `64 slots: 61 idle, 2 busy, 1 dead (17)`.
 */
export function slotStates(slots: readonly SlotBeacon[]): string {
  if (slots.length <= SLOT_LIST_MAX) return slots.map((s) => `${s.slot}:${s.state}`).join(' ');
  const by = new Map<string, number[]>();
  for (const s of slots) by.set(s.state, [...(by.get(s.state) ?? []), s.slot]);
  const parts = ['idle', 'busy', 'dead', 'missing']
    .filter((state) => by.has(state))
    .map((state) => {
      const list = by.get(state)!;
      const named = state === 'dead' || state === 'missing' ? ` (${list.slice(0, 6).join(' ')}${list.length > 6 ? ' …' : ''})` : '';
      return `${list.length} ${state}${named}`;
    });
  return `${slots.length} slots: ${parts.join(', ')}`;
}

/**
 * One server's status as a block of text: a header line, what is wrong in plain words, a table
 * of its portals, the host; with `slots`, a table of every slot.
 */
export function formatStatus(st: AgentStatus, opts: { slots?: boolean } = {}): string {
  const lines: string[] = [];
  lines.push(
    `${st.server}: agent pid ${st.pid}, map ${st.mapFile}, epoch ${st.epoch}${st.mapEpoch !== undefined && st.mapEpoch !== st.epoch ? ` (map at ${st.mapEpoch})` : ''}, heartbeat ${st.heartbeatMs} ms, ${st.idle ? 'all idle' : 'not all idle'}`,
  );
  const problems = problemsOf(st);
  for (const p of problems) lines.push(`  ${p.severity === 'error' ? 'PROBLEM' : 'warning'}: ${p.message}`);
  // --- map store (etcd maps)
  if (st.mapStore && !st.mapStore.connected) {
    lines.push(`  warning: ${st.mapStore.source} does not answer for ${Math.round((Date.now() - st.mapStore.since) / 1000)} s (${st.mapStore.error}); running on epoch ${st.mapEpoch}, handovers wait until it is back`);
  }
  const rows = [['STREAM', 'STATE', 'IDLE', 'EPOCH', 'IN/S', 'OUT/S', 'QUEUED', 'INFLIGHT', 'SPOOL', 'SLOTS'], ...st.streams.map(row)];
  lines.push(...table(rows).map((l) => `  ${l}`));
  if (st.mapErrors) {
    const e = st.mapErrors;
    lines.push(`  map edit rejected (${new Date(e.at).toISOString()}); epoch ${st.epoch} stays in force. ${e.file}:`);
    for (const p of e.problems) lines.push(`    ${p.path}: ${p.message}`);
  }
  lines.push(...handoverLines(st));
  lines.push(...cancelLines(st));
  lines.push(...configLines(st));
  lines.push(...limitsLines(st));
  if (st.host) lines.push(`  ${hostLine(st.host)}`);
  if (st.security) lines.push(`  ${securityLine('agent port', st.security)}`);
  if (opts.slots) {
    const slotRows = [['STREAM', 'SLOT', 'PID', 'STATE', 'QUEUED', 'INFLIGHT', 'PROCESSED', 'MS/DELIVERY', 'SILENT', 'CONFIG'], ...st.streams.flatMap(slotRowsOf)];
    lines.push('', ...table(slotRows).map((l) => `  ${l}`));
  }
  return lines.join('\n');
}

/** `host: memory 2.1 GiB free of 24 GiB, load 0.52 0.40 0.33 (2 cpus), run dir 12 GiB free, rss agent 60 MiB, portals 180 MiB, components 400 MiB`. */
/** `agent port: CURVE, 3 of 2048 connections, 4 keys refused, ...`: a TCP socket's transport and what came to it (docs/security.md). */
export function securityLine(what: string, x: SecurityStatus): string {
  const counts = [
    `${x.refused} key${x.refused === 1 ? '' : 's'} refused`,
    `${x.handshakeFailed} handshake${x.handshakeFailed === 1 ? '' : 's'} failed`,
    ...(x.capReached > 0 ? [`${x.capReached} refused past the cap`] : []),
    ...(x.floods > 0 ? [`closed ${x.floods}x by a flood`] : []),
  ];
  return `${what}: ${x.transport === 'curve' ? 'CURVE' : 'plain TCP (loopback)'}, ${x.connections} of ${x.maxConnections} connections${x.listening ? '' : ' (not listening)'}, ${counts.join(', ')}`;
}

export function hostLine(h: HostHealth): string {
  const rss = (role: string) => h.processes.filter((p) => p.role === role).reduce((n, p) => n + p.rssBytes, 0);
  const disks = h.disks.map((d) => `, ${d.use} ${bytes(d.freeBytes)} free`).join('');
  return `host: memory ${bytes(h.memory.availableBytes)} free of ${bytes(h.memory.totalBytes)}, load ${h.load.join(' ')} (${h.cpus} cpus)${disks}; rss agent ${bytes(rss('agent'))}, portals ${bytes(rss('portal'))}, components ${bytes(rss('component'))}`;
}

/** The SPOOL column: `-` without a spool, else its state and the records it holds. */
function spoolCell(sp: SpoolBeacon | undefined): string {
  if (!sp) return '-';
  return `${sp.state === 'ok' ? '' : `${sp.state.toUpperCase()} `}${sp.records} (${bytes(sp.bytes)})`;
}

function row(s: StreamStatus): string[] {
  const b = s.beacon;
  if (!b) return [s.stream, s.state, 'no', '-', '-', '-', '-', '-', '-', 'no beacon yet'];
  if (s.state === 'dead') {
    return [s.stream, 'dead', 'no', String(b.epoch), '-', '-', '-', '-', '-', `no beacon for ${((s.ageMs ?? 0) / 1000).toFixed(1)} s (last from pid ${b.pid})`];
  }
  return [
    s.stream,
    stateText(s),
    s.idle && !spooledWaiting(s) ? 'yes' : 'no',
    String(b.epoch),
    String(b.rates.inPerSec),
    String(b.rates.outPerSec),
    String(b.queued),
    String(b.inflight),
    spoolCell(b.spool),
    slotStates(b.slots),
  ];
}

function slotRowsOf(s: StreamStatus): string[][] {
  if (!s.beacon || s.state === 'dead') return [];
  return s.beacon.slots.map((x) => [
    s.stream,
    String(x.slot),
    x.pid > 0 ? String(x.pid) : '-',
    x.state,
    String(x.queued),
    String(x.inflight),
    String(x.processed),
    x.serviceMs.toFixed(1),
    x.silentMs < 0 ? '-' : `${(x.silentMs / 1000).toFixed(1)} s`,
    x.config?.running ? `v${x.config.running}` : '-',
  ]);
}

/** Left-aligned columns, two spaces apart; the last column is not padded. */
export function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
}

/** `cancelled: requests 2 roots in force, 140 records dropped, 12 skipped by components`, per portal that has any. */
function cancelLines(st: AgentStatus): string[] {
  return st.streams.flatMap((s) => {
    const c = s.beacon?.cancelled;
    if (!c || (c.inForce === 0 && c.dropped === 0 && c.skipped === 0)) return [];
    return [`  cancelled: ${s.stream} ${c.inForce} roots in force, ${c.dropped} records dropped, ${c.skipped} skipped by components`];
  });
}
