/**
 * The map file: which server owns which key of each stream, and where each portal listens.
 * `loadMap` reads, validates (JSON Schema, then the rules a schema cannot state) and resolves a
 * map in one step; it either returns a complete `FlotillaMap` or throws a `MapInvalidError`
 * listing every problem as `path: message`. Nothing uses a map that did not pass.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Ajv, { type ErrorObject } from 'ajv';
import avro from 'avsc';
import { LineCounter, parseDocument, type Document } from 'yaml';
import { FlotillaError, MapInvalidError, type MapProblem } from '../errors';
import { MAP_SCHEMA } from './schema';
import { placeBuckets } from './placement';
import { mapDigest } from './digest';
import { resolveSecurity, type RawSecurity } from './security';
import { DEFAULT_BUCKETS, DEFAULT_FSYNC_INTERVAL_MS, DEFAULT_HEARTBEAT_MS, DEFAULT_HTTP_HOST, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_RSS_BYTES, DEFAULT_MAX_SLOT_BYTES, DEFAULT_MAX_UNREAD_REPLIES, DEFAULT_SLOTS, DEFAULT_SPOOL_MAX_BYTES, DEFAULT_SPOOL_MIN_FREE_BYTES, DEFAULT_STOP_DRAIN_MS, DEFAULT_WEIGHT, DEFAULT_WINDOW, type FlotillaMap, type FsyncPolicy, type MapServer, type MapStream, type MemoryLimits, type SpoolFullPolicy, type SpoolMode, type SpoolSettings } from './types';

/** Field names people reach for that the map calls something else. */
const RENAMED: Record<string, string> = {
  partitions: 'buckets',
  workers: 'slots',
  key_field: 'key',
  hostname: 'host',
  address: 'host',
  heartbeat: 'heartbeat_ms',
};

const KEY_TYPES = new Set(['string', 'int', 'long']);

const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
const validateSchema = ajv.compile(MAP_SCHEMA);
const validateServer = ajv.compile(MAP_SCHEMA.properties.servers.items);
const validateStream = ajv.compile(MAP_SCHEMA.properties.streams.items);

/** Reads and validates a map file (YAML or JSON, chosen by content). Throws MapInvalidError. */
export function loadMap(file: string): FlotillaMap {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new FlotillaError('MAP_UNREADABLE', `cannot read map ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parseMap(text, file);
}

/**
 * Validates map text. `file` names it in errors and anchors relative schema paths. Every stage
 * runs, so one error lists every problem at once: the schema's, and the rules a schema cannot
 * state (names unique, ports free, keys in the Avro schema) for each server and stream whose own
 * shape passed. Only a file that does not parse as YAML stops at its syntax errors.
 */
export function parseMap(text: string, file = '<map>'): FlotillaMap {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new MapInvalidError(
      file,
      doc.errors.map((e) => {
        const line = lines.linePos(e.pos[0]).line;
        return { path: `line ${line}`, message: e.message.split('\n')[0]!, line };
      }),
    );
  }
  const raw: unknown = doc.toJS();
  const at = (segs: (string | number)[]) => lineOf(doc, lines, segs);

  const schemaOk = validateSchema(raw);
  const problems = schemaOk ? [] : schemaProblems(validateSchema.errors ?? [], at);
  const map = isRecord(raw) ? resolveMap(raw as unknown as RawMap, file, at, problems, schemaOk) : null;
  if (problems.length > 0 || !map) throw new MapInvalidError(file, problems);
  return { ...map, digest: mapDigest(raw), text };
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Which items of an array passed their own part of the schema (a non-array has none). */
function passing(items: unknown, validate: (v: unknown) => boolean): boolean[] {
  return Array.isArray(items) ? items.map((v) => validate(v)) : [];
}

interface RawServer {
  name: string;
  host: string;
  weight?: number;
  agent_port?: number;
  http_port?: number;
  http_host?: string;
  public_key?: string;
  ports?: Record<string, number>;
  slots?: Record<string, number>;
}
interface RawStream {
  name: string;
  key: string;
  port: number;
  buckets?: number;
  slots?: number;
  window?: number;
  max_batch_bytes?: number;
  schema: object | string;
  spool?: {
    mode?: SpoolMode;
    dir?: string;
    max_bytes?: number | string;
    when_full?: SpoolFullPolicy;
    fsync?: FsyncPolicy;
    fsync_interval_ms?: number;
    min_free_bytes?: number | string;
  };
  memory?: {
    max_queued_bytes?: number | string;
    max_slot_bytes?: number | string;
    max_unread_replies?: number;
    max_rss_bytes?: number | string;
  };
}
interface RawMap extends RawSecurity {
  instance: string;
  epoch: number;
  heartbeat_ms?: number;
  stop_drain_ms?: number;
  run_dir?: string;
  servers: RawServer[];
  streams: RawStream[];
}

type LineOf = (segs: (string | number)[]) => number | undefined;

/** A problem at `segs`, with its line as a field and at the end of its message. */
function problemAt(segs: (string | number)[], message: string, at: LineOf): MapProblem {
  const line = at(segs);
  return line === undefined ? { path: pathOf(segs), message } : { path: pathOf(segs), message: `${message} (line ${line})`, line };
}

/**
 * The rules a schema cannot state, checked on the servers and streams whose own shape is valid
 * (`complete`: the whole file passed the schema); adds to `problems`, and returns the map when
 * the file passed the schema and nothing was found here.
 */
function resolveMap(whole: RawMap, file: string, at: LineOf, problems: MapProblem[], complete: boolean): Omit<FlotillaMap, 'digest' | 'text'> | null {
  const found = problems.length;
  const problem = (segs: (string | number)[], message: string) => problems.push(problemAt(segs, message, at));
  // Items that failed their schema are left out (their indices kept, for the paths).
  const serverOk = passing(whole.servers, validateServer);
  const streamOk = passing(whole.streams, validateStream);
  const raw: RawMap = {
    ...whole,
    instance: typeof whole.instance === 'string' ? whole.instance : 'instance',
    servers: serverOk.map((ok, i) => (ok ? whole.servers[i]! : null)).filter((s): s is RawServer => s !== null),
    streams: streamOk.map((ok, i) => (ok ? whole.streams[i]! : null)).filter((s): s is RawStream => s !== null),
  };
  const serverIndex = serverOk.flatMap((ok, i) => (ok ? [i] : []));
  const streamIndex = streamOk.flatMap((ok, i) => (ok ? [i] : []));

  const servers: MapServer[] = raw.servers.map((s) => ({
    name: s.name,
    host: s.host,
    weight: s.weight ?? DEFAULT_WEIGHT,
    agentPort: s.agent_port,
    httpPort: s.http_port,
    httpHost: s.http_host ?? DEFAULT_HTTP_HOST,
    ports: s.ports ?? {},
    slots: s.slots ?? {},
    publicKey: s.public_key,
  }));
  const security = resolveSecurity(raw, serverIndex, problem);
  if (servers.length > 0 && servers.length === serverOk.length && servers.every((s) => s.weight === 0)) problem(['servers'], 'at least one server needs a weight above 0');
  duplicates(raw.servers.map((s) => s.name)).forEach((i) =>
    problem(['servers', serverIndex[i]!, 'name'], `duplicate server name "${raw.servers[i]!.name}"`),
  );
  duplicates(raw.streams.map((s) => s.name)).forEach((i) =>
    problem(['streams', streamIndex[i]!, 'name'], `duplicate stream name "${raw.streams[i]!.name}"`),
  );

  const streamNames = new Set(passing(whole.streams, (v) => isRecord(v) && typeof v.name === 'string').flatMap((ok, i) => (ok ? [(whole.streams[i] as RawStream).name] : [])));
  raw.servers.forEach((s, k) => {
    const i = serverIndex[k]!;
    for (const field of ['ports', 'slots'] as const) {
      for (const name of Object.keys(s[field] ?? {})) {
        if (!streamNames.has(name)) problem(['servers', i, field, name], `no stream named "${name}" in streams`);
      }
    }
  });

  const baseDir = dirname(resolve(file));
  const streams: MapStream[] = [];
  raw.streams.forEach((s, k) => {
    const i = streamIndex[k]!;
    let schema: object;
    if (typeof s.schema === 'string') {
      const schemaFile = resolve(baseDir, s.schema);
      try {
        schema = JSON.parse(readFileSync(schemaFile, 'utf8')) as object;
      } catch (err) {
        problem(['streams', i, 'schema'], `cannot load Avro schema file ${schemaFile}: ${(err as Error).message}`);
        return;
      }
    } else {
      schema = s.schema;
    }
    let type: avro.Type;
    try {
      type = avro.Type.forSchema(schema as avro.Schema);
    } catch (err) {
      problem(['streams', i, 'schema'], `not a valid Avro schema: ${(err as Error).message}`);
      return;
    }
    if (!(type instanceof avro.types.RecordType)) {
      problem(['streams', i, 'schema'], `must be an Avro record, not ${type.typeName}`);
      return;
    }
    const keyField = type.fields.find((f) => f.name === s.key);
    if (!keyField) {
      problem(['streams', i, 'key'], `field "${s.key}" is not in the schema (fields: ${type.fields.map((f) => f.name).join(', ')})`);
      return;
    }
    if (!KEY_TYPES.has(keyField.type.typeName)) {
      problem(['streams', i, 'key'], `field "${s.key}" has type ${keyField.type.typeName}; a key must be string, int or long`);
      return;
    }
    const buckets = s.buckets ?? DEFAULT_BUCKETS;
    const sp = s.spool ?? {};
    const spool: SpoolSettings = {
      mode: sp.mode ?? 'off',
      dir: resolve(baseDir, sp.dir ?? `/var/lib/flotilla/${raw.instance}/spool`),
      maxBytes: parseSize(sp.max_bytes ?? DEFAULT_SPOOL_MAX_BYTES),
      whenFull: sp.when_full ?? 'block',
      fsync: sp.fsync ?? 'interval',
      fsyncIntervalMs: sp.fsync_interval_ms ?? DEFAULT_FSYNC_INTERVAL_MS,
      minFreeBytes: parseSize(sp.min_free_bytes ?? DEFAULT_SPOOL_MIN_FREE_BYTES),
    };
    const maxBatchBytes = s.max_batch_bytes ?? DEFAULT_MAX_BATCH_BYTES;
    if (spool.mode !== 'off' && spool.maxBytes < 4 * maxBatchBytes) {
      problem(['streams', i, 'spool', 'max_bytes'], `must hold at least 4 batches (${4 * maxBatchBytes} bytes at max_batch_bytes ${maxBatchBytes})`);
    }
    const mem = s.memory ?? {};
    const memory: MemoryLimits = {
      maxQueuedBytes: parseSize(mem.max_queued_bytes ?? DEFAULT_MAX_QUEUED_BYTES),
      maxSlotBytes: parseSize(mem.max_slot_bytes ?? DEFAULT_MAX_SLOT_BYTES),
      maxUnreadReplies: mem.max_unread_replies ?? DEFAULT_MAX_UNREAD_REPLIES,
      maxRssBytes: parseSize(mem.max_rss_bytes ?? DEFAULT_MAX_RSS_BYTES),
    };
    const window = s.window ?? DEFAULT_WINDOW;
    // A sender that reads its replies is owed at most `window` of them: dropping one it waits for would stall it.
    if (memory.maxUnreadReplies < 2 * window) problem(['streams', i, 'memory', 'max_unread_replies'], `must be at least 2 x window (${2 * window})`);
    // A batch that fits no queue could never be taken.
    for (const [field, bytes] of [['max_queued_bytes', memory.maxQueuedBytes], ['max_slot_bytes', memory.maxSlotBytes]] as const) {
      if (bytes < maxBatchBytes) problem(['streams', i, 'memory', field], `must hold at least one batch (max_batch_bytes ${maxBatchBytes})`);
    }
    if (memory.maxRssBytes < memory.maxQueuedBytes + (64 << 20)) {
      problem(['streams', i, 'memory', 'max_rss_bytes'], `must be at least max_queued_bytes + 64MiB (${memory.maxQueuedBytes + (64 << 20)}): the records held count in it`);
    }
    if (sp.fsync_interval_ms !== undefined && spool.fsync !== 'interval') {
      problem(['streams', i, 'spool', 'fsync_interval_ms'], `applies only with fsync: interval (fsync is ${spool.fsync})`);
    }
    streams.push({
      name: s.name,
      keyField: s.key,
      port: s.port,
      buckets,
      slots: s.slots ?? DEFAULT_SLOTS,
      window,
      maxBatchBytes,
      type,
      schema,
      spool,
      memory,
      // Placing buckets is the costly step: only for a map that may be taken.
      owner: complete && servers.some((x) => x.weight > 0) ? placeBuckets(s.name, buckets, servers) : new Uint16Array(buckets),
    });
  });

  // Two listeners on one host and port cannot both bind.
  const listeners = new Map<string, string>();
  raw.servers.forEach((s, k) => {
    const i = serverIndex[k]!;
    const claim = (segs: (string | number)[], port: number, what: string) => {
      const where = `${s.host}:${port}`;
      const other = listeners.get(where);
      if (other) problem(segs, `port ${port} on host ${s.host} is also used by ${other}`);
      else listeners.set(where, what);
    };
    if (s.agent_port !== undefined) claim(['servers', i, 'agent_port'], s.agent_port, `the agent of ${s.name}`);
    if (s.http_port !== undefined) claim(['servers', i, 'http_port'], s.http_port, `the HTTP server of ${s.name}'s agent`);
    raw.streams.forEach((st, l) => {
      const j = streamIndex[l]!;
      const override = s.ports?.[st.name];
      const segs = override !== undefined ? ['servers', i, 'ports', st.name] : ['streams', j, 'port'];
      claim(segs, override ?? st.port, `the ${st.name} portal of ${s.name}`);
    });
  });

  if (!complete || problems.length > found) return null;
  return {
    file,
    instance: raw.instance,
    epoch: raw.epoch,
    schemaFiles: raw.streams.some((st) => typeof st.schema === 'string'),
    heartbeatMs: raw.heartbeat_ms ?? DEFAULT_HEARTBEAT_MS,
    stopDrainMs: raw.stop_drain_ms ?? DEFAULT_STOP_DRAIN_MS,
    runDir: raw.run_dir ?? `/run/flotilla/${raw.instance}`,
    servers,
    streams,
    security,
  };
}

const UNITS: Record<string, number> = { B: 1, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40, kB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12 };

/** 1048576, "1MiB", "1.5 GB" -> bytes (the schema has checked the form). */
export function parseSize(size: number | string): number {
  if (typeof size === 'number') return size;
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$/.exec(size)!;
  return Math.floor(Number(m[1]) * (UNITS[m[2] || 'B'] ?? 1));
}

function duplicates(names: string[]): number[] {
  const seen = new Set<string>();
  const out: number[] = [];
  names.forEach((n, i) => (seen.has(n) ? out.push(i) : seen.add(n)));
  return out;
}

/** `['streams', 0, 'port']` -> `streams[0].port`. */
export function pathOf(segs: (string | number)[]): string {
  let out = '';
  for (const s of segs) out += typeof s === 'number' ? `[${s}]` : out === '' ? s : `.${s}`;
  return out === '' ? '(top level)' : out;
}

function schemaProblems(errors: ErrorObject[], at: LineOf): MapProblem[] {
  const problems: MapProblem[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    const segs: (string | number)[] = e.instancePath
      .split('/')
      .slice(1)
      .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
      .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
    let message = e.message ?? 'is invalid';
    if (e.keyword === 'required') {
      segs.push((e.params as { missingProperty: string }).missingProperty);
      message = 'is required';
    } else if (e.keyword === 'additionalProperties') {
      const field = (e.params as { additionalProperty: string }).additionalProperty;
      segs.push(field);
      message = RENAMED[field] ? `unknown field; did you mean "${RENAMED[field]}"?` : 'unknown field';
    } else if (e.keyword === 'pattern' && segs[segs.length - 1] === 'name') {
      message = 'must be lower case letters, digits, "-" or "_", starting with a letter, at most 32 characters';
    } else if (e.keyword === 'propertyNames') {
      continue; // reported again, more precisely, as the pattern error on the name itself
    } else if (e.keyword === 'pattern' && e.propertyName !== undefined) {
      message = `"${e.propertyName}" is not a stream name`;
    } else if (e.keyword === 'enum') {
      message = `must be one of: ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')}`;
    } else if (e.keyword === 'pattern' && /_bytes$/.test(String(segs[segs.length - 1]))) {
      message = 'must be a number of bytes, or a size such as "64KiB", "512MiB" or "1GiB"';
    } else if (e.keyword === 'type') {
      message = `must be ${(e.params as { type: string | string[] }).type.toString().replace(',', ' or ')}`;
    }
    const path = pathOf(segs);
    const line = `${path}: ${message}`;
    if (seen.has(line)) continue;
    seen.add(line);
    problems.push(problemAt(segs, message, at));
  }
  return problems;
}

/** The line of the deepest node of `segs` that the file has (a missing field: its parent's). */
function lineOf(doc: Document, lines: LineCounter, segs: (string | number)[]): number | undefined {
  for (let n = segs.length; n > 0; n--) {
    const node = doc.getIn(segs.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === 'object' && node.range) return lines.linePos(node.range[0]).line;
  }
  return undefined;
}
