#!/usr/bin/env node
/**
 * portalctl: the operator's command line. Human-readable output by default, --json for scripts;
 * exit status 0 on success, 1 on a problem (printed on stderr), 2 on a usage error.
 */
import { Command, CommanderError } from 'commander';
import { die } from '../src/cli/common';
import { addMapCommands } from './map-commands';

const program = new Command('portalctl')
  .description('Operate Flotilla portals: inspect map files and look keys up.')
  .showHelpAfterError()
  .exitOverride()
  .addHelpText(
    'after',
    `
Examples:
  portalctl map check config/demo.yaml
  portalctl map lookup config/demo.yaml clicks user-42
  portalctl map diff /etc/flotilla/map.yaml map.new.yaml --json`,
  );

addMapCommands(program);

try {
  program.parse();
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  die(err);
}
