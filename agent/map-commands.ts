/**
 * `portalctl map check|lookup|diff|schema`: what a map says, for people (default) and scripts
 * (--json). Exit status: 0 when the map is valid (and, for diff, the edit is allowed), 1 otherwise.
 */
import type { Command } from 'commander';
import { FlotillaError, MapInvalidError } from '../src/errors';
import { type FlotillaMap } from '../src/map/types';
import { loadMap } from '../src/map/load';
import { MAP_SCHEMA } from '../src/map/schema';
import { portalPort, streamOf } from '../src/map/lookup';
import { routeKey } from '../src/map/route';
import { diffMaps, type MapDiff } from '../src/map/diff';
import { transportProblems } from '../src/map/security';

interface JsonFlag {
  json?: boolean;
}

const print = (s: string) => process.stdout.write(s + '\n');
const printJson = (v: unknown) => process.stdout.write(JSON.stringify(v, null, 2) + '\n');

/** Loads a map or reports why not (as text on stderr, or as JSON on stdout) and exits 1. */
function loadOrExit(file: string, json: boolean | undefined): FlotillaMap {
  try {
    return loadMap(file);
  } catch (err) {
    if (!(err instanceof FlotillaError)) throw err;
    const problems = err instanceof MapInvalidError ? err.problems : [{ path: '(file)', message: err.message }];
    if (json) printJson({ file, valid: false, code: err.code, problems });
    else process.stderr.write(`${err.message}\n`);
    process.exit(1);
  }
}

/** Buckets owned by each server, per stream. */
function ownership(map: FlotillaMap): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const s of map.streams) {
    const counts: Record<string, number> = Object.fromEntries(map.servers.map((x) => [x.name, 0]));
    for (const owner of s.owner) counts[map.servers[owner]!.name]!++;
    out[s.name] = counts;
  }
  return out;
}

/** What an edit moves, per stream, for a person (map diff, map apply). */
export function printDiff(d: MapDiff): void {
  print(`epoch ${d.fromEpoch} -> ${d.toEpoch}`);
  for (const s of d.streams) {
    if (s.change === 'added' || s.change === 'removed') {
      print(`  ${s.stream}: stream ${s.change}`);
      continue;
    }
    print(`  ${s.stream}: ${s.moved} of ${s.buckets} buckets move${s.moved === 0 ? '' : ':'}`);
    for (const mv of s.moves) print(`    ${mv.from} -> ${mv.to}: ${mv.buckets}`);
  }
}

export function addMapCommands(program: Command): void {
  const map = program.command('map').description('check a map file, look a key up, or see what an edit moves');

  map
    .command('check')
    .description('validate a map file; print every problem of every check as path: message (line N); --json gives path, line and message as fields')
    .argument('<file>', 'map file (YAML or JSON)')
    .option('--json', 'print the result as JSON')
    .action((file: string, o: JsonFlag) => {
      const m = loadOrExit(file, o.json);
      // A map that would put records in clear on the network is refused as an invalid one is.
      const unsafe = transportProblems(m);
      if (unsafe.length > 0) {
        if (o.json) printJson({ file, valid: false, code: 'PLAIN_TCP_REFUSED', problems: unsafe });
        else process.stderr.write(`${file}: ${unsafe.length} problem${unsafe.length === 1 ? '' : 's'}:\n${unsafe.map((p) => `  ${p.path}: ${p.message}`).join('\n')}\n`);
        process.exit(1);
      }
      const owned = ownership(m);
      if (o.json) {
        printJson({
          file,
          valid: true,
          instance: m.instance,
          epoch: m.epoch,
          servers: m.servers.map((s) => ({ name: s.name, host: s.host, weight: s.weight })),
          streams: m.streams.map((s) => ({ name: s.name, key: s.keyField, buckets: s.buckets, slots: s.slots, owned: owned[s.name] })),
        });
        return;
      }
      print(`${file}: valid; instance ${m.instance}, epoch ${m.epoch}, ${m.servers.length} servers, ${m.streams.length} streams`);
      for (const s of m.streams) {
        const shares = Object.entries(owned[s.name]!)
          .map(([server, n]) => `${server} ${n}`)
          .join(', ');
        print(`  ${s.name}: key ${s.keyField}, ${s.buckets} buckets (${shares})`);
      }
    });

  map
    .command('schema')
    .description("print the map's JSON Schema (the package ships it as config/map.schema.json, for editors)")
    .action(() => {
      printJson(MAP_SCHEMA);
    });

  map
    .command('lookup')
    .description('show which bucket, server and slot own a key')
    .argument('<file>', 'map file')
    .argument('<stream>', 'stream name')
    .argument('<key>', 'key value, as text')
    .option('--json', 'print the result as JSON')
    .action((file: string, streamName: string, key: string, o: JsonFlag) => {
      const m = loadOrExit(file, o.json);
      let stream;
      try {
        stream = streamOf(m, streamName);
      } catch (err) {
        if (o.json) printJson({ error: (err as FlotillaError).code, message: (err as Error).message });
        else process.stderr.write(`error: ${(err as Error).message}\n`);
        process.exit(1);
      }
      const { bucket, server, slot } = routeKey(m, stream, key);
      const port = portalPort(server, stream);
      if (o.json) {
        printJson({ stream: stream.name, key, bucket, server: server.name, host: server.host, port, slot, epoch: m.epoch });
        return;
      }
      print(`${stream.name} key ${JSON.stringify(key)}: bucket ${bucket} -> server ${server.name} (${server.host}:${port}), slot ${slot} [epoch ${m.epoch}]`);
    });

  map
    .command('diff')
    .description('show, per stream, how many buckets an edit moves and between which servers')
    .argument('<old>', 'map in force')
    .argument('<new>', 'edited map')
    .option('--json', 'print the result as JSON')
    .action((oldFile: string, newFile: string, o: JsonFlag) => {
      const d = diffMaps(loadOrExit(oldFile, o.json), loadOrExit(newFile, o.json));
      if (o.json) printJson(d);
      else {
        printDiff(d);
        for (const p of d.problems) process.stderr.write(`problem: ${p}\n`);
      }
      if (d.problems.length > 0) process.exitCode = 1;
    });
}
