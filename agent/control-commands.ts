/**
 * `portalctl pause|resume|status|reload`: the control plane from the command line. Each asks
 * this server's agent (ipc, in the run directory), one server's agent (`--server`, TCP) or every
 * agent of the map (`--cluster`, TCP, in parallel). Output is for people, `--json` for scripts;
 * exit status 0 when everything asked for was done, 1 when something failed (named on stderr).
 */
import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { parse } from 'yaml';
import type { PauseReply, ReloadReply } from '../src/protocol/control';
import { type AgentTarget, agentPause, agentReload, agentResume, agentStatus, askAgent, describeAgent, localAgent, remoteAgent } from '../src/agent/client';
import { FlotillaError } from '../src/errors';
import { DEFAULT_HEARTBEAT_MS } from '../src/map/types';
import { loadMap } from '../src/map/load';
import { handoverLines } from './handover-view';
import { describeNotIdle, formatStatus, notIdle, type NotIdle } from './status-view';
import { HEALTH_EXIT, healthExit, problemsOf } from '../src/agent/problems';
import { runTop } from './top';

/** Where the map is when neither --map nor $FLOTILLA_MAP says. */
export const DEFAULT_MAP_FILE = '/etc/flotilla/map.yaml';
/** How long `pause --wait` waits for idle unless --timeout says. */
export const DEFAULT_WAIT_S = 30;
/** An agent forwards a pause to its portals in parallel and waits up to a second for them; allow for that. */
const PAUSE_TIMEOUT_MS = 3000;

export interface TargetFlags {
  map?: string;
  runDir?: string;
  server?: string;
  cluster?: boolean;
  json?: boolean;
}

interface PauseFlags extends TargetFlags {
  wait?: boolean;
  timeout: number;
}

/** What portalctl needs of a map: enough to find the agents, even if the file was just broken. */
interface MapHints {
  runDir: string;
  servers: { name: string; host: string; agentPort: number | undefined }[];
}

const print = (s: string) => process.stdout.write(s + '\n');
const printJson = (v: unknown) => process.stdout.write(JSON.stringify(v, null, 2) + '\n');

/** Prints `error: ...` lines on stderr and makes the exit status 1. */
function fail(...messages: string[]): void {
  for (const m of messages) process.stderr.write(`error: ${m}\n`);
  process.exitCode = 1;
}

export const errorText = (err: unknown) => (err instanceof FlotillaError ? `${err.message} [${err.code}]` : String((err as Error).message ?? err));

/**
 * The map's run directory and agents. A map just edited into something invalid still names
 * them, and the operator needs the agents most then, so an invalid map is read leniently.
 */
function mapHints(file: string): MapHints {
  try {
    const m = loadMap(file);
    return { runDir: m.runDir, servers: m.servers };
  } catch (err) {
    let raw: { instance?: unknown; run_dir?: unknown; servers?: unknown };
    try {
      raw = parse(readFileSync(file, 'utf8')) as typeof raw;
    } catch {
      throw err;
    }
    const runDir = typeof raw?.run_dir === 'string' ? raw.run_dir : typeof raw?.instance === 'string' ? `/run/flotilla/${raw.instance}` : null;
    if (runDir === null || !Array.isArray(raw.servers)) throw err;
    const servers = (raw.servers as { name?: unknown; host?: unknown; agent_port?: unknown }[])
      .filter((s) => typeof s?.name === 'string' && typeof s.host === 'string')
      .map((s) => ({ name: s.name as string, host: s.host as string, agentPort: typeof s.agent_port === 'number' ? s.agent_port : undefined }));
    return { runDir, servers };
  }
}

/** The agents a command talks to: every one (--cluster), one server's (--server), or this server's. */
export function targetsOf(o: TargetFlags): AgentTarget[] {
  const file = o.map ?? process.env.FLOTILLA_MAP ?? DEFAULT_MAP_FILE;
  if (o.cluster) {
    const targets = mapHints(file).servers.map(remoteAgent).filter((t): t is AgentTarget => t !== null);
    if (targets.length === 0) throw new FlotillaError('CONFIG_INVALID', `no server in ${file} has an agent_port; --cluster reaches agents over TCP at their agent_port`);
    return targets;
  }
  if (o.server) {
    const hints = mapHints(file);
    const server = hints.servers.find((s) => s.name === o.server);
    if (!server) throw new FlotillaError('UNKNOWN_SERVER', `no server "${o.server}" in ${file} (servers: ${hints.servers.map((s) => s.name).join(', ')})`);
    const target = remoteAgent(server);
    if (!target) throw new FlotillaError('CONFIG_INVALID', `server ${o.server} has no agent_port in ${file}; on ${o.server} itself, run portalctl without --server`);
    return [target];
  }
  return [localAgent(o.runDir ?? mapHints(file).runDir)];
}

type Outcome<T> = { ok: true; target: AgentTarget; value: T } | { ok: false; target: AgentTarget; value?: undefined; error: unknown };

/** Runs `fn` against every target in parallel; a failure is kept with its target, not thrown. */
export function gather<T>(targets: AgentTarget[], fn: (t: AgentTarget) => Promise<T>): Promise<Outcome<T>[]> {
  return Promise.all(
    targets.map((target) =>
      fn(target).then(
        (value): Outcome<T> => ({ ok: true, target, value }),
        (error: unknown): Outcome<T> => ({ ok: false, target, error }),
      ),
    ),
  );
}

const nameOf = (o: Outcome<{ server: string }>) => o.value?.server ?? o.target.server ?? describeAgent(o.target);

function positiveSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a number of seconds above 0');
  return n;
}

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a whole number above 0');
  return n;
}

/** The options every control command takes. */
export function withTargetOptions(cmd: Command): Command {
  return cmd
    .option('-m, --map <file>', `map file (default $FLOTILLA_MAP, else ${DEFAULT_MAP_FILE})`)
    .option('--run-dir <dir>', "this server's run directory, where its agent listens (default the map's run_dir)")
    .option('--server <name>', "ask this server's agent, over TCP at its agent_port")
    .addOption(new Option('--cluster', 'ask every agent of the map (every server with an agent_port), in parallel').conflicts('server'))
    .option('--json', 'print the result as JSON');
}

export function addControlCommands(program: Command): void {
  withTargetOptions(
    program
      .command('status')
      .description(
        "show each portal of the server (or --cluster): what is wrong first, then state, epoch, rates, queues, slots, the host; exit status says whether it is healthy",
      ),
  )
    .option('--slots', 'also show every slot: pid, state, queue, in flight, processed, time per delivery')
    .addHelpText(
      'after',
      `
Exit status (a health check): 0 healthy (warnings allowed), 1 an agent did not answer, 2 usage,
and when something is wrong the lowest of: ${HEALTH_EXIT.dead} a portal or slot is dead, ${HEALTH_EXIT.missing} one is missing,
${HEALTH_EXIT.hold} buckets are held waiting for a release (or a map change waits for a server),
${HEALTH_EXIT.map} the last map edit was refused (or servers disagree on a map), ${HEALTH_EXIT.spool} a spool takes no records.

Examples:
  portalctl status
  portalctl status --slots
  portalctl status --cluster --json
`,
    )
    .action(async (o: TargetFlags & { slots?: boolean }) => {
      const results = await gather(targetsOf(o), (t) => agentStatus(t));
      if (o.json) printJsonResults(results, o.cluster);
      else {
        const blocks = results.flatMap((r) => (r.ok ? [formatStatus(r.value, { slots: o.slots })] : []));
        if (blocks.length > 0) print(blocks.join('\n\n'));
      }
      for (const r of results) if (!r.ok) fail(errorText(r.error));
      if (process.exitCode === undefined || process.exitCode === 0) process.exitCode = healthExit(results.flatMap((r) => (r.ok ? problemsOf(r.value) : [])));
    });

  withTargetOptions(
    program
      .command('top')
      .description('a live view of rates per server, stream and slot (the busiest slots first), redrawn every interval'),
  )
    .option('--interval <s>', 'seconds between frames', positiveSeconds, 1)
    .option('--count <n>', 'draw this many frames, then exit (default: until Ctrl-C)', positiveInteger)
    .addHelpText('after', '\nExamples:\n  portalctl top\n  portalctl top --cluster --interval 2\n')
    .action(async (o: TargetFlags & { interval: number; count?: number }) => {
      await runTop(targetsOf(o), { intervalMs: o.interval * 1000, count: o.count });
    });

  withTargetOptions(
    program
      .command('pause')
      .description('stop the portals taking new records (senders hold them); with --wait, return once every process is idle')
      .argument('[streams...]', 'streams to pause (default every stream of the map)'),
  )
    .option('--wait', 'wait until every portal and component of the paused streams is idle, showing who is not')
    .option('--timeout <s>', 'with --wait: give up after this many seconds, exit 1', positiveSeconds, DEFAULT_WAIT_S)
    .addHelpText('after', '\nExamples:\n  portalctl pause --wait\n  portalctl pause clicks --cluster --wait --timeout 60\n')
    .action(async (streams: string[], o: PauseFlags) => {
      const targets = targetsOf(o);
      const results = await gather(targets, (t) => agentPause(t, streams, PAUSE_TIMEOUT_MS));
      const ok = reportPause(results, 'paused', !o.json);
      if (o.wait && ok) await waitIdle(targets, streams, o.timeout, o.json ? pauseJson(results) : null);
      else if (o.json) printJson(pauseJson(results));
    });

  withTargetOptions(
    program
      .command('resume')
      .description('let the paused portals take records again; senders send what they held')
      .argument('[streams...]', 'streams to resume (default every stream of the map)'),
  )
    .addHelpText('after', '\nExamples:\n  portalctl resume\n  portalctl resume clicks --cluster\n')
    .action(async (streams: string[], o: TargetFlags) => {
      const results = await gather(targetsOf(o), (t) => agentResume(t, streams, PAUSE_TIMEOUT_MS));
      reportPause(results, 'resumed', !o.json);
      if (o.json) printJson(pauseJson(results));
    });

  withTargetOptions(
    program
      .command('reload')
      .description('make the agent read the map file now (it also does on every edit): a valid edit that raises the epoch is taken, anything else is rejected with every problem'),
  )
    .addHelpText('after', '\nExamples:\n  portalctl reload\n  portalctl reload --cluster --json\n')
    .action(async (o: TargetFlags) => {
      const results = await gather(targetsOf(o), (t) => agentReload(t));
      if (o.json) printJsonResults(results, o.cluster);
      for (const r of results) {
        if (!r.ok) fail(errorText(r.error));
        else if (!r.value.ok) fail(describeReload(r.value));
        else if (!o.json) print(describeReload(r.value));
      }
    });

  withTargetOptions(
    program
      .command('release')
      .argument('<stream>', 'the stream whose buckets are held')
      .requiredOption('--from <server>', 'the old owner whose word the hold waits for')
      .description(
        "end a hold without the old owner's word: the server's portal processes the held buckets at once. Only for an old owner that is gone for good or was removed from the map; see docs/operations.md",
      ),
  )
    .addHelpText('after', '\nExample:\n  portalctl release orders --from gamma --server beta\n')
    .action(async (stream: string, o: TargetFlags & { from: string }) => {
      const results = await gather(targetsOf(o), (t) => askAgent(t, { cmd: 'release', stream, from: o.from }));
      for (const r of results) {
        if (!r.ok) fail(errorText(r.error));
        else if (o.json) printJson(r.value);
        else print(`${nameOf(r)}: released the ${stream} buckets held for ${o.from} (${r.value.released} records waiting went to their slots)`);
      }
    });
}

/** --json: the agent's reply as it is, or with --cluster a list of replies (and errors). */
function printJsonResults(results: Outcome<{ server: string }>[], cluster: boolean | undefined): void {
  if (cluster) printJson(results.map((r) => (r.ok ? r.value : { server: nameOf(r), error: errorText(r.error) })));
  else if (results[0]!.value) printJson(results[0]!.value);
}

/** The agents' pause or resume replies for --json, with `{server, ok: false, error}` for one that did not answer. */
function pauseJson(results: Outcome<PauseReply>[]): unknown[] {
  return results.map((r) => (r.ok ? r.value : { server: nameOf(r), ok: false, error: errorText(r.error) }));
}

/** Prints what a pause or resume did (`human`: a line per server) and what failed; true if every portal did it. */
function reportPause(results: Outcome<PauseReply>[], done: string, human: boolean): boolean {
  let ok = true;
  for (const r of results) {
    if (!r.ok) {
      fail(errorText(r.error));
      ok = false;
      continue;
    }
    const good = r.value.results.filter((x) => x.ok).map((x) => x.stream);
    if (human && good.length > 0) print(`${r.value.server}: ${done} ${good.join(', ')}`);
    if (human) for (const line of handoverLines(r.value)) print(`${r.value.server}:${line}`);
    for (const x of r.value.results.filter((y) => !y.ok)) {
      fail(`${r.value.server}: ${x.error ?? `the ${x.stream} portal did not say it is ${done}`}${x.code ? ` [${x.code}]` : ''}`);
      ok = false;
    }
  }
  return ok;
}

function describeReload(r: ReloadReply): string {
  const waits = handoverLines(r);
  const tail = waits.length > 0 ? `\n${waits.join('\n')}` : '';
  if (r.outcome === 'applied') return `${r.server}: epoch ${r.epoch} taken (was ${r.from}); its portals switch once every server has it${tail}`;
  if (r.outcome === 'unchanged') return `${r.server}: no change; epoch ${r.epoch} in force${tail}`;
  const e = r.mapErrors!;
  return [`${r.server}: edit rejected; epoch ${r.epoch} stays in force. ${e.file}:`, ...e.problems.map((p) => `  ${p.path}: ${p.message}`)].join('\n');
}

/**
 * Polls the agents (every heartbeat/4, at least 50 ms) until every portal and component of
 * `streams` is paused and idle, showing who is not yet; exits 1 at the timeout naming them.
 * `json`: print the result as JSON, with these pause replies in it.
 */
async function waitIdle(targets: AgentTarget[], streams: string[], timeoutS: number, json: unknown[] | null): Promise<void> {
  const started = Date.now();
  const deadline = started + timeoutS * 1000;
  const progress = new Progress(process.stderr);
  let everyMs = Math.max(50, DEFAULT_HEARTBEAT_MS / 4);
  for (;;) {
    const results = await gather(targets, (t) => agentStatus(t, { fresh: true }));
    const waiting: Waiting[] = [];
    for (const r of results) {
      if (!r.ok) {
        waiting.push({ key: `${nameOf(r)} agent`, text: `${nameOf(r)}: agent not answering`, item: null });
        continue;
      }
      everyMs = Math.max(50, r.value.heartbeatMs / 4);
      for (const n of notIdle(r.value, streams)) waiting.push({ key: `${n.server}/${n.stream}/${n.slot}/${n.state}`, text: describeNotIdle(n), item: n });
    }
    const elapsed = ((Date.now() - started) / 1000).toFixed(1);
    if (waiting.length === 0) {
      progress.clear();
      const servers = results.map((r) => nameOf(r));
      if (json) printJson({ ok: true, idle: true, elapsedMs: Date.now() - started, servers, paused: json });
      else if (streams.length === 0) print(`idle after ${elapsed} s: every process of ${servers.join(', ')} is paused and idle`);
      // Only these streams were paused: the others may still run (and send records into these).
      else print(`idle after ${elapsed} s: every process of ${streams.join(', ')} on ${servers.join(', ')} is paused and idle; other streams were not paused`);
      return;
    }
    if (Date.now() >= deadline) {
      progress.clear();
      if (json) printJson({ ok: false, idle: false, elapsedMs: Date.now() - started, paused: json, notIdle: waiting.map((w) => w.item ?? w.text) });
      fail(`not idle after ${timeoutS} s: ${waiting.map((w) => w.text).join('; ')} [NOT_IDLE]`);
      return;
    }
    progress.show(waiting, elapsed);
    await new Promise((resolve) => setTimeout(resolve, Math.min(everyMs, Math.max(0, deadline - Date.now()))));
  }
}

interface Waiting {
  /** Who and in what state, without counts: a change of these is news, a change of counts is not. */
  key: string;
  text: string;
  item: NotIdle | null;
}

/** Progress of a wait: one line rewritten in place on a terminal, a line per change otherwise. */
class Progress {
  private lastKey = '';
  private shown = false;

  constructor(private readonly out: NodeJS.WriteStream) {}

  show(waiting: Waiting[], elapsed: string): void {
    const line = `not idle (${elapsed} s): ${waiting.map((w) => w.text).join('; ')}`;
    if (this.out.isTTY) {
      const width = (this.out.columns || 80) - 1;
      this.out.write(`\r\x1b[K${line.length > width ? line.slice(0, width - 1) + '…' : line}`);
      this.shown = true;
      return;
    }
    const key = waiting.map((w) => w.key).join('|');
    if (key === this.lastKey) return;
    this.lastKey = key;
    this.out.write(line + '\n');
  }

  clear(): void {
    if (this.shown) this.out.write('\r\x1b[K');
    this.shown = false;
  }
}
