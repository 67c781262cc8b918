/**
 * The portal's part of the management bus: the stream's configurations, as its agent gave them,
 * and each slot's: which version it must run, which it runs, which it rejected.
 *
 *   agent --configure {configs} (control socket)--> PortalConfigs.set --CONFIGURE--> each live slot
 *   component --READY--> PortalConfigs.onReady --CONFIGURE (its version)--> the component
 *   component --CONFIGURED {version, ok, reason}--> PortalConfigs.onConfigured
 *
 * A CONFIGURE goes on the slots' socket at once, beside the deliveries, never queued behind
 * them (the SDK reads it as it arrives, docs/protocol.md "Configurations"). A slot is sent each
 * version once per registration; a component that registers again is sent its version again.
 */
import type { Logger } from '../log';
import { type ConfigureBody, effectiveConfig, parseConfiguredBody, type StreamConfigs } from '../protocol/configure';
import { encodeHeader, MessageType } from '../protocol/wire';
import type { Slot } from './slot';

export type { StreamConfigs } from '../protocol/configure';

/** What the configurations need of the portal. */
export interface ConfigsHost {
  readonly stream: string;
  readonly slots: readonly Slot[];
  /** The map epoch in force, for headers. */
  epoch(): number;
  /** Sends `frames` to the component registered for `slot` (egress.ts). */
  tell(slot: Slot, frames: Buffer[]): void;
  /** Counts a malformed message by cause. */
  count(cause: string, example: string): void;
}

export class PortalConfigs {
  private configs: StreamConfigs | null = null;
  /** Per slot: the version sent to its current registration (0: none). */
  private readonly sent: number[];

  constructor(
    private readonly host: ConfigsHost,
    private readonly log: Logger,
  ) {
    this.sent = host.slots.map(() => 0);
  }

  /** The newest version the agent gave this portal; 0 before any. */
  get version(): number {
    return this.configs?.version ?? 0;
  }

  /** The agent's configurations of the stream: every live slot whose version changed is sent it. */
  set(configs: StreamConfigs): { ok: true; version: number } {
    if (configs.stream !== this.host.stream) return { ok: true, version: this.version }; // not ours: ignored
    this.configs = configs;
    for (const slot of this.host.slots) this.offer(slot);
    this.log.info({ stream: configs.stream, version: configs.version }, `portal ${configs.stream}: configuration version ${configs.version} from the agent`);
    return { ok: true, version: configs.version };
  }

  /** A component registered for `slot`: it is sent the slot's configuration, if there is one. */
  onReady(slot: Slot): void {
    this.sent[slot.index] = 0;
    slot.config.running = null;
    slot.config.rejected = null;
    this.offer(slot);
  }

  /** A CONFIGURED from `slot`'s registered component. */
  onConfigured(slot: Slot, frame: Buffer | undefined): void {
    const body = parseConfiguredBody(frame);
    if (!body || body.slot !== slot.index) return this.host.count('COMPONENT_MALFORMED', 'CONFIGURED without a JSON body {slot, version, ok}');
    const stream = this.host.stream;
    if (body.ok) {
      slot.config.running = body.version;
      if (slot.config.rejected?.version === body.version) slot.config.rejected = null;
      this.log.info({ slot: slot.index, version: body.version }, `portal ${stream}: slot ${slot.index} runs configuration version ${body.version}`);
      return;
    }
    slot.config.rejected = { version: body.version, reason: body.reason ?? 'no reason given' };
    this.log.warn({ slot: slot.index, version: body.version, reason: body.reason }, `portal ${stream}: slot ${slot.index} (pid ${slot.pid}) rejected configuration version ${body.version}: ${body.reason}`);
  }

  /** Sends `slot` its configuration unless it runs it or was sent it already. */
  private offer(slot: Slot): void {
    const entry = this.configs ? effectiveConfig(this.configs, slot.index) : null;
    slot.config.wanted = entry?.version ?? 0;
    if (!entry || !slot.routingId) return;
    if (slot.config.running === entry.version || this.sent[slot.index] === entry.version) return;
    this.sent[slot.index] = entry.version;
    const body: ConfigureBody = { version: entry.version, config: entry.config };
    this.host.tell(slot, [encodeHeader(MessageType.CONFIGURE, entry.version, this.host.epoch(), 0), Buffer.from(JSON.stringify(body))]);
  }
}
