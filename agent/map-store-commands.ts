/**
 * `portalctl map apply|get|edit`: the map in force in etcd. `apply FILE` validates the file as
 * `map check` does, shows what it moves against the map in force (as `map diff`), and writes it
 * only as the next epoch and only if nobody wrote in between (src/map/apply.ts); `--yes` for
 * scripts, else it asks on a terminal and refuses without one. `get` prints the map in force as
 * YAML; `edit` opens $EDITOR on it and applies the result the same way.
 *
 * Exit status: 0 written (or nothing to do), 1 refused or failed (every problem on stderr).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { parse, stringify } from 'yaml';
import { FlotillaError, MapInvalidError } from '../src/errors';
import { commitApply, planApply } from '../src/map/apply';
import { shortDigest } from '../src/map/digest';
import { isEtcdSource, parseEtcdSource } from '../src/map/store';
import { etcdAt, readMapRecord } from '../src/map/store-etcd';
import { errorText } from './control-commands';
import { printDiff } from './map-commands';
import { sourceOf } from './map-source';

interface StoreFlags {
  map?: string;
  yes?: boolean;
}

const print = (s: string) => process.stdout.write(s + '\n');

/** Prints `error: ...` lines and exits 1. */
function die1(...messages: string[]): never {
  for (const m of messages) process.stderr.write(`error: ${m}\n`);
  process.exit(1);
}

/** The etcd store a command writes to; a file map is refused with what to do instead. */
function etcdOf(o: StoreFlags) {
  const source = sourceOf(o.map);
  if (!isEtcdSource(source)) die1(`${source} is a map file: install the file on every server and run portalctl reload; map apply, get and edit work on an etcd map (--map etcd://HOST:PORT/PREFIX)`);
  let parsed;
  try {
    parsed = parseEtcdSource(source);
  } catch (err) {
    die1(errorText(err));
  }
  return { source, ...etcdAt(parsed) };
}

/** Asks on the terminal; refuses without one (a script must say --yes). */
async function confirm(question: string, yes: boolean | undefined): Promise<boolean> {
  if (yes) return true;
  if (!process.stdin.isTTY) die1('not written: no terminal to ask on; give --yes to write without asking');
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

/** Validates, shows the diff, asks, writes: the one path of `apply` and `edit`. */
async function applyText(o: StoreFlags, text: string, file: string, revision?: string): Promise<void> {
  const { source, client, keys } = etcdOf(o);
  try {
    let plan;
    try {
      plan = await planApply(client, keys, source, text, file, revision);
    } catch (err) {
      if (err instanceof MapInvalidError) die1(`not written: ${err.message}`);
      throw err;
    }
    if (plan.diff) printDiff(plan.diff);
    else print(`no map in force under ${source} yet: epoch ${plan.map.epoch} will be the first`);
    if (plan.current && plan.current.digest === plan.map.digest) {
      print('the map in force is this map already; nothing written');
      return;
    }
    if (plan.problems.length > 0) die1(`not written: ${plan.problems.length} problem${plan.problems.length === 1 ? '' : 's'}:`, ...plan.problems);
    if (!(await confirm(`write epoch ${plan.map.epoch} to ${source}?`, o.yes))) die1('not written');
    await commitApply(client, keys, plan);
    print(`written: epoch ${plan.map.epoch} (map ${shortDigest(plan.map.digest)}) is the map in force under ${source}; the agents carry their portals to it`);
  } catch (err) {
    die1(errorText(err));
  } finally {
    client.close();
  }
}

export function addMapStoreCommands(map: Command): void {
  map
    .command('apply')
    .description('write a map file into etcd as the map in force: checked, its diff shown, only as the next epoch, only if nobody wrote in between')
    .argument('<file>', 'map file (YAML or JSON)')
    .option('-m, --map <etcd-url>', 'etcd://HOST:PORT[,HOST:PORT...]/PREFIX (default $FLOTILLA_MAP)')
    .option('-y, --yes', 'write without asking (scripts)')
    .action(async (file: string, o: StoreFlags) => {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        die1(`cannot read ${file}: ${(err as Error).message}`);
      }
      await applyText(o, text, file);
    });

  map
    .command('get')
    .description('print the map in force in etcd, as YAML')
    .option('-m, --map <etcd-url>', 'etcd://HOST:PORT[,HOST:PORT...]/PREFIX (default $FLOTILLA_MAP)')
    .action(async (o: StoreFlags) => {
      const { source, client, keys } = etcdOf(o);
      try {
        const { record } = await readMapRecord(client, keys);
        if (!record) die1(`no map in force under ${source} yet; write one with portalctl map apply FILE`);
        process.stdout.write(asYaml(record.text));
      } catch (err) {
        die1(err instanceof FlotillaError ? errorText(err) : `cannot read ${source}: ${(err as Error).message}`);
      } finally {
        client.close();
      }
    });

  map
    .command('edit')
    .description('open $EDITOR on the map in force in etcd and apply the result as map apply does')
    .option('-m, --map <etcd-url>', 'etcd://HOST:PORT[,HOST:PORT...]/PREFIX (default $FLOTILLA_MAP)')
    .option('-y, --yes', 'write without asking (scripts)')
    .action(async (o: StoreFlags) => {
      const { source, client, keys } = etcdOf(o);
      let read;
      try {
        read = await readMapRecord(client, keys);
      } catch (err) {
        die1(`cannot read ${source}: ${(err as Error).message}`);
      } finally {
        client.close();
      }
      if (!read.record) die1(`no map in force under ${source} yet; write one with portalctl map apply FILE`);
      const dir = mkdtempSync(join(tmpdir(), 'portalctl-edit-'));
      const file = join(dir, 'map.yaml');
      try {
        const before = asYaml(read.record.text);
        writeFileSync(file, before);
        const editor = process.env.VISUAL ?? process.env.EDITOR ?? 'vi';
        const r = spawnSync('/bin/sh', ['-c', `${editor} "$1"`, 'editor', file], { stdio: 'inherit' });
        if (r.status !== 0) die1(`${editor} exited with ${r.status ?? r.signal}; nothing written`);
        const after = readFileSync(file, 'utf8');
        if (after === before) {
          print('no change; nothing written');
          return;
        }
        await applyText(o, after, file, read.revision);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
}

/** A map text as YAML (a map applied as JSON is converted; YAML is kept as written, comments too). */
function asYaml(text: string): string {
  return text.trimStart().startsWith('{') ? stringify(parse(text)) : text;
}
