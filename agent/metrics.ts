/**
 * The agent's Prometheus metrics (`GET /metrics`), with prom-client: its default process
 * metrics, and the server's portals, slots, spools, epoch switch and host, read at each scrape
 * from one status of the agent (the portals' last beacons: nothing is counted on a data path).
 * Counters (`_total`) are the portals' own totals since they started, so they restart from 0
 * with a portal, as Prometheus expects of a counter.
 *
 *   scrape --> Metrics.render(agent.status()) --> one snapshot --> every family below
 */
import { collectDefaultMetrics, Registry } from 'prom-client';
import { healthExit, problemsOf } from '../src/agent/problems';
import { type LimitsView, SERVICE_MS_BOUNDS, type SlotView } from '../src/protocol/beacons';
import { WIRE_ERROR_CODES } from '../src/errors';
import type { AgentStatus, PortalState } from '../src/protocol/control';

type Labels = Record<string, string | number>;
interface Value {
  labels: Labels;
  value: number;
  metricName?: string;
}
type MetricType = 'counter' | 'gauge' | 'histogram';

const PORTAL_STATES: PortalState[] = ['running', 'paused', 'idle', 'dead', 'missing'];
const SLOT_STATES = ['idle', 'busy', 'dead', 'missing'] as const;
const WIRE = new Set<string>(WIRE_ERROR_CODES);

/** The families, each a function of one status. */
const FAMILIES: [string, MetricType, string, (st: AgentStatus) => Value[]][] = [
  ['flotilla_map_epoch', 'gauge', 'Epoch of the map in force on this server.', (st) => [{ labels: {}, value: st.epoch }]],
  ['flotilla_map_edit_refused', 'gauge', '1 while the last edit of the map file is refused (the previous epoch stays in force).', (st) => [{ labels: {}, value: st.mapErrors ? 1 : 0 }]],
  ['flotilla_health_status', 'gauge', "portalctl status's exit status for this server: 0 healthy, 3 dead, 4 missing, 5 hold waiting, 6 map refused, 7 spool stopped.", (st) => [{ labels: {}, value: healthExit(problemsOf(st)) }]],
  ['flotilla_problems', 'gauge', 'Problems on this server by kind and severity (as portalctl status and the status page say them).', problemCounts],
  ['flotilla_portal_state', 'gauge', "1 for the portal's state (running, paused, idle, dead, missing), 0 for the others.", (st) =>
    st.streams.flatMap((s) => PORTAL_STATES.map((state) => ({ labels: { stream: s.stream, state }, value: s.state === state ? 1 : 0 })))],
  ['flotilla_portal_paused', 'gauge', '1 while the stream is paused on this server.', (st) => perPortal(st, (s) => (s.paused ? 1 : 0), true)],
  ['flotilla_portal_epoch', 'gauge', 'Map epoch the portal runs under.', (st) => perPortal(st, (s) => s.beacon?.epoch)],
  ['flotilla_portal_beacon_age_seconds', 'gauge', "Seconds since the portal's last beacon.", (st) => perPortal(st, (s) => (s.ageMs === null ? undefined : s.ageMs / 1000), true)],
  ['flotilla_portal_records_in_total', 'counter', 'Records the portal accepted from senders.', (st) => perPortal(st, (s) => s.beacon?.recordsIn)],
  ['flotilla_portal_records_out_total', 'counter', 'Records done by the portal\'s components.', (st) => perPortal(st, (s) => s.beacon?.recordsOut)],
  ['flotilla_portal_records_cancelled_total', 'counter', 'Records of cancelled roots: dropped by the portal, or skipped by its components (docs/protocol.md, "Cancellation").', (st) =>
    live(st).flatMap((s) => (s.beacon!.cancelled ? (['dropped', 'skipped'] as const).map((how) => ({ labels: { stream: s.stream, how }, value: s.beacon!.cancelled![how] })) : []))],
  ['flotilla_portal_cancellations_in_force', 'gauge', 'Cancelled roots in force at the portal.', (st) => perPortal(st, (s) => s.beacon?.cancelled?.inForce)],
  ['flotilla_portal_in_per_second', 'gauge', 'Records accepted in the last second.', (st) => perPortal(st, (s) => s.beacon?.rates.inPerSec)],
  ['flotilla_portal_out_per_second', 'gauge', 'Records done in the last second.', (st) => perPortal(st, (s) => s.beacon?.rates.outPerSec)],
  ['flotilla_portal_queued_records', 'gauge', 'Records waiting in the portal for a slot.', (st) => perPortal(st, (s) => s.beacon?.queued)],
  ['flotilla_portal_inflight_records', 'gauge', 'Records sent to components and not yet done.', (st) => perPortal(st, (s) => s.beacon?.inflight)],
  ['flotilla_portal_refusals_total', 'counter', 'Batches refused to senders, by error code (docs/protocol.md).', (st) => errorsOf(st, true)],
  ['flotilla_portal_errors_total', 'counter', 'Other failures the portal counted, by cause.', (st) => errorsOf(st, false)],
  ['flotilla_agent_errors_total', 'counter', "Failures the agent counted, by cause (KEY_REFUSED, NOT_AUTHORIZED, CONNECTION_CAP, ...).", (st) =>
    Object.entries(st.errors ?? {}).map(([cause, value]) => ({ labels: { cause }, value }))],
  ['flotilla_agent_connections', 'gauge', "TCP connections open on the agent's control port, and its cap (docs/security.md).", (st) =>
    st.security ? [{ labels: { kind: 'open' }, value: st.security.connections }, { labels: { kind: 'max' }, value: st.security.maxConnections }] : []],
  ['flotilla_slots', 'gauge', "The portal's slots by state: dead and missing ones hold their records.", (st) =>
    live(st).flatMap((s) => SLOT_STATES.map((state) => ({ labels: { stream: s.stream, state }, value: s.beacon!.slots.filter((x) => x.state === state).length })))],
  ['flotilla_slot_state', 'gauge', "1 for the slot's state (idle, busy, dead, missing), 0 for the others.", (st) =>
    perSlot(st).flatMap(([s, x]) => SLOT_STATES.map((state) => ({ labels: { stream: s, slot: x.slot, state }, value: x.state === state ? 1 : 0 })))],
  ['flotilla_slot_records_in_total', 'counter', "Records sent to the slot's component, each once (a resend after a component restart is not counted again).", (st) => perSlot(st).map(([s, x]) => slotValue(s, x.slot, x.routed))],
  ['flotilla_slot_records_out_total', 'counter', "Records the slot's components have done.", (st) => perSlot(st).map(([s, x]) => slotValue(s, x.slot, x.processed))],
  ['flotilla_slot_queued_records', 'gauge', 'Records waiting in the portal for the slot.', (st) => perSlot(st).map(([s, x]) => slotValue(s, x.slot, x.queued))],
  ['flotilla_slot_inflight_records', 'gauge', 'Records sent to the slot without DONE.', (st) => perSlot(st).map(([s, x]) => slotValue(s, x.slot, x.inflight))],
  ['flotilla_slot_silent_seconds', 'gauge', 'Seconds since the slot\'s component was last heard from.', (st) =>
    perSlot(st).filter(([, x]) => x.silentMs >= 0).map(([s, x]) => slotValue(s, x.slot, x.silentMs / 1000))],
  ['flotilla_slot_stuck_seconds', 'gauge', 'Seconds the slot has finished nothing while records are in flight to it (0 when none are).', (st) => perSlot(st).map(([s, x]) => slotValue(s, x.slot, (x.stuckMs ?? 0) / 1000))],
  ['flotilla_slot_registrations_total', 'counter', 'Times a component registered for the slot (a restart registers again).', (st) => perSlot(st).map(([s, x]) => slotValue(s, x.slot, (x as Partial<SlotView>).registrations ?? 0))],
  ['flotilla_slot_config_version', 'gauge', "The configuration version the slot's component runs (the management bus; 0: none).", (st) => perSlot(st).map(([s, x]) => slotValue(s, x.slot, x.config?.running ?? 0))],
  ['flotilla_slot_processing_seconds', 'histogram', 'Time from DELIVER to DONE per delivery (a batch of records) to the slot.', processingHistogram],
  ['flotilla_spool_records', 'gauge', "Records in the stream's spool on this server.", (st) => perSpool(st, (sp) => sp.records)],
  ['flotilla_spool_bytes', 'gauge', "Bytes in the stream's spool.", (st) => perSpool(st, (sp) => sp.bytes)],
  ['flotilla_spool_max_bytes', 'gauge', "The spool's max_bytes.", (st) => perSpool(st, (sp) => sp.maxBytes)],
  ['flotilla_spool_free_bytes', 'gauge', "Free space on the spool's disk.", (st) => perSpool(st, (sp) => sp.freeBytes)],
  ['flotilla_spool_min_free_bytes', 'gauge', "The spool's min_free_bytes: below it the spool takes no records.", (st) => perSpool(st, (sp) => sp.minFreeBytes)],
  ['flotilla_spool_taking_records', 'gauge', '1 while the spool takes records, 0 when full, under its disk floor or failing to write.', (st) => perSpool(st, (sp) => (sp.state === 'ok' ? 1 : 0))],
  ['flotilla_epoch_switch_running', 'gauge', '1 while the agent carries its portals into a new epoch.', (st) => [{ labels: {}, value: st.epochSwitch && !st.epochSwitch.done ? 1 : 0 }]],
  ['flotilla_epoch_switch_waiting_for', 'gauge', 'Servers the running epoch switch waits for before any bucket moves.', (st) =>
    (st.epochSwitch && !st.epochSwitch.done ? st.epochSwitch.waitingFor : []).map((w) => ({ labels: { for_server: w.server }, value: 1 }))],
  ['flotilla_handovers_waiting', 'gauge', 'Buckets held for their old owner until it releases them, per stream and old owner.', (st) =>
    (st.handovers ?? []).map((h) => ({ labels: { stream: h.stream, from: h.from }, value: h.buckets.length }))],
  ['flotilla_handover_held_records', 'gauge', 'Records accepted for held buckets, waiting in memory for the release.', (st) =>
    (st.handovers ?? []).map((h) => ({ labels: { stream: h.stream, from: h.from }, value: h.records }))],
  ['flotilla_handovers_stuck', 'gauge', 'Holds waiting longer than the agent\'s hold limit (portalctl release ends one).', (st) => [{ labels: {}, value: (st.handovers ?? []).filter((h) => h.stuck).length }]],
  ['flotilla_host_memory_bytes', 'gauge', "The host's memory: total, available, and the floor under which a warning is raised.", (st) =>
    st.host ? [{ labels: { kind: 'total' }, value: st.host.memory.totalBytes }, { labels: { kind: 'available' }, value: st.host.memory.availableBytes }, { labels: { kind: 'floor' }, value: st.host.memory.floorBytes }] : []],
  ['flotilla_host_load', 'gauge', "The host's load average over 1, 5 and 15 minutes.", (st) =>
    st.host ? ['1m', '5m', '15m'].map((window, i) => ({ labels: { window }, value: st.host!.load[i]! })) : []],
  ['flotilla_host_disk_free_bytes', 'gauge', 'Free space on the disks of the run directory and of each spool.', (st) =>
    (st.host?.disks ?? []).map((d) => ({ labels: { use: d.use, path: d.path }, value: d.freeBytes }))],
  ['flotilla_host_process_rss_bytes', 'gauge', "Resident memory of the server's Flotilla processes.", (st) =>
    (st.host?.processes ?? []).map((p) => ({ labels: { role: p.role, stream: p.stream ?? '', slot: p.slot ?? '', pid: p.pid }, value: p.rssBytes }))],
  ['flotilla_host_warnings', 'gauge', 'Host warnings raised (memory low, a spool disk near its floor), by code.', (st) =>
    ['MEMORY_LOW', 'SPOOL_DISK_LOW'].map((code) => ({ labels: { code }, value: (st.host?.warnings ?? []).filter((w) => w.code === code).length }))],
  // ---- memory limits (docs/security.md, "Limits") ----
  ['flotilla_portal_memory_bytes', 'gauge', "The portal's memory by kind: records held (queued or in flight) and resident, each beside its limit (max_queued_bytes, max_rss_bytes).", (st) =>
    perLimits(st, 'kind', (l) => [['queued', l.queuedBytes], ['max_queued', l.maxQueuedBytes], ['rss', l.rssBytes], ['max_rss', l.maxRssBytes]])],
  ['flotilla_portal_limit_reached_total', 'counter', 'Times the portal reached a memory limit, by limit (for max_unread_replies: replies dropped).', (st) =>
    perLimits(st, 'limit', (l) => [['max_queued_bytes', l.queuedBytesStops], ['max_slot_bytes', l.slotBytesStops], ['max_unread_replies', l.repliesDropped], ['max_rss_bytes', l.memoryResets]])],
  ['flotilla_slot_queued_bytes', 'gauge', "Bytes of the slot's backlog: records queued for it or in flight (max_slot_bytes).", (st) => perSlot(st).map(([s, x]) => slotValue(s, x.slot, (x as Partial<SlotView>).bytes ?? 0))],
];

/** The agent's metrics registry: default process metrics and the families above. */
export class Metrics {
  readonly registry = new Registry();
  private snapshot: AgentStatus | null = null;

  constructor(labels: { server: string; instance: string }) {
    this.registry.setDefaultLabels({ server: labels.server, flotilla_instance: labels.instance });
    collectDefaultMetrics({ register: this.registry });
    for (const [name, type, help, values] of FAMILIES) {
      this.registry.registerMetric({
        name,
        help,
        type,
        get: async () => ({ name, help, type, aggregator: 'sum', values: this.snapshot ? values(this.snapshot) : [] }),
        reset: () => undefined,
      } as unknown as Parameters<Registry['registerMetric']>[0]);
    }
  }

  /** The text of a scrape, every family read from this one status. */
  async render(status: AgentStatus): Promise<string> {
    this.snapshot = status;
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Portals with a fresh beacon. */
const live = (st: AgentStatus) => st.streams.filter((s) => s.beacon !== null && s.state !== 'dead');

/** A value per portal; a dead portal's last beacon is stale, so only its age and pause state are given. */
function perPortal(st: AgentStatus, f: (s: AgentStatus['streams'][number]) => number | undefined, evenDead = false): Value[] {
  return st.streams.flatMap((s) => {
    if (s.state === 'dead' && !evenDead) return [];
    const value = f(s);
    return value === undefined ? [] : [{ labels: { stream: s.stream }, value }];
  });
}

function perSlot(st: AgentStatus) {
  return live(st).flatMap((s) => s.beacon!.slots.map((x) => [s.stream, x] as const));
}

const slotValue = (stream: string, slot: number, value: number): Value => ({ labels: { stream, slot }, value });

/** A value for each (name, number) pair of each live portal's memory limits, the name under `label`. */
function perLimits(st: AgentStatus, label: string, pairs: (l: LimitsView) => [string, number][]): Value[] {
  return live(st).flatMap((s) => {
    const l = s.beacon!.limits;
    return l ? pairs(l).map(([k, value]) => ({ labels: { stream: s.stream, [label]: k }, value })) : [];
  });
}

function perSpool(st: AgentStatus, f: (sp: NonNullable<NonNullable<AgentStatus['streams'][number]['beacon']>['spool']>) => number): Value[] {
  return live(st).flatMap((s) => (s.beacon!.spool ? [{ labels: { stream: s.stream }, value: f(s.beacon!.spool) }] : []));
}

function errorsOf(st: AgentStatus, wire: boolean): Value[] {
  return live(st).flatMap((s) =>
    Object.entries(wire ? { ...s.beacon!.errors, ...s.beacon!.flowRefusals } : s.beacon!.errors)
      .filter(([code]) => WIRE.has(code) === wire)
      .map(([code, n]): Value => ({ labels: wire ? { stream: s.stream, code } : { stream: s.stream, cause: code }, value: n })),
  );
}

function problemCounts(st: AgentStatus): Value[] {
  const counts = new Map<string, number>();
  for (const p of problemsOf(st)) counts.set(`${p.kind}\0${p.severity}`, (counts.get(`${p.kind}\0${p.severity}`) ?? 0) + 1);
  return [...counts].map(([k, value]) => {
    const [kind, severity] = k.split('\0');
    return { labels: { kind: kind!, severity: severity! }, value };
  });
}

/** Each slot's histogram from its beacon: cumulative `_bucket`s by `le` (seconds), `_sum`, `_count`. */
function processingHistogram(st: AgentStatus): Value[] {
  const out: Value[] = [];
  for (const [stream, x] of perSlot(st)) {
    const counts = x.serviceCounts ?? [];
    let cumulative = 0;
    SERVICE_MS_BOUNDS.forEach((bound, i) => {
      cumulative += counts[i] ?? 0;
      out.push({ metricName: 'flotilla_slot_processing_seconds_bucket', labels: { stream, slot: x.slot, le: bound / 1000 }, value: cumulative });
    });
    cumulative += counts[SERVICE_MS_BOUNDS.length] ?? 0;
    out.push({ metricName: 'flotilla_slot_processing_seconds_bucket', labels: { stream, slot: x.slot, le: '+Inf' }, value: cumulative });
    out.push({ metricName: 'flotilla_slot_processing_seconds_sum', labels: { stream, slot: x.slot }, value: (x.serviceMsSum ?? 0) / 1000 });
    out.push({ metricName: 'flotilla_slot_processing_seconds_count', labels: { stream, slot: x.slot }, value: cumulative });
  }
  return out;
}
