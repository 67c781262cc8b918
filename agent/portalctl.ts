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
import { preloadHook } from './map-source';
import { addMapStoreCommands } from './map-store-commands';
import { addKeyCommands } from './keys-commands';
import { addWeightCommands } from './weights-commands';
import { addCancelCommand } from './cancel-command';
import { addConfigureCommand } from './configure-command';

const program = new Command('portalctl')
  .description(
    "Operate Flotilla: pause, resume and watch the portals through each server's agent; inspect map files and look keys up.",
  )
  .version(packageVersion(), '-V, --version')
  .option('--key <file>', "this operator's secret key file, for a map with keys (default $FLOTILLA_KEY)")
  .hook('preAction', (cmd) => {
    const key = cmd.opts<{ key?: string }>().key;
    if (key) process.env.FLOTILLA_KEY = key; // read when a TCP connection first needs it (src/transport/curve.ts)
  })
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
  portalctl keys generate alpha --dir /etc/flotilla/keys   a CURVE key pair: alpha.key (0600), alpha.pub
  portalctl map apply map.yaml --map etcd://10.0.0.5:2379/flotilla   write the next epoch into etcd (diff shown)
  portalctl map edit --map etcd://10.0.0.5:2379/flotilla             $EDITOR on the map in force in etcd
  portalctl status --cluster --map etcd://10.0.0.5:2379/flotilla     every server from etcd: leases, epochs, handovers

Environment:
  FLOTILLA_MAP      the map file (or etcd://HOST:PORT[,...]/PREFIX), when --map is not given
  FLOTILLA_KEY      this operator's secret key file, when --key is not given (a map with keys)

Exit status: 0 done; 1 a problem (printed on stderr, or as JSON with --json); 2 a usage error.`,
  );

addControlCommands(program);
addMapCommands(program);
// --- maps in etcd: map apply/get/edit, and an etcd --map read before any command
addMapStoreCommands(program.commands.find((c) => c.name() === 'map')!);
preloadHook(program);
addWeightCommands(program);
addCancelCommand(program);
addConfigureCommand(program);
addKeyCommands(program);

// A command is done when its action is: exit then, whatever a client library still holds open
// (the etcd client keeps dialing a member that is down after it is closed).
program.parseAsync().then(() => process.exit(), (err: unknown) => {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  die(err);
});
