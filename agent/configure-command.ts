/**
 * `portalctl configure`: gives a stream's components a configuration at run time (the management
 * bus), through this server's agent, one server's (`--server`) or every agent of the map
 * (`--cluster`, with one version everywhere), and says which live components took it, which
 * rejected it and why, and which did not answer. Exit status 1 unless every live component took it.
 *
 *   portalctl --configure--> agent (keeps it) --> portal --CONFIGURE--> components
 */
import { readFileSync } from 'node:fs';
import { type Command, CommanderError, InvalidArgumentError } from 'commander';
import { agentConfigure, askAgent, type AgentTarget } from '../src/agent/client';
import { FlotillaError } from '../src/errors';
import { type Config, type ConfigureReply, DEFAULT_CONFIGURE_WAIT_MS, parseSetValue } from '../src/protocol/configure';
import { errorText, gather, type TargetFlags, targetsOf, withTargetOptions } from './control-commands';

/** How long configure waits for the components' answers unless --timeout says, s. */
export const DEFAULT_CONFIGURE_TIMEOUT_S = DEFAULT_CONFIGURE_WAIT_MS / 1000;

interface ConfigureFlags extends TargetFlags {
  slot?: number;
  set: string[];
  file?: string;
  timeout: number;
}

const print = (s: string) => process.stdout.write(s + '\n');

function fail(message: string): void {
  process.stderr.write(`error: ${message}\n`);
  process.exitCode = 1;
}

/** `key=value`, collected: the value as JSON where it parses, else as text. */
function setPair(pair: string, previous: string[]): string[] {
  if (!/^[^=]+=/.test(pair)) throw new InvalidArgumentError(`"${pair}" is not key=value`);
  return [...previous, pair];
}

function slotNumber(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a whole number >= 0');
  return n;
}

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 600) throw new InvalidArgumentError('must be a number of seconds above 0, at most 600');
  return n;
}

/** The configuration the flags give, and whether it merges into the current one (--set) or replaces it (--file). */
export function configOf(o: Pick<ConfigureFlags, 'set' | 'file'>): { config: Config; merge: boolean } {
  if (o.set.length > 0 === (o.file !== undefined)) throw new CommanderError(2, 'portalctl.usage', 'error: give either --set key=value (one or more) or --file FILE');
  if (o.file === undefined) {
    const config: Config = {};
    for (const pair of o.set) {
      const at = pair.indexOf('=');
      config[pair.slice(0, at)] = parseSetValue(pair.slice(at + 1));
    }
    return { config, merge: true };
  }
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(o.file, 'utf8'));
  } catch (err) {
    throw new FlotillaError('CONFIG_INVALID', `${o.file}: not a JSON file (${(err as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new FlotillaError('CONFIG_INVALID', `${o.file}: a configuration must be a JSON object`);
  return { config: v as Config, merge: false };
}

export function addConfigureCommand(program: Command): void {
  withTargetOptions(
    program
      .command('configure')
      .argument('<stream>', 'the stream whose components get the configuration')
      .description(
        "give a stream's running components a configuration (the management bus): versioned, kept by the agent for components that start later, and acknowledged; exit 1 unless every live component took it",
      ),
  )
    .option('--slot <n>', 'only this slot (on each server asked)', slotNumber)
    .option('--set <key=value>', 'set a key (repeatable); the value is JSON where it parses, else text; merged into the current configuration', setPair, [])
    .option('--file <conf.json>', 'the whole configuration, a JSON object (replaces the current one)')
    .option('--timeout <s>', 'how long to wait for the live components to answer', seconds, DEFAULT_CONFIGURE_TIMEOUT_S)
    .addHelpText(
      'after',
      `
Examples:
  portalctl configure search --set chunk_size=64 --set cache=false
  portalctl configure search --slot 2 --set verbose=true
  portalctl configure search --file search.json --cluster --json
`,
    )
    .action(async (stream: string, o: ConfigureFlags) => {
      let parsed: ReturnType<typeof configOf>;
      try {
        parsed = configOf(o);
      } catch (err) {
        if (err instanceof CommanderError) process.stderr.write(`${err.message}\n`);
        throw err;
      }
      const { config, merge } = parsed;
      let targets = targetsOf(o);
      let version: number | undefined;
      if (o.cluster) {
        // One version on every server: above the highest any agent has for the stream.
        const known = await gather(targets, (t) => askAgent(t, { cmd: 'configs' }));
        for (const k of known) if (!k.ok) fail(`${errorText(k.error)}; not configured there`);
        targets = known.filter((k) => k.ok).map((k) => k.target);
        version = 1 + Math.max(0, ...known.flatMap((k) => (k.ok ? k.value.streams.filter((s) => s.stream === stream).map((s) => s.version) : [])));
      }
      const request = { stream, config, merge, timeoutMs: Math.round(o.timeout * 1000), ...(o.slot === undefined ? {} : { slot: o.slot }), ...(version ? { version } : {}) };
      const results = await gather(targets, (t: AgentTarget) => agentConfigure(t, request));
      if (o.json) print(JSON.stringify(results.map((r) => (r.ok ? r.value : { server: r.target.server, ok: false, error: errorText(r.error) })), null, 2));
      for (const r of results) {
        if (!r.ok) fail(errorText(r.error));
        else report(r.value, !o.json, o.timeout);
      }
    });
}

/** Prints what one server's components did with the version (`human`: the lines for people); failures on stderr. */
function report(r: ConfigureReply, human: boolean, timeoutS: number): void {
  const where = `${r.server}: ${r.stream}`;
  if (r.unconfirmed !== undefined) return fail(`${where} configuration version ${r.version} not confirmed: ${r.unconfirmed}`);
  const taken = r.slots.filter((s) => s.outcome === 'taken').map((s) => s.slot);
  if (human) print(`${where} configuration version ${r.version}${r.slot === null ? '' : ` (slot ${r.slot})`}: ${JSON.stringify(r.config)}`);
  if (human && taken.length > 0) print(`${where} taken by slot${taken.length === 1 ? '' : 's'} ${taken.join(' ')}`);
  for (const s of r.slots) {
    const who = `${where} slot ${s.slot}${s.pid > 0 ? ` (pid ${s.pid})` : ''}`;
    const runs = s.running === null ? '' : `; it runs version ${s.running}`;
    if (s.outcome === 'rejected') fail(`${who} rejected version ${r.version}: ${s.reason}${runs} [CONFIG_REJECTED]`);
    else if (s.outcome === 'not-taken') fail(`${who} did not take version ${r.version} within ${timeoutS} s${runs} [CONFIG_NOT_TAKEN]`);
    else if (s.outcome === 'not-running' && human) print(`${who} has no live component; it gets version ${r.version} when one registers`);
  }
}
