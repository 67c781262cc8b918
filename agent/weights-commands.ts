/**
 * `portalctl weights --suggest` and `portalctl buckets --hot`: what the portals measured, asked of
 * every agent of the map (over TCP at their agent_port), turned into weights for the map and a
 * list of the heaviest buckets (src/map/weights.ts). Nothing is changed: applying a suggestion
 * is an edit of the map, the operator's.
 */
import { type Command, InvalidArgumentError } from 'commander';
import { askAgent } from '../src/agent/client';
import { readMap } from './map-source';
import { bucketLoads, suggestWeights, type WeightSuggestion } from '../src/map/weights';
import type { LoadReport } from '../src/protocol/control';
import { DEFAULT_MAP_FILE, errorText, gather, targetsOf } from './control-commands';

const print = (s: string) => process.stdout.write(s + '\n');

/** Every agent's load reports; an agent that does not answer is named on stderr. */
async function gatherLoads(file: string): Promise<LoadReport[]> {
  const replies = await gather(targetsOf({ map: file, cluster: true }), (t) => askAgent(t, { cmd: 'load' }));
  for (const r of replies) if (!r.ok) process.stderr.write(`warning: ${errorText(r.error)}; its load is left out\n`);
  return replies.flatMap((r) => r.value?.streams ?? []);
}

const pct = (u: number | null) => (u === null ? '-' : `${Math.round(u * 100)}%`);

function printSuggestion(s: WeightSuggestion): void {
  const rows = [['SERVER', 'WEIGHT', 'SUGGESTED', 'CAPACITY/S', 'LOAD/S', 'UTIL', 'PREDICTED LOAD/S', 'PREDICTED UTIL']];
  for (const x of s.servers) {
    rows.push([x.name, String(x.weight), String(x.suggested), x.capacity === null ? '-' : String(x.capacity), String(x.load), pct(x.utilization), String(x.predictedLoad), pct(x.predictedUtilization)]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) print(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
  print(`utilization spread ${pct(s.spread)} now, ${pct(s.predictedSpread)} with the suggested weights; ${s.moved} buckets would move`);
  print('to apply: set each server\'s weight in the map, raise the epoch, and install the file (docs/operations.md)');
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a whole number above 0');
  return n;
}

export function addWeightCommands(program: Command): void {
  program
    .command('weights')
    .description("suggest weights for the map from the portals' measured rates: each server's capacity, its load and utilization now and with the suggested weights, and how many buckets would move")
    .requiredOption('--suggest', 'compute a suggestion (the only thing this command does; nothing is changed)')
    .option('-m, --map <file>', `map file (default $FLOTILLA_MAP, else ${DEFAULT_MAP_FILE})`)
    .option('--json', 'print the suggestion as JSON')
    .addHelpText('after', '\nExample:\n  portalctl weights --suggest --map /etc/flotilla/map.yaml\n')
    .action(async (o: { map?: string; json?: boolean }) => {
      const file = o.map ?? process.env.FLOTILLA_MAP ?? DEFAULT_MAP_FILE;
      const s = suggestWeights(readMap(file), await gatherLoads(file));
      if (o.json) print(JSON.stringify(s, null, 2));
      else printSuggestion(s);
    });
  program
    .command('buckets')
    .description("list the heaviest buckets of every stream by the portals' measured rates, with their owner")
    .requiredOption('--hot', 'list the heaviest buckets (the only thing this command does)')
    .option('--top <n>', 'how many (default 10)', positiveInt, 10)
    .option('-m, --map <file>', `map file (default $FLOTILLA_MAP, else ${DEFAULT_MAP_FILE})`)
    .option('--json', 'print the list as JSON')
    .addHelpText('after', '\nExample:\n  portalctl buckets --hot --top 20\n')
    .action(async (o: { map?: string; json?: boolean; top: number }) => {
      const file = o.map ?? process.env.FLOTILLA_MAP ?? DEFAULT_MAP_FILE;
      const hot = bucketLoads(readMap(file), await gatherLoads(file)).slice(0, o.top);
      if (o.json) {
        print(JSON.stringify(hot, null, 2));
        return;
      }
      print('STREAM  BUCKET  RECORDS/S  OWNER');
      for (const b of hot) print(`${b.stream.padEnd(6)}  ${String(b.bucket).padEnd(6)}  ${b.perSec.toFixed(1).padEnd(9)}  ${b.owner}`);
    });
}
