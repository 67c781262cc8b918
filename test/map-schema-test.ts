/**
 * The map's JSON Schema as editors and scripts use it, and `map check` as one pass over every
 * check: the schema is published as config/map.schema.json (what `portalctl map schema`
 * prints), every property in it has a description, the example maps point editors at it, and a
 * map broken in the schema's way and in the cross-field rules' way gets every problem in one
 * answer, each with `path` and `line` as fields in --json.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { MAP_SCHEMA } from '../src/map/schema';
import { portalctl } from './support/cli';

const ROOT = join(__dirname, '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'flt-schema-'));

test('config/map.schema.json is the schema the code checks with, and `portalctl map schema` prints it', () => {
  const shipped = JSON.parse(readFileSync(join(ROOT, 'config', 'map.schema.json'), 'utf8')) as unknown;
  assert.deepEqual(shipped, JSON.parse(JSON.stringify(MAP_SCHEMA)), 'run `npm run schema` to write config/map.schema.json again');
  const r = portalctl('map', 'schema');
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), shipped);
});

test('every property of the schema has a description', () => {
  const missing: string[] = [];
  const walk = (node: Record<string, unknown>, path: string) => {
    if (typeof node.description !== 'string' || node.description.length < 10) missing.push(path);
    for (const [name, child] of Object.entries((node.properties ?? {}) as Record<string, Record<string, unknown>>)) walk(child, `${path}.${name}`);
    if (node.items) walk(node.items as Record<string, unknown>, `${path}[]`);
    if (node.additionalProperties && typeof node.additionalProperties === 'object') walk(node.additionalProperties as Record<string, unknown>, `${path}.*`);
  };
  walk(MAP_SCHEMA as unknown as Record<string, unknown>, '(map)');
  assert.deepEqual(missing, []);
});

test('the example maps point editors at the schema', () => {
  for (const file of ['demo.yaml', 'vectors.yaml']) {
    const first = readFileSync(join(ROOT, 'config', file), 'utf8').split('\n')[0];
    assert.equal(first, '# yaml-language-server: $schema=./map.schema.json', file);
  }
});

const BROKEN = `instance: test
epoch: 0
servers:
  - { name: alpha, host: 10.0.0.1, colour: red }
  - { name: beta, host: 10.0.0.2 }
  - { name: beta, host: 10.0.0.3 }
streams:
  - name: clicks
    key: page
    port: 7401
    schema: { type: record, name: C, fields: [ { name: user, type: string } ] }
  - name: views
    key: user
    port: 99999
    schema: { type: record, name: V, fields: [ { name: user, type: string } ] }
`;

test('map check reports the schema problems and the cross-field ones in one answer, with path and line as fields', () => {
  const file = join(dir, 'broken.yaml');
  writeFileSync(file, BROKEN);
  const r = portalctl('map', 'check', file, '--json');
  assert.equal(r.status, 1);
  const out = JSON.parse(r.stdout) as { valid: boolean; code: string; problems: { path: string; line: number; message: string }[] };
  assert.equal(out.valid, false);
  assert.equal(out.code, 'MAP_INVALID');
  assert.deepEqual(
    out.problems.map((p) => [p.path, p.line]),
    [
      ['epoch', 2], // schema
      ['servers[0].colour', 4], // schema
      ['streams[1].port', 14], // schema
      ['servers[2].name', 6], // duplicate name: a rule the schema cannot state
      ['streams[0].key', 9], // key not in the Avro schema: likewise
    ],
  );
  assert.match(out.problems[4]!.message, /^field "page" is not in the schema \(fields: user\) \(line 9\)$/);

  const text = portalctl('map', 'check', file);
  assert.match(text.stderr, /5 problems:/);
  assert.match(text.stderr, /servers\[2\]\.name: duplicate server name "beta" \(line 6\)/);
});

test('a YAML syntax error is reported alone, with its line as a field', () => {
  const file = join(dir, 'syntax.yaml');
  writeFileSync(file, 'instance: test\nservers: [\n');
  const out = JSON.parse(portalctl('map', 'check', file, '--json').stdout) as { problems: { path: string; line: number }[] };
  assert.ok(out.problems.length >= 1);
  assert.equal(out.problems[0]!.line, 3);
});
