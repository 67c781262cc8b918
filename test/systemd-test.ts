/**
 * The systemd unit templates pass `systemd-analyze verify` without a warning, and start the
 * commands the package installs.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

const ROOT = join(__dirname, '..', '..');
const units = readdirSync(join(ROOT, 'systemd')).filter((f) => f.endsWith('.service'));
const bins = Object.keys((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin);

test('there is a portal unit template', () => {
  assert.ok(units.includes('flotilla-portal@.service'), units.join(', '));
});

for (const unit of units) {
  test(`${unit} passes systemd-analyze verify with no warnings`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'flt-unit-'));
    const instance = unit.replace('@.service', '@clicks.service');
    copyFileSync(join(ROOT, 'systemd', unit), join(dir, instance));
    const r = spawnSync('systemd-analyze', ['verify', join(dir, instance)], { encoding: 'utf8' });
    assert.equal(r.error, undefined, `systemd-analyze could not run: ${String(r.error)}`);
    const ours = r.stderr.split('\n').filter((l) => l.includes(instance) || l.includes(dir));
    assert.deepEqual(ours, [], r.stderr);
    assert.equal(r.status, 0, r.stderr);
  });

  test(`${unit} starts a command the package installs`, () => {
    const exec = /^ExecStart=(.*)$/m.exec(readFileSync(join(ROOT, 'systemd', unit), 'utf8'))?.[1] ?? '';
    assert.ok(bins.some((b) => exec.split(/\s+/).includes(b)), `ExecStart "${exec}" runs none of ${bins.join(', ')}`);
  });
}
