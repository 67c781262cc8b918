#!/usr/bin/env node
/**
 * portal-exec: runs any program as the component of one slot, speaking JSON lines over its
 * stdin and stdout, so components can be written in any language (docs/components.md). Wiring
 * and lifecycle only; the logic is src/component/exec.ts.
 */
import { resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { ExecComponent } from '../src/component/exec';
import { FlotillaError } from '../src/errors';
import { createLogger } from '../src/log';
import { MAP_FILE_SETTLE_MS, openMap } from '../src/map/open';
import { isEtcdSource } from '../src/map/store';
import { serverOf, slotCount, streamOf } from '../src/map/lookup';
import { die, runDaemon, warnPrivateTmp, whichServer } from '../daemon/process';
import { packageVersion } from '../daemon/version';

const program = new Command('portal-exec')
  .description('Run a program as the component of one slot: records go to its stdin as JSON lines, it answers with ack and emit lines on stdout.')
  .version(packageVersion(), '-V, --version')
  .requiredOption('-m, --map <file|etcd-url>', 'map file (YAML or JSON), or etcd://HOST:PORT[,HOST:PORT...]/PREFIX', process.env.FLOTILLA_MAP)
  .option('-s, --stream <name>', 'stream whose slot this is (default from $FLOTILLA_UNIT_SLOT)')
  .option('--slot <n>', 'slot number, 0 to slots - 1 (default from $FLOTILLA_UNIT_SLOT)', slotNumber)
  .option('--server <name>', "this server's name in the map (default $FLOTILLA_SERVER, else the host name)")
  .option('--run-dir <dir>', "directory of the portal's ipc sockets (default the map's run_dir)")
  .option('--cancel-lines', 'write a {"cancel": {"roots": [...]}} line to the program when a cancellation arrives (docs/components.md)')
  .argument('[command...]', 'the program and its arguments, after -- (default $FLOTILLA_COMPONENT_<STREAM>)')
  .passThroughOptions()
  .addHelpText(
    'after',
    `
Environment (the flotilla-component-INSTANCE@STREAM.SLOT unit sets them):
  FLOTILLA_MAP                 the map file (or etcd://HOST:PORT[,...]/PREFIX), when --map is not given
  FLOTILLA_SERVER              this server's name in the map, when --server is not given
  FLOTILLA_UNIT_SLOT           STREAM.SLOT, when --stream and --slot are not given
  FLOTILLA_COMPONENT_<STREAM>  the program to run when none follows --, split at spaces; the
                               stream's name in upper case, "-" as "_" (FLOTILLA_COMPONENT_CLICKS)
  FLOTILLA_LOG_LEVEL           trace, debug, info (default), warn, error

Signals:
  SIGHUP                       ignored (logged)
  SIGTERM, SIGINT              stop: the program gets SIGTERM, in-flight records are not acked

Example:
  portal-exec --map /etc/flotilla/map.yaml --stream clicks --slot 0 -- python3 /opt/clicks/count.py
`,
  )
  .showHelpAfterError();

function slotNumber(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a whole number from 0');
  return n;
}

/** --stream and --slot, else $FLOTILLA_UNIT_SLOT ("clicks.0", as the component unit's instance names it). */
function slotOf(stream: string | undefined, slot: number | undefined, env: string | undefined): { stream: string; slot: number } {
  if (stream !== undefined && slot !== undefined) return { stream, slot };
  const m = env ? /^(.+)\.(\d+)$/.exec(env) : null;
  if (stream === undefined && slot === undefined && m) return { stream: m[1]!, slot: Number(m[2]) };
  if (env && !m) throw new FlotillaError('CONFIG_INVALID', `FLOTILLA_UNIT_SLOT="${env}": must be STREAM.SLOT, like clicks.0`);
  throw new FlotillaError('CONFIG_INVALID', 'give --stream and --slot, or set FLOTILLA_UNIT_SLOT=STREAM.SLOT');
}

/** The program of a stream's components from $FLOTILLA_COMPONENT_<STREAM>, split at spaces. */
function commandOf(stream: string, env: NodeJS.ProcessEnv): string[] {
  const name = `FLOTILLA_COMPONENT_${stream.toUpperCase().replace(/-/g, '_')}`;
  const words = (env[name] ?? '').split(/\s+/).filter((w) => w !== '');
  if (words.length === 0) throw new FlotillaError('CONFIG_INVALID', `no program to run: give it after --, or set ${name}`);
  return words;
}

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<{ map: string; stream?: string; slot?: number; server?: string; runDir?: string; cancelLines?: boolean }>();
  const { stream, slot } = slotOf(o.stream, o.slot, process.env.FLOTILLA_UNIT_SLOT);
  const command = program.args.length > 0 ? program.args : commandOf(stream, process.env);
  // A map file being written is waited for, as the agent and portal do (src/map/open.ts).
  const keeper = await openMap(isEtcdSource(o.map) ? o.map : resolve(o.map), { settleMs: MAP_FILE_SETTLE_MS, log: createLogger('portal-exec', { stream, slot }) });
  const map = keeper.map;
  const server = whichServer(map, o.server);
  const slots = slotCount(serverOf(map, server), streamOf(map, stream));
  if (slot >= slots) throw new FlotillaError('CONFIG_INVALID', `--slot ${slot}: stream ${stream} has slots 0 to ${slots - 1} on server ${server}`);
  const log = createLogger('portal-exec', { stream, slot, server });
  warnPrivateTmp(log, o.runDir ?? map.runDir);
  const exec = new ExecComponent({ map: keeper, server, stream, slot, runDir: o.runDir, command, log, cancelLines: o.cancelLines === true });
  await runDaemon(`portal-exec ${stream}/${slot}`, log, {
    start: () => exec.start(),
    stop: () => exec.stop(),
    status: () => `slot ${slot} of ${stream}, epoch ${keeper.map.epoch}: ${command.join(' ')}`,
  });
}

main().catch((err: unknown) => die(err));
