/**
 * What is wrong on a server, in plain words, from its agent's status: the one judgement that
 * `portalctl status` (its exit status), the agent's `/healthz`, its metrics and its status page
 * all show. Errors make a health check fail; warnings are shown and do not.
 *
 *   AgentStatus --problemsOf--> Problem[] --healthExit--> 0 | 3 dead | 4 missing | 5 hold | 6 map | 7 spool
 */
import { shortDigest } from '../map/digest';
import type { SpoolBeacon } from '../protocol/beacons';
import type { AgentStatus, StreamStatus } from '../protocol/control';

/** Exit statuses of `portalctl status` (and the `code` of /healthz) when something is wrong. */
export const HEALTH_EXIT = {
  ok: 0,
  /** A portal or a component slot stopped beaconing. */
  dead: 3,
  /** A portal of the map, or a slot of a portal, has never been heard from. */
  missing: 4,
  /** Buckets taken over in an epoch switch are held, waiting for their old owner's release (or the switch waits for a server). */
  hold: 5,
  /** The last edit of the map file was refused (the previous epoch stays in force), or servers have different maps for one epoch. */
  map: 6,
  /** A spool takes no records: full, under its disk floor, or failing to write. */
  spool: 7,
} as const;

/** A slot with records in flight that has finished nothing for this many heartbeats is reported stalled (a warning). */
export const STALLED_AFTER_BEATS = 5;

export type ProblemKind = Exclude<keyof typeof HEALTH_EXIT, 'ok'> | 'stalled' | 'waiting' | 'host';

/** One thing wrong on a server. */
export interface Problem {
  severity: 'error' | 'warning';
  kind: ProblemKind;
  server: string;
  stream: string | null;
  slot: number | null;
  /** A sentence for a person. */
  message: string;
}

/** Every problem of one server's status, errors first. */
export function problemsOf(st: AgentStatus): Problem[] {
  const out: Problem[] = [];
  const add = (severity: Problem['severity'], kind: ProblemKind, stream: string | null, slot: number | null, message: string) =>
    out.push({ severity, kind, server: st.server, stream, slot, message });
  for (const s of st.streams) {
    const b = s.beacon;
    if (s.state === 'missing') {
      add('error', 'missing', s.stream, null, `the ${s.stream} portal is missing: its agent has never heard from it (is flotilla-portal@${s.stream} running?)`);
      continue;
    }
    if (s.state === 'dead' || !b) {
      add('error', 'dead', s.stream, null, `the ${s.stream} portal is dead: no beacon for ${seconds(s.ageMs ?? 0)}${b ? ` (last from pid ${b.pid})` : ''}`);
      continue;
    }
    for (const x of b.slots) {
      const held = x.queued + x.inflight;
      const waiting = held > 0 ? `; ${held} records wait for it` : '';
      if (x.state === 'dead') add('error', 'dead', s.stream, x.slot, `${s.stream} slot ${x.slot} is dead: its component (pid ${x.pid}) is silent for ${seconds(x.silentMs)}${waiting}`);
      else if (x.state === 'missing') add('error', 'missing', s.stream, x.slot, `${s.stream} slot ${x.slot} is missing: no component has registered for it${waiting}`);
      else if (x.stuckMs > STALLED_AFTER_BEATS * st.heartbeatMs) {
        add('warning', 'stalled', s.stream, x.slot, `${s.stream} slot ${x.slot} has finished nothing for ${seconds(x.stuckMs)} with ${x.inflight} records in flight: its component (pid ${x.pid}) answers heartbeats but may be hung`);
      }
    }
    if (b.spool && b.spool.state !== 'ok') add('error', 'spool', s.stream, null, `${s.stream}: ${spoolStopped(b.spool)}`);
    if (spooledWaiting(s)) add('warning', 'waiting', s.stream, null, `${s.stream}: ${b.spool!.records} records spooled, waiting for slots`);
  }
  const sw = st.epochSwitch;
  if (sw && !sw.done) {
    for (const w of sw.waitingFor) add('error', 'hold', null, null, `the switch to epoch ${sw.epoch} waits for ${w.server} (${seconds(w.waitingMs)}): ${w.reason}`);
    for (const c of sw.conflicts) {
      add('error', 'map', null, null, `${c.server} has other content for epoch ${sw.epoch} (map ${shortDigest(c.digest)}, here ${shortDigest(sw.digest)}): give every server the same file; no bucket moves until then`);
    }
    for (const x of sw.streams) if (x.error) add('error', 'hold', x.stream, null, `${x.stream}: the switch to epoch ${sw.epoch}: ${x.error}`);
  }
  for (const h of st.handovers ?? []) {
    const stuck = h.stuck ? `; stuck: to end it, ${h.command}` : '';
    add('error', 'hold', h.stream, null, `${h.stream}: ${h.buckets.length} buckets (${h.records} records) taken over from ${h.from} are held for ${seconds(h.waitingMs)}: ${h.reason}${stuck}`);
  }
  if (st.mapErrors) {
    const e = st.mapErrors;
    add('error', 'map', null, null, `the edit of ${e.file} was refused (${e.problems.length} problem${e.problems.length === 1 ? '' : 's'}: ${e.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}); epoch ${st.epoch} stays in force`);
  }
  for (const w of st.host?.warnings ?? []) add('warning', 'host', null, null, w.message);
  return out.sort((a, b) => (a.severity === b.severity ? 0 : a.severity === 'error' ? -1 : 1));
}

/** The exit status for these problems: 0 with no error, else the lowest of HEALTH_EXIT's codes among them. */
export function healthExit(problems: readonly Problem[]): number {
  let code = 0;
  for (const p of problems) {
    if (p.severity !== 'error') continue;
    const c = HEALTH_EXIT[p.kind as keyof typeof HEALTH_EXIT];
    if (c !== undefined && (code === 0 || c < code)) code = c;
  }
  return code;
}

/**
 * The stream holds spooled records that no slot is taking now: the portal calls itself idle (its
 * slots hold nothing in memory) but records wait on disk for slots to come back.
 */
export function spooledWaiting(s: StreamStatus): boolean {
  const b = s.beacon;
  if (!b?.spool || b.spool.records === 0 || s.state === 'dead' || s.state === 'missing') return false;
  return !b.paused && (s.idle || b.slots.some((x) => x.state === 'dead' || x.state === 'missing'));
}

/** How a person reads a stream's state: `spooled, waiting for slots` where `idle` would mislead. */
export function stateText(s: StreamStatus): string {
  return spooledWaiting(s) ? 'spooled, waiting for slots' : s.state;
}

/** `spool full: ...` for a spool that takes no records. */
export function spoolStopped(sp: SpoolBeacon): string {
  const what =
    sp.state === 'low_disk'
      ? `spool takes no records: ${bytes(sp.freeBytes)} free on its disk, under min_free_bytes ${bytes(sp.minFreeBytes)}`
      : sp.state === 'full'
        ? `spool full: ${bytes(sp.bytes)} of max_bytes ${bytes(sp.maxBytes)}`
        : `spool cannot write (disk full or failing; see the portal's log)`;
  return `${what}; ${sp.whenFull === 'block' ? 'senders wait (when_full: block)' : 'batches are refused with SPOOL_FULL (when_full: reject)'}`;
}

/** 1536 -> `1.5 KiB`. */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

const seconds = (ms: number) => `${(Math.max(0, ms) / 1000).toFixed(1)} s`;
