/**
 * `portalctl cancel STREAM ROOT_ID [--ttl 10m]`: cancels every record derived from a root on
 * every server of the map (docs/operations.md, "Cancelling a request"). A command that changes
 * something: each agent keeps the cancellation on disk and its portals drop the root's records.
 *
 *   portalctl cancel --{"cmd":"cancel"}--> every agent (src/sender/cancel.ts) --> their portals
 */
import { type Command, InvalidArgumentError } from 'commander';
import { localAgent } from '../src/agent/client';
import { MAX_CANCEL_TTL_MS } from '../src/protocol/cancel';
import { agentsOf, cancelEverywhere } from '../src/sender/cancel';
import { DEFAULT_MAP_FILE, errorText, targetsOf } from './control-commands';
import { readMap, sourceOf } from './map-source';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };

/** `10m`, `30s`, `1h`, `2d`, `500ms` (a bare number is seconds) -> ms. */
export function parseDuration(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(value.trim());
  const ms = m ? Math.round(Number(m[1]) * UNITS[m[2] ?? 's']!) : NaN;
  if (!Number.isFinite(ms) || ms < 1 || ms > MAX_CANCEL_TTL_MS) throw new InvalidArgumentError('must be a duration such as 30s, 10m, 1h or 2d, up to 7d');
  return ms;
}

interface CancelFlags {
  map?: string;
  runDir?: string;
  server?: string;
  ttl: number;
  json?: boolean;
}

export function addCancelCommand(program: Command): void {
  program
    .command('cancel')
    .description("cancel a request: every record derived from ROOT_ID that is not yet delivered is dropped on every server of the map (queued, held, spooled, or sent later), components are told, senders see it acknowledged as cancelled")
    .argument('<stream>', 'the stream the root record was sent on')
    .argument('<root_id>', "the root record's id: 32 hex digits (Sender.lastId; a record's `root` in portal-exec lines)")
    .option('--ttl <duration>', 'how long the cancellation stays in force (30s, 10m, 1h, 2d)', parseDuration, 600_000)
    .option('-m, --map <file>', `map file (default $FLOTILLA_MAP, else ${DEFAULT_MAP_FILE})`)
    .option('--run-dir <dir>', "this server's run directory, for a map whose servers have no agent_port")
    .option('--server <name>', "tell only this server's agent (a portal restarted there missed nothing: its agent keeps cancellations)")
    .option('--json', 'print the agents\' replies as JSON')
    .addHelpText('after', '\nExamples:\n  portalctl cancel requests 5f1c0a9e33b2d4c1000000000000002a\n  portalctl cancel requests 5f1c0a9e33b2d4c1000000000000002a --ttl 1h --json\n')
    .action(async (stream: string, root: string, o: CancelFlags) => {
      const file = sourceOf(o.map);
      const map = readMap(file); // a file, or the etcd map read before the command
      const targets = o.server ? targetsOf({ map: file, server: o.server }) : o.runDir && agentsOf(map)[0]!.server === null ? [localAgent(o.runDir)] : agentsOf(map);
      try {
        const replies = await cancelEverywhere(map, { stream, root: root.toLowerCase(), ttlMs: o.ttl }, undefined, targets);
        if (o.json) return void process.stdout.write(JSON.stringify(replies, null, 2) + '\n');
        for (const r of replies) {
          const dropped = r.portals.reduce((n, p) => n + (p.dropped ?? 0), 0);
          process.stdout.write(`${r.server}: ${root} cancelled until ${new Date(r.expiresAt).toISOString()}; ${dropped} records dropped\n`);
          for (const p of r.portals) {
            if (!p.ok) process.stdout.write(`  ${p.stream}: not reached now: ${p.error}\n`);
            else if (p.unconfirmed && p.unconfirmed.length > 0) process.stdout.write(`  ${p.stream}: slots ${p.unconfirmed.join(', ')} did not confirm; they get it when they register again\n`);
          }
        }
      } catch (err) {
        process.stderr.write(`error: ${errorText(err)}\n`);
        process.exitCode = 1;
      }
    });
}
