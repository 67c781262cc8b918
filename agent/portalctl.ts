#!/usr/bin/env node
/**
 * portalctl: the operator's command line. Human-readable output by default, --json for scripts;
 * exit status 0 on success, 1 on a problem (printed on stderr), 2 on a usage error.
 */
import { Command, CommanderError } from 'commander';
import { die } from '../daemon/process';
import { packageVersion } from '../daemon/version';
import { addControlCommands } from './control-commands';
import { addMapCommands } from './map-commands';
import { addWeightCommands } from './weights-commands';
import { addCancelCommand } from './cancel-command';
import { addConfigureCommand } from './configure-command';

const program = new Command('portalctl')
  .description(
    "Operate Flotilla: pause, resume and watch the portals through each server's agent; inspect map files and look keys up.",
  )
  .version(packageVersion(), '-V, --version')
  .showHelpAfterError()
  .exitOverride()
  .addHelpText(
    'after',
    `
Examples:
  portalctl status                              this server: each portal, its state, rates, queues, slots
  portalctl status --cluster --json             every server of the map, as JSON
  portalctl pause --wait                        pause every stream here, return once everything is idle
  portalctl pause --cluster --wait --timeout 60 the same on every server; exit 1 after 60 s if not idle
  portalctl resume --cluster                    take records again everywhere
  portalctl reload                              read the map file again now (the agent also does on every edit)
  portalctl map check config/demo.yaml
  portalctl map lookup config/demo.yaml clicks user-42
  portalctl map diff /etc/flotilla/map.yaml map.new.yaml --json
  portalctl weights --suggest                   weights for the map from the measured rates (nothing changed)
  portalctl buckets --hot                       the heaviest buckets and their owners
  portalctl map schema > map.schema.json        the map's JSON Schema, for an editor
  portalctl cancel requests ROOT_ID --ttl 10m   drop every record derived from ROOT_ID, on every server
  portalctl configure search --set cache=false  give the stream's running components a configuration

Environment:
  FLOTILLA_MAP      the map file, when --map is not given

Exit status: 0 done; 1 a problem (printed on stderr, or as JSON with --json); 2 a usage error.`,
  );

addControlCommands(program);
addMapCommands(program);
addWeightCommands(program);
addCancelCommand(program);
addConfigureCommand(program);

program.parseAsync().catch((err: unknown) => {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  die(err);
});
