/**
 * The unit files of systemd/ as an operator installs them and as systemd reads them: installed
 * for an instance (the portal and component templates copied under the instance's name), and
 * one unit's settings with its specifiers (%i, %j, %p) resolved, so a test can start the
 * processes exactly as the unit would: ExecStart, EnvironmentFile=, Environment=.
 */
import { copyFileSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** Copies the shipped units into `dest` as installed for `instance` (INSTANCE in a name becomes it). */
export function installUnits(src: string, dest: string, instance: string): void {
  for (const f of readdirSync(src)) copyFileSync(join(src, f), join(dest, f.replace('INSTANCE', instance)));
}

/** One unit's settings, specifiers resolved. */
export interface UnitSettings {
  /** The last value of `key` (systemd's rule for single-valued settings). */
  get(key: string): string | undefined;
  /** Every value of `key`, in order. */
  all(key: string): string[];
  /** ExecStart split into words. */
  exec: string[];
  environmentFiles: string[];
  /** Environment= assignments. */
  environment: Record<string, string>;
}

/** Reads unit `name` (e.g. flotilla-portal-prod@clicks.service) from `dir`, as systemd would resolve it. */
export function unitSettings(dir: string, name: string): UnitSettings {
  const m = /^([^@]+)@([^.]*(?:\.[^.]+)*?)\.(service|target)$/.exec(name);
  if (!m) throw new Error(`not a template instance: ${name}`);
  const [, prefix, inst, type] = m as unknown as [string, string, string, string];
  const text = readFileSync(join(dir, `${prefix}@.${type}`), 'utf8');
  const j = prefix.includes('-') ? prefix.slice(prefix.lastIndexOf('-') + 1) : prefix;
  const resolve = (v: string) => v.replace(/%([%ijpn])/g, (_, c: string) => ({ '%': '%', i: inst, j, p: prefix, n: name })[c]!);
  const values = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (!kv) continue;
    const list = values.get(kv[1]!) ?? [];
    list.push(resolve(kv[2]!));
    values.set(kv[1]!, list);
  }
  const all = (key: string) => values.get(key) ?? [];
  const environment: Record<string, string> = {};
  for (const e of all('Environment')) for (const pair of e.split(/\s+/)) environment[pair.slice(0, pair.indexOf('='))] = pair.slice(pair.indexOf('=') + 1);
  return {
    get: (key) => all(key).at(-1),
    all,
    exec: (all('ExecStart').at(-1) ?? '').split(/\s+/).filter((w) => w !== ''),
    environmentFiles: all('EnvironmentFile').map((f) => f.replace(/^-/, '')),
    environment,
  };
}

/** Reads an env file (KEY=value lines, # comments) as systemd's EnvironmentFile= does for simple values. */
export function readEnvFile(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const kv = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (kv) out[kv[1]!] = kv[2]!.replace(/^"(.*)"$/, '$1');
  }
  return out;
}
