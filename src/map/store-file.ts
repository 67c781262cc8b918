/**
 * The file store: the map is a file on this server, read again on each reload (the agent watches
 * it; every other process reads it when an epoch change tells it to). Always "connected".
 */
import { readFileSync } from 'node:fs';
import { FlotillaError } from '../errors';
import type { MapStore, StoreHealth } from './store';

export class FileMapStore implements MapStore {
  readonly kind = 'file' as const;
  readonly health: StoreHealth;

  constructor(readonly source: string) {
    this.health = { kind: 'file', source, connected: true, error: null, since: Date.now() };
  }

  read(): string {
    try {
      return readFileSync(this.source, 'utf8');
    } catch (err) {
      throw new FlotillaError('MAP_UNREADABLE', `cannot read map ${this.source}: ${(err as Error).message}`, { cause: err });
    }
  }

  onChange(): void {
    // The agent watches the file itself (agent.ts); nothing to do here.
  }

  async close(): Promise<void> {
    // nothing held open
  }
}
