/**
 * The management bus (docs/protocol.md, "Configurations"): a configuration given to a stream's
 * components at run time, out of band, versioned per stream.
 *
 *   portalctl --configure--> agent (keeps it: configs.json) --configure--> portal
 *   portal --CONFIGURE {version, config}--> component --CONFIGURED {slot, version, ok, reason}--> portal
 *
 * This file holds the values that travel: a stream's configurations as the agent keeps them and
 * the portal gets them, the CONFIGURE and CONFIGURED bodies, the agent's `configure` request and
 * its reply, and the checks of each.
 */
import { badRequest, name } from './fields';

/** Largest configuration (as JSON) one `configure` may set. */
export const MAX_CONFIG_BYTES = 16 * 1024;
/** Largest a stream's configurations may grow (stream-wide and every slot's, as JSON). */
export const MAX_STREAM_CONFIG_BYTES = 48 * 1024;

/** How long an agent's `configure` waits for the live components' answers unless the request says, ms. */
export const DEFAULT_CONFIGURE_WAIT_MS = 10_000;

/** A configuration: any JSON object. */
export type Config = Record<string, unknown>;

/** One configuration and its version. */
export interface ConfigEntry {
  version: number;
  config: Config;
  /** When it was set, ms since the Unix epoch. */
  at: number;
}

/**
 * A stream's configurations on a server. Versions count per stream: every `configure` of the
 * stream, stream-wide or for one slot, takes the next one. A slot runs whichever of the
 * stream-wide configuration and its own is newer (`effectiveConfig`), so a stream-wide
 * configuration given after a slot's replaces it.
 */
export interface StreamConfigs {
  stream: string;
  /** The newest version given on the stream (0: none yet). */
  version: number;
  all: ConfigEntry | null;
  /** Configurations given to one slot (`--slot`), by slot number. */
  slots: Record<string, ConfigEntry>;
}

/** The configuration `slot` must run: its own or the stream-wide one, whichever is newer; null if none. */
export function effectiveConfig(sc: StreamConfigs, slot: number): ConfigEntry | null {
  const own = sc.slots[String(slot)];
  if (!own) return sc.all;
  if (!sc.all) return own;
  return own.version > sc.all.version ? own : sc.all;
}

/** The JSON body of a CONFIGURE (portal -> component). */
export interface ConfigureBody {
  version: number;
  config: Config;
}

/** The JSON body of a CONFIGURED (component -> portal): taken (`ok`) or rejected with `reason`. */
export interface ConfiguredBody {
  slot: number;
  version: number;
  ok: boolean;
  reason?: string;
}

/** Longest rejection reason kept (longer ones are cut). */
export const MAX_REASON_CHARS = 500;

/** Reads a CONFIGURE body; null if it is not one. */
export function parseConfigureBody(frame: Buffer | undefined): ConfigureBody | null {
  const v = jsonOf(frame);
  if (!isObject(v) || !isVersion(v.version) || !isObject(v.config)) return null;
  return { version: v.version, config: v.config };
}

/** Reads a CONFIGURED body; null if it is not one. */
export function parseConfiguredBody(frame: Buffer | undefined): ConfiguredBody | null {
  const v = jsonOf(frame);
  if (!isObject(v) || !Number.isInteger(v.slot) || !isVersion(v.version) || typeof v.ok !== 'boolean') return null;
  const reason = typeof v.reason === 'string' ? v.reason.slice(0, MAX_REASON_CHARS) : undefined;
  return { slot: v.slot as number, version: v.version, ok: v.ok, ...(v.ok ? {} : { reason: reason ?? 'no reason given' }) };
}

// ---- control requests ------------------------------------------------------------------------

/** To an agent: give `stream`'s components (or one slot's) a configuration, and wait for their answers. */
export interface ConfigureRequest {
  cmd: 'configure';
  stream: string;
  /** Only this slot (on every server asked); default every slot. */
  slot?: number;
  config: Config;
  /** Merge `config` into the current one (`--set`) instead of replacing it (`--file`). */
  merge?: boolean;
  /** The version to give it (`--cluster` gives one version everywhere); refused unless above the current. */
  version?: number;
  /** How long to wait for the live components' answers, ms. */
  timeoutMs?: number;
}

/** How one slot answered a configuration. */
export interface SlotConfigResult {
  slot: number;
  /** The component's pid, 0 when none is registered. */
  pid: number;
  /**
   * taken: it runs the version; rejected: it said no (`reason`) and runs `running`;
   * not-taken: live but no answer in time; not-running: no live component (it gets the version when one registers).
   */
  outcome: 'taken' | 'rejected' | 'not-taken' | 'not-running';
  /** The version the component runs (null: none, or not known). */
  running: number | null;
  reason?: string;
}

/** An agent's answer to `configure`: ok when every live component took the version. */
export interface ConfigureReply {
  server: string;
  stream: string;
  version: number;
  slot: number | null;
  /** The configuration set (after a merge). */
  config: Config;
  ok: boolean;
  slots: SlotConfigResult[];
  /**
   * Why it could not be confirmed at all (the portal did not answer); the version is kept all the
   * same. (Not `error`: a reply with a string `error` is an error reply.)
   */
  unconfirmed?: string;
}

/** To a portal: the stream's configurations, from its agent. */
export interface PortalConfigureRequest {
  cmd: 'configure';
  configs: StreamConfigs;
}

/** Reads the fields of an agent's `configure` request; throws BAD_REQUEST naming the one at fault. */
export function parseConfigureRequest(o: Record<string, unknown>): ConfigureRequest {
  const stream = name(o, 'stream', 'configure', 'a stream name');
  if (!isObject(o.config)) throw badRequest('configure needs "config", a JSON object');
  const size = Buffer.byteLength(JSON.stringify(o.config));
  if (size > MAX_CONFIG_BYTES) throw badRequest(`configure: "config" is ${size} bytes of JSON; at most ${MAX_CONFIG_BYTES}`);
  const req: ConfigureRequest = { cmd: 'configure', stream, config: o.config };
  if (o.slot !== undefined) {
    if (!Number.isInteger(o.slot) || (o.slot as number) < 0) throw badRequest('configure: "slot" must be a whole number >= 0');
    req.slot = o.slot as number;
  }
  if (o.merge !== undefined) req.merge = o.merge === true;
  if (o.version !== undefined) {
    if (!isVersion(o.version) || o.version === 0) throw badRequest('configure: "version" must be a whole number from 1 to 4294967295');
    req.version = o.version;
  }
  if (o.timeoutMs !== undefined) {
    if (!Number.isInteger(o.timeoutMs) || (o.timeoutMs as number) < 1 || (o.timeoutMs as number) > 600_000) throw badRequest('configure: "timeoutMs" must be a whole number of ms from 1 to 600000');
    req.timeoutMs = o.timeoutMs as number;
  }
  return req;
}

/** Reads a portal's `configure` request (from its agent); throws BAD_REQUEST if it is not one. */
export function parsePortalConfigure(o: Record<string, unknown>): PortalConfigureRequest {
  const c = o.configs;
  const entryOk = (e: unknown) => isObject(e) && isVersion(e.version) && isObject(e.config);
  if (
    !isObject(c) ||
    typeof c.stream !== 'string' ||
    !isVersion(c.version) ||
    !(c.all === null || entryOk(c.all)) ||
    !isObject(c.slots) ||
    !Object.entries(c.slots).every(([k, e]) => /^\d+$/.test(k) && entryOk(e))
  ) {
    throw badRequest('configure needs "configs": {stream, version, all: {version, config} | null, slots: {"<slot>": {version, config}}}');
  }
  return { cmd: 'configure', configs: c as unknown as StreamConfigs };
}

/**
 * A `--set key=value` value: JSON where it parses as JSON (`3`, `true`, `{"a":1}`, `"x"`),
 * else the text itself (`fast` is the string "fast").
 */
export function parseSetValue(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function jsonOf(frame: Buffer | undefined): unknown {
  try {
    return JSON.parse(frame?.toString('utf8') ?? '') as unknown;
  } catch {
    return undefined;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isVersion(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;
}
