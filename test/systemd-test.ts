/**
 * The unit set (systemd/): an instance target, the agent as an instance template, and the
 * portal and component templates installed once per instance. Each unit, installed as an
 * operator would (the per-instance copies named for instance "prod"), passes
 * `systemd-analyze verify` without a warning, and every service scores below 5.0 in
 * `systemd-analyze security`, runs a command the package installs, is Type=notify with a
 * watchdog, sets LimitNOFILE, keeps its run directory under /run, and is part of its instance's
 * target. How the processes start from these units is tested in two-instances-test.ts.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { installUnits, unitSettings } from './support/units';

const ROOT = join(__dirname, '..', '..');
const shipped = readdirSync(join(ROOT, 'systemd'));
const bins = Object.keys((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin);
const dir = mkdtempSync(join(tmpdir(), 'flt-units-'));
installUnits(join(ROOT, 'systemd'), dir, 'prod');

/** Each unit as an operator starts it, instance "prod". */
const UNITS = ['flotilla@prod.target', 'flotilla-agent@prod.service', 'flotilla-portal-prod@clicks.service', 'flotilla-component-prod@clicks.0.service'];
const SERVICES = UNITS.filter((u) => u.endsWith('.service'));
const env = { ...process.env, SYSTEMD_UNIT_PATH: `${dir}:` };

test('the package ships the target, the agent, the portal and the component templates', () => {
  assert.deepEqual(shipped.sort(), ['flotilla-agent@.service', 'flotilla-component-INSTANCE@.service', 'flotilla-portal-INSTANCE@.service', 'flotilla@.target']);
});

for (const unit of UNITS) {
  test(`${unit} passes systemd-analyze verify with no warnings`, () => {
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', unit], { encoding: 'utf8', env });
    assert.equal(r.error, undefined, `systemd-analyze could not run: ${String(r.error)}`);
    assert.equal(r.stderr.trim(), '', r.stderr);
    assert.equal(r.status, 0, r.stderr);
  });
}

for (const unit of SERVICES) {
  test(`${unit} scores below 5.0 in systemd-analyze security`, () => {
    const r = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', unit], { encoding: 'utf8', env });
    const m = /Overall exposure level for \S+: (\d+\.\d+)/.exec(r.stdout);
    assert.ok(m, `no score in:\n${r.stdout}\n${r.stderr}`);
    assert.ok(Number(m[1]) < 5.0, `exposure ${m[1]}:\n${r.stdout}`);
  });

  test(`${unit}: notify with a watchdog, LimitNOFILE, a run dir under /run, part of its instance`, () => {
    const s = unitSettings(dir, unit);
    assert.ok(bins.includes(s.exec[1]!), `ExecStart ${s.exec.join(' ')} runs none of ${bins.join(', ')}`);
    assert.equal(s.get('Type'), 'notify');
    assert.equal(s.get('NotifyAccess'), 'main', 'notifications come from the main process itself, no helper process');
    assert.match(s.get('WatchdogSec') ?? '', /^\d+s$/);
    // One number (soft = hard), high enough that the connection caps, set below it, refuse a
    // flood of connections before libzmq runs out of descriptors and aborts (docs/security.md).
    assert.match(s.get('LimitNOFILE') ?? '', /^\d+$/, 'LimitNOFILE is one number');
    assert.ok(Number(s.get('LimitNOFILE')) >= 16384, `LimitNOFILE ${s.get('LimitNOFILE')} is at least 16384`);
    assert.equal(s.get('RuntimeDirectory'), 'flotilla/prod');
    assert.equal(s.get('PartOf'), 'flotilla@prod.target');
    assert.equal(s.get('WantedBy'), 'flotilla@prod.target');
    assert.deepEqual(s.environmentFiles, ['/etc/flotilla/prod.env']);
  });
}

test('the target starts the agent; portals drain up to 20 s, so stop waits 30 s', () => {
  assert.ok(unitSettings(dir, 'flotilla@prod.target').all('Wants').includes('flotilla-agent@prod.service'));
  assert.equal(unitSettings(dir, 'flotilla-portal-prod@clicks.service').get('TimeoutStopSec'), '30s');
  assert.equal(unitSettings(dir, 'flotilla-agent@prod.service').get('ExecReload'), '/bin/kill -HUP $MAINPID');
});

test('a second instance gets its own units: another env file, run dir and state dir', () => {
  const other = mkdtempSync(join(tmpdir(), 'flt-units-'));
  installUnits(join(ROOT, 'systemd'), other, 'dev');
  copyFileSync(join(dir, 'flotilla-portal-prod@.service'), join(other, 'flotilla-portal-prod@.service'));
  const dev = unitSettings(other, 'flotilla-portal-dev@clicks.service');
  const prod = unitSettings(other, 'flotilla-portal-prod@clicks.service');
  assert.deepEqual(dev.environmentFiles, ['/etc/flotilla/dev.env']);
  assert.equal(dev.get('RuntimeDirectory'), 'flotilla/dev');
  assert.equal(dev.get('StateDirectory'), 'flotilla/dev');
  assert.equal(prod.get('StateDirectory'), 'flotilla/prod');
});
