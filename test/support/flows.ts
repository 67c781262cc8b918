/**
 * Maps and loads shared by the end-to-end tests: the record schema every test stream uses, a
 * two-stream map, a map with a spool, and RoundLoad, a steady keyed load. What the components
 * recorded is checked with ./records.
 */
import type { Sender } from '../../src/sender/sender';

/** The payload schema of the test streams: a record `{ key: string, seq: long }` named `name`. */
export const RECORD_SCHEMA = (name: string) => ({
  type: 'record',
  name,
  fields: [
    { name: 'key', type: 'string' },
    { name: 'seq', type: 'long' },
  ],
});

/** A one-server map with streams `orders` and `audits`, 4 slots each, on the given ports. */
export function twoStreamMap(ports: number[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    instance: 'test',
    epoch: 1,
    servers: [{ name: 'solo', host: '127.0.0.1' }],
    streams: [
      { name: 'orders', key: 'key', port: ports[0], buckets: 256, slots: 4, schema: RECORD_SCHEMA('Order') },
      { name: 'audits', key: 'key', port: ports[1], buckets: 256, slots: 4, schema: RECORD_SCHEMA('Audit') },
    ],
    ...extra,
  };
}

/**
 * A one-server map (server `local` on 127.0.0.1 with an agent port) with one stream, `clicks`,
 * keyed by `user`: what the operations tests (units, install, signals, directories) run.
 */
export function clicksMap(o: { instance: string; runDir: string; agentPort: number; port: number; slots?: number }): Record<string, unknown> {
  return {
    instance: o.instance,
    epoch: 1,
    heartbeat_ms: 200,
    run_dir: o.runDir,
    security: { plain_tcp: true }, // one host on loopback
    servers: [{ name: 'local', host: '127.0.0.1', agent_port: o.agentPort }],
    streams: [{ name: 'clicks', key: 'user', port: o.port, slots: o.slots ?? 4, schema: { type: 'record', name: 'Click', fields: [{ name: 'user', type: 'string' }] } }],
  };
}

/** A one-server map with stream `orders` (4 slots, 64 buckets, 200 ms heartbeats) whose spool is set by `spool`. */
export function spoolMap(port: number, spool: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    instance: 'test',
    epoch: 1,
    heartbeat_ms: 200,
    servers: [{ name: 'solo', host: '127.0.0.1' }],
    streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: 4, schema: RECORD_SCHEMA('Order'), spool }],
    ...extra,
  };
}

/**
 * A steady load for tests: rounds of one record per key (`k0`..`k<keys-1>`, seq = round number)
 * until `stop()`, with `pauseMs` between rounds; while the sender's window is full it waits, so a
 * paused or slow portal slows it down instead of filling memory.
 */
export class RoundLoad {
  /** Rounds sent so far: every key has records with seq 0..rounds-1. */
  rounds = 0;
  private sending = true;
  private readonly done: Promise<void>;

  constructor(sender: Sender, stream: string, readonly keys: number, pauseMs: number) {
    this.done = (async () => {
      while (this.sending) {
        for (let k = 0; k < keys; k++) sender.send(stream, { key: `k${k}`, seq: this.rounds });
        this.rounds++;
        await sender.writable();
        await new Promise((r) => setTimeout(r, pauseMs));
      }
    })();
  }

  /** Records sent so far. */
  get sent(): number {
    return this.rounds * this.keys;
  }

  /** Stops after the round in progress; resolves when the loop has ended (rejects if it failed). */
  stop(): Promise<void> {
    this.sending = false;
    return this.done;
  }
}
