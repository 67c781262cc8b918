/**
 * The configurations an agent keeps for its server's components (the management bus), in
 * `<run_dir>/configs.json`, written atomically before a configuration is given to any portal, so
 * a component that starts or restarts, a portal that restarts, or the agent itself after a
 * restart, finds the current version.
 *
 *   portalctl configure --> Agent --ConfigStore.set (file first)--> portal --CONFIGURE--> components
 */
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../atomic-file';
import { FlotillaError } from '../errors';
import type { Logger } from '../log';
import { type Config, type ConfigEntry, effectiveConfig, MAX_STREAM_CONFIG_BYTES, type StreamConfigs } from '../protocol/configure';
import { configsFile } from '../protocol/endpoints';

/** What one `set` changed: the stream's configurations after it, and the entry it made. */
export interface ConfigChange {
  configs: StreamConfigs;
  entry: ConfigEntry;
}

export class ConfigStore {
  readonly path: string;
  private readonly streams = new Map<string, StreamConfigs>();

  constructor(runDir: string, log: Logger) {
    this.path = configsFile(runDir);
    let raw: string;
    try {
      raw = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ file: this.path }, `${this.path}: cannot read the configurations (${(err as Error).message}); starting without`);
      return;
    }
    try {
      const all = JSON.parse(raw) as { streams?: StreamConfigs[] };
      for (const sc of all.streams ?? []) this.streams.set(sc.stream, sc);
    } catch (err) {
      log.error({ file: this.path }, `${this.path}: not a configurations file (${(err as Error).message}); starting without (it is replaced at the next configure)`);
    }
  }

  /** The configurations of `stream`, or null if it has none. */
  get(stream: string): StreamConfigs | null {
    return this.streams.get(stream) ?? null;
  }

  /** Every stream's configurations. */
  all(): StreamConfigs[] {
    return [...this.streams.values()];
  }

  /**
   * Gives `stream` (or its `slot`) `config` as the next version (or `version`, which must be
   * above the current: CONFIG_STALE otherwise); with `merge`, on top of the configuration in
   * force there. Written to the file before it returns.
   */
  set(stream: string, slot: number | undefined, config: Config, o: { merge?: boolean; version?: number; now?: number }): ConfigChange {
    const current: StreamConfigs = this.streams.get(stream) ?? { stream, version: 0, all: null, slots: {} };
    if (o.version !== undefined && o.version <= current.version) {
      throw new FlotillaError('CONFIG_STALE', `configuration version ${o.version} of ${stream} is not above the current ${current.version}`);
    }
    const version = o.version ?? current.version + 1;
    if (version > 0xffffffff) throw new FlotillaError('CONFIG_STALE', `${stream} has used every configuration version`);
    const base = !o.merge ? {} : slot === undefined ? (current.all?.config ?? {}) : (effectiveConfig(current, slot)?.config ?? {});
    const entry: ConfigEntry = { version, config: { ...base, ...config }, at: o.now ?? Date.now() };
    // A stream-wide configuration replaces the slots' own (they are older): they are dropped.
    const next: StreamConfigs = slot === undefined ? { stream, version, all: entry, slots: {} } : { ...current, version, slots: { ...current.slots, [String(slot)]: entry } };
    const size = Buffer.byteLength(JSON.stringify(next));
    if (size > MAX_STREAM_CONFIG_BYTES) {
      throw new FlotillaError('CONFIG_INVALID', `${stream}'s configurations would be ${size} bytes of JSON; at most ${MAX_STREAM_CONFIG_BYTES} (give fewer slots their own)`);
    }
    const streams = new Map(this.streams).set(stream, next);
    writeFileAtomic(this.path, JSON.stringify({ streams: [...streams.values()] }, null, 1) + '\n');
    this.streams.set(stream, next);
    return { configs: next, entry };
  }
}
