/**
 * `portalctl keys generate NAME [--dir DIR]`: a CURVE key pair for a server, an operator or a
 * sender. NAME.key holds the secret (mode 0600, for that process's `--key`); NAME.pub the public
 * key, which goes into the map (a server's public_key, or an entry of operators or senders).
 */
import { mkdirSync } from 'node:fs';
import type { Command } from 'commander';
import { writeKeyPair } from '../src/transport/keys';

export function addKeyCommands(program: Command): void {
  const keys = program.command('keys').description('make CURVE key pairs for servers, operators and senders (docs/security.md)');
  keys
    .command('generate')
    .description('write NAME.key (the secret, mode 0600) and NAME.pub (the public key, for the map); an existing key is never overwritten')
    .argument('<name>', 'whose key: a server of the map, an operator or a sender')
    .option('--dir <dir>', 'directory to write the two files in', '.')
    .option('--json', 'print the files and the public key as JSON')
    .action((name: string, o: { dir: string; json?: boolean }) => {
      mkdirSync(o.dir, { recursive: true, mode: 0o700 });
      const made = writeKeyPair(o.dir, name);
      if (o.json) {
        process.stdout.write(JSON.stringify({ name, ...made }, null, 2) + '\n');
        return;
      }
      process.stdout.write(
        `${made.secretFile}: the secret key (mode 0600); give it to ${name}'s processes only (--key, or FLOTILLA_KEY)\n` +
          `${made.publicFile}: the public key, for the map:\n` +
          `    public_key: "${made.publicKey}"   (a server's, or an entry of operators: / senders:)\n`,
      );
    });
}
