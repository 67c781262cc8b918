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
import { MapKeeper } from '../src/map/keeper';
import { serverOf, slotCount, streamOf } from '../src/map/lookup';
import { die, runDaemon, whichServer } from '../daemon/process';

const program = new Command('portal-exec')
  .description('Run a program as the component of one slot: records go to its stdin as JSON lines, it answers with ack and emit lines on stdout.')
  .requiredOption('-m, --map <file>', 'map file (YAML or JSON)', process.env.FLOTILLA_MAP)
  .requiredOption('-s, --stream <name>', 'stream whose slot this is')
  .requiredOption('--slot <n>', 'slot number, 0 to slots - 1', slotNumber)
  .option('--server <name>', "this server's name in the map (default $FLOTILLA_SERVER, else the host name)")
  .option('--run-dir <dir>', "directory of the portal's ipc sockets (default the map's run_dir)")
  .argument('<command...>', 'the program and its arguments, after --')
  .passThroughOptions()
  .addHelpText('after', '\nExample:\n  portal-exec --map /etc/flotilla/map.yaml --stream clicks --slot 0 -- python3 /opt/clicks/count.py\n')
  .showHelpAfterError();

function slotNumber(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a whole number from 0');
  return n;
}

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<{ map: string; stream: string; slot: number; server?: string; runDir?: string }>();
  const command = program.args;
  const keeper = new MapKeeper(resolve(o.map));
  const map = keeper.map;
  const server = whichServer(map, o.server);
  const slots = slotCount(serverOf(map, server), streamOf(map, o.stream));
  if (o.slot >= slots) throw new FlotillaError('CONFIG_INVALID', `--slot ${o.slot}: stream ${o.stream} has slots 0 to ${slots - 1} on server ${server}`);
  const log = createLogger('portal-exec', { stream: o.stream, slot: o.slot, server });
  const exec = new ExecComponent({ map: keeper, server, stream: o.stream, slot: o.slot, runDir: o.runDir, command, log });
  await runDaemon(`portal-exec ${o.stream}/${o.slot}`, log, exec);
}

main().catch((err: unknown) => die(err));
