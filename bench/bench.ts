/**
 * `npm run bench`: records per second through one portal with acknowledgements on, against a
 * plain per-message zeromq.js proxy, then latency at a paced tenth of the target rate and the
 * portal's peak RSS. Every process it starts is stopped before it exits. See BENCHMARKS.md.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runBaseline } from './baseline';
import { startDeployment } from './deployment';
import { runLatency, runThroughput } from './flotilla-runs';
import { calibrate } from './calibrate';
import { runPauseResume } from './pause-resume';
import { runMapChange } from './map-change';
import { describeMachine } from './machine';
import { parseOptions } from './options';
import { ProcessGroup, peakRssMb } from './procs';
import { summariseProfile } from './profile-summary';
import { toJson, toText, type Results } from './report';

/** Runs every measurement and prints the results; resolves once everything is torn down. */
async function main(): Promise<void> {
  const o = parseOptions();
  const startedAt = performance.now();
  const progress = (s: string) => process.stderr.write(`bench: ${s}\n`);
  const machine = describeMachine();
  progress('calibrating (JS loop, pipe ping-pong)');
  machine.calibration = await calibrate();
  const dir = mkdtempSync(join(tmpdir(), 'flb-'));
  const profileDir = o.profileDir ? resolve(o.profileDir) : null;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const group = new ProcessGroup();
  const stopOnSignal = () =>
    void group.stopAll(500).then(() => {
      rmSync(dir, { recursive: true, force: true });
      process.exit(130);
    });
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  try {
    let baseline = null;
    if (!o.skipBaseline) {
      progress(`baseline zeromq.js proxy, ${o.senders} producer(s), ${o.seconds} s`);
      baseline = await runBaseline(group, dir, o);
    }
    progress(`starting portal and ${o.slots} sink components`);
    const d = await startDeployment(group, dir, { profileDir, slots: o.slots, portalFlags: o.portalFlags, sinkFlags: o.sinkFlags });
    progress(`throughput, ${o.senders} sender(s), ${o.seconds} s`);
    const throughput = await runThroughput(group, d, o);
    progress(`latency at ${o.rate} records/s, ${o.seconds} s`);
    const latency = await runLatency(group, d, o);
    const portalRssMb = peakRssMb(d.portal.pid);
    await group.stopAll();
    let spooled = null;
    if (!o.skipSpool) {
      progress(`throughput with the spool in mode always (fsync interval), ${o.senders} sender(s), ${o.seconds} s`);
      const sdir = join(dir, 'spooled');
      mkdirSync(sdir);
      const spool = { mode: 'always', dir: join(sdir, 'spool'), fsync: 'interval' };
      const ds = await startDeployment(group, sdir, { profileDir: null, slots: o.slots, portalFlags: o.portalFlags, sinkFlags: o.sinkFlags, spool });
      spooled = await runThroughput(group, ds, o);
      await group.stopAll();
    }
    progress(`throughput with CURVE on the senders' connections, ${o.senders} sender(s), ${o.seconds} s`);
    const cdir = join(dir, 'curve');
    mkdirSync(cdir);
    const dc = await startDeployment(group, cdir, { profileDir: null, slots: o.slots, portalFlags: o.portalFlags, sinkFlags: o.sinkFlags, curve: true });
    const curve = await runThroughput(group, dc, o);
    await group.stopAll();
    progress(`CURVE on: ${Math.round(curve.window.perSecond)} records/s, ${(curve.window.perSecond / throughput.window.perSecond).toFixed(2)} of plain (${Math.round(throughput.window.perSecond)})`);
    progress('pause -> idle -> resume across three servers, 250 ms heartbeats');
    const pauseResume = await runPauseResume(dir);
    let mapChange = null;
    if (!o.skipMapChange) {
      progress('a map change in etcd moving a quarter of the buckets across three servers, under load');
      mapChange = await runMapChange(dir);
    }
    let profile = null;
    if (profileDir) {
      const files = readdirSync(profileDir).filter((f) => f.endsWith('.cpuprofile') && f.includes(`.${d.portal.pid}.`));
      if (files[0]) profile = { file: join(profileDir, files[0]), ...summariseProfile(join(profileDir, files[0])) };
    }
    const totalSeconds = (performance.now() - startedAt) / 1000;
    const results: Results = { throughput, spooled, curve, latency, baseline, portalRssMb, pauseResume, mapChange, machine, profile, totalSeconds };
    process.stdout.write(o.json ? JSON.stringify(toJson(results, o)) + '\n' : toText(results, o));
  } finally {
    await group.stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  },
);
