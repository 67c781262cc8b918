/**
 * The health judgement without processes around it (src/agent/problems.ts): which problems a
 * server's status has, in which words, and the exit status `portalctl status` and `/healthz`
 * give for them; and how `status` stays readable with many slots.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { formatStatus, slotStates } from '../agent/status-view';
import { HEALTH_EXIT, healthExit, problemsOf, stateText } from '../src/agent/problems';
import type { PortalBeacon, SlotBeacon, SpoolBeacon } from '../src/protocol/beacons';
import type { AgentStatus, StreamStatus } from '../src/protocol/control';

const slot = (n: number, over: Partial<SlotBeacon> = {}): SlotBeacon => ({
  slot: n, pid: 100 + n, state: 'idle', queued: 0, inflight: 0, received: 0, silentMs: 10, processed: 0, serviceMs: 0, routed: 0, serviceCounts: [], serviceMsSum: 0, stuckMs: 0, ...over,
});

function stream(name: string, over: Partial<PortalBeacon> = {}, state: StreamStatus['state'] = 'idle'): StreamStatus {
  const beacon: PortalBeacon = {
    type: 'portal', server: 'alpha', stream: name, pid: 42, port: 7401, epoch: 1, digest: 'd1', holds: [], paused: false, received: 0, recordsIn: 0, recordsOut: 0,
    inflight: 0, queued: 0, idle: true, rates: { inPerSec: 0, outPerSec: 0 }, errors: {}, flowRefusals: {}, slots: [slot(0), slot(1)], at: 0, ...over,
  };
  return { stream: name, state, paused: beacon.paused, idle: state === 'idle', ageMs: 100, beacon };
}

function status(streams: StreamStatus[], over: Partial<AgentStatus> = {}): AgentStatus {
  return { server: 'alpha', pid: 1, mapFile: '/m.yaml', instance: 'prod', epoch: 4, mapEpoch: 4, digest: 'd4', handovers: [], heartbeatMs: 1000, runDir: '/run', uptimeMs: 1, mapErrors: null, epochSwitch: null, idle: true, streams, ...over };
}

const spool = (over: Partial<SpoolBeacon> = {}): SpoolBeacon => ({
  mode: 'spill', state: 'ok', whenFull: 'block', blocked: false, records: 0, bytes: 0, maxBytes: 1 << 30, freeBytes: 1 << 30, minFreeBytes: 1 << 26, tornTails: 0, ...over,
});

const messages = (st: AgentStatus) => problemsOf(st).map((p) => `${p.severity} ${p.kind}: ${p.message}`);

test('a healthy server has no problem and exits 0', () => {
  const st = status([stream('orders'), stream('pages', {}, 'running')]);
  assert.deepEqual(problemsOf(st), []);
  assert.equal(healthExit(problemsOf(st)), HEALTH_EXIT.ok);
});

test('dead and missing portals and slots are errors; the lowest code wins (dead 3 before missing 4)', () => {
  const st = status([
    stream('orders', { slots: [slot(0), slot(1, { state: 'dead', silentMs: 3500, queued: 30, inflight: 10 }), slot(2, { state: 'missing', pid: 0 })] }, 'running'),
    { stream: 'pages', state: 'missing', paused: false, idle: false, ageMs: null, beacon: null },
  ]);
  assert.deepEqual(messages(st), [
    'error dead: orders slot 1 is dead: its component (pid 101) is silent for 3.5 s; 40 records wait for it',
    'error missing: orders slot 2 is missing: no component has registered for it',
    'error missing: the pages portal is missing: its agent has never heard from it (is flotilla-portal@pages running?)',
  ]);
  assert.equal(healthExit(problemsOf(st)), HEALTH_EXIT.dead);
  const deadPortal = status([{ ...stream('orders'), state: 'dead', ageMs: 4200 }]);
  assert.deepEqual(messages(deadPortal), ['error dead: the orders portal is dead: no beacon for 4.2 s (last from pid 42)']);
});

test('buckets held for a release and a switch waiting for a server are "hold waiting" (5); a refused map edit or servers that disagree are 6; a stopped spool is 7', () => {
  const hold = status([stream('orders')], {
    handovers: [{ stream: 'orders', from: 'beta', epoch: 5, buckets: [1, 2, 3], records: 340, waitingMs: 5000, reason: 'beta: its orders portal is still draining', stuck: false, command: 'portalctl release orders --from beta --server alpha' }],
  });
  assert.deepEqual(messages(hold), ['error hold: orders: 3 buckets (340 records) taken over from beta are held for 5.0 s: beta: its orders portal is still draining']);
  assert.equal(healthExit(problemsOf(hold)), HEALTH_EXIT.hold);
  const stuck = status([stream('orders')], { handovers: [{ ...hold.handovers[0]!, stuck: true }] });
  assert.match(messages(stuck)[0]!, /; stuck: to end it, portalctl release orders --from beta --server alpha$/);
  const sw = { epoch: 5, digest: 'abcdef0123456789', from: 4, done: false, streams: [], conflicts: [], waitingFor: [{ server: 'gamma', reason: 'has epoch 4, not yet 5', waitingMs: 12000 }] };
  const waiting = status([stream('orders')], { epochSwitch: sw });
  assert.deepEqual(messages(waiting), ['error hold: the switch to epoch 5 waits for gamma (12.0 s): has epoch 4, not yet 5']);
  assert.equal(healthExit(problemsOf(waiting)), HEALTH_EXIT.hold);
  assert.deepEqual(problemsOf(status([stream('orders')], { epochSwitch: { ...sw, done: true } })), [], 'a finished switch waits for nobody');
  const conflict = status([stream('orders')], { epochSwitch: { ...sw, waitingFor: [], conflicts: [{ server: 'gamma', digest: '0123456789abcdef' }] } });
  assert.equal(problemsOf(conflict)[0]!.kind, 'map');
  assert.match(messages(conflict)[0]!, /^error map: gamma has other content for epoch 5 \(map \w+, here \w+\): give every server the same file; no bucket moves until then$/);
  assert.equal(healthExit(problemsOf(conflict)), HEALTH_EXIT.map);

  const refused = status([stream('orders')], { mapErrors: { file: '/m.yaml', at: 0, code: 'MAP_INVALID', epoch: 5, problems: [{ path: 'streams[0].port', message: 'must be <= 65535 (line 9)' }] } });
  assert.deepEqual(messages(refused), ['error map: the edit of /m.yaml was refused (1 problem: streams[0].port: must be <= 65535 (line 9)); epoch 4 stays in force']);
  assert.equal(healthExit(problemsOf(refused)), HEALTH_EXIT.map);
  assert.equal(healthExit([...problemsOf(refused), ...problemsOf(hold)]), HEALTH_EXIT.hold, 'the lowest code among several');

  const full = status([stream('orders', { spool: spool({ state: 'low_disk', freeBytes: 1 << 20 }) })]);
  assert.deepEqual(messages(full), ['error spool: orders: spool takes no records: 1.0 MiB free on its disk, under min_free_bytes 64.0 MiB; senders wait (when_full: block)']);
  assert.equal(healthExit(problemsOf(full)), HEALTH_EXIT.spool);
});

test('records waiting in the spool are not "idle"; a stalled slot and host warnings are warnings, exit 0', () => {
  const waiting = stream('orders', { spool: spool({ records: 99975, bytes: 4 << 20 }), slots: [slot(0, { state: 'missing', pid: 0 })] });
  assert.equal(stateText(waiting), 'spooled, waiting for slots');
  assert.equal(stateText(stream('orders')), 'idle');
  const stalled = stream('pages', { idle: false, inflight: 40, slots: [slot(0), slot(1, { state: 'busy', inflight: 40, stuckMs: 6000 })] }, 'running');
  const st = status([stream('orders', { spool: spool({ records: 5 }) }), stalled], {
    host: { at: 0, intervalMs: 5000, memory: { totalBytes: 8 * 2 ** 30, availableBytes: 100 << 20, floorBytes: 819 << 20 }, load: [1, 1, 1], cpus: 2, disks: [], processes: [], warnings: [{ code: 'MEMORY_LOW', message: 'memory low: 100 MiB available of 8192 MiB, under the floor of 819 MiB' }] },
  });
  assert.deepEqual(messages(st), [
    'warning waiting: orders: 5 records spooled, waiting for slots',
    'warning stalled: pages slot 1 has finished nothing for 6.0 s with 40 records in flight: its component (pid 101) answers heartbeats but may be hung',
    'warning host: memory low: 100 MiB available of 8192 MiB, under the floor of 819 MiB',
  ]);
  assert.equal(healthExit(problemsOf(st)), HEALTH_EXIT.ok);
  const text = formatStatus(st);
  assert.match(text, /^alpha: agent pid 1, .*\n {2}warning: orders: 5 records spooled, waiting for slots\n/, 'what is wrong comes first, before the table');
  assert.match(text, /^ {2}orders\s+spooled, waiting for slots\s+no\s/m);
  assert.match(text, /^ {2}host: memory 100\.0 MiB free of 8\.0 GiB, load 1 1 1 \(2 cpus\); rss agent 0 B/m);
});

test('many slots are summarized, naming the dead and missing ones; a few are listed', () => {
  const many = Array.from({ length: 64 }, (_, i) => slot(i, { state: i === 17 || i === 40 ? 'dead' : i === 63 ? 'missing' : i % 10 === 0 ? 'busy' : 'idle' }));
  assert.equal(slotStates(many), '64 slots: 55 idle, 6 busy, 2 dead (17 40), 1 missing (63)');
  assert.equal(slotStates(many.slice(0, 3)), '0:busy 1:idle 2:idle');
  const st = status([stream('orders', { slots: many }, 'running')]);
  assert.match(formatStatus(st), /^ {2}orders\s+running\s.*64 slots: 55 idle, 6 busy, 2 dead \(17 40\), 1 missing \(63\)$/m);
  const detailed = formatStatus(st, { slots: true });
  assert.equal(detailed.split('\n').filter((l) => /^ {2}orders\s+\d+\s/.test(l)).length, 64, '--slots: a line per slot');
});
