/**
 * The agent's book of its portals' beacons: the last beacon of each stream's portal on this
 * server, and from it each portal's state (running, paused, idle, dead, missing).
 *
 *   portal --PortalBeacon (ipc PUSH, every heartbeat_ms)--> agent.beacons.ipc (PULL) --> BeaconBook
 */
import { chmodSync } from 'node:fs';
import * as zmq from 'zeromq';
import { DEAD_AFTER_BEATS, type PortalBeacon } from '../protocol/beacons';
import type { PortalState, StreamStatus } from '../protocol/control';
import { receiveEach } from '../transport/receive';

/** A beacon and when it arrived. */
export interface Seen {
  beacon: PortalBeacon;
  receivedAt: number;
}

export class BeaconBook {
  private readonly seen = new Map<string, Seen>();
  private readonly pull = new zmq.Pull({ linger: 0, maxMessageSize: 4 << 20 });
  private closed = false;

  constructor(
    /** This agent's server: beacons from another server's portals are refused. */
    private readonly server: string,
    /** Counts a bad beacon by cause, as the agent's other errors. */
    private readonly count: (cause: string, example: string) => void,
  ) {}

  /** Binds the PULL socket portals send to (an ipc socket file made `mode`), and starts reading. */
  async bind(endpoint: string, mode: number): Promise<void> {
    await this.pull.bind(endpoint);
    chmodSync(endpoint.slice('ipc://'.length), mode);
    void this.loop();
  }

  close(): void {
    this.closed = true;
    this.pull.close();
  }

  /** Records a portal's beacon, unless a fresher one of the same process is already here. */
  note(beacon: PortalBeacon, receivedAt = Date.now()): void {
    // A periodic beacon can arrive after a fresher one asked for on the control socket.
    const seen = this.seen.get(beacon.stream);
    if (seen && seen.beacon.pid === beacon.pid && seen.beacon.at > beacon.at) return;
    this.seen.set(beacon.stream, { beacon, receivedAt });
  }

  /** The state of `stream`'s portal at `now`. */
  status(stream: string, now: number, heartbeatMs: number): StreamStatus {
    return streamStatus(stream, this.seen.get(stream), now, heartbeatMs);
  }

  private loop(): Promise<void> {
    return receiveEach(this.pull, {
      closed: () => this.closed,
      handle: (frames) => this.onBeacon(frames[0]!),
      crashed: (err) => this.count('BAD_BEACON', String(err)),
    });
  }

  private onBeacon(frame: Buffer): void {
    let beacon: unknown;
    try {
      beacon = JSON.parse(frame.toString('utf8'));
    } catch {
      return this.count('BAD_BEACON', 'a beacon that is not JSON');
    }
    if (!isBeacon(beacon)) return this.count('BAD_BEACON', `not a portal beacon: ${frame.toString('utf8').slice(0, 120)}`);
    if (beacon.server !== this.server) {
      return this.count('OTHER_SERVER', `a beacon from the ${beacon.stream} portal of ${beacon.server}; this agent is ${this.server}`);
    }
    this.note(beacon);
  }
}

/** A stream's portal state from its last beacon (if any) at time `now`. */
export function streamStatus(stream: string, seen: Seen | undefined, now: number, heartbeatMs: number): StreamStatus {
  if (!seen) return { stream, state: 'missing', paused: false, idle: false, ageMs: null, beacon: null };
  const ageMs = now - seen.receivedAt;
  const { beacon } = seen;
  if (ageMs > DEAD_AFTER_BEATS * heartbeatMs) return { stream, state: 'dead', paused: beacon.paused, idle: false, ageMs, beacon };
  const state: PortalState = beacon.paused ? 'paused' : beacon.idle ? 'idle' : 'running';
  return { stream, state, paused: beacon.paused, idle: beacon.idle, ageMs, beacon };
}

/** True if `v` has the shape of a portal's beacon. */
export function isBeacon(v: unknown): v is PortalBeacon {
  const b = v as PortalBeacon;
  return typeof v === 'object' && v !== null && b.type === 'portal' && typeof b.stream === 'string' && typeof b.server === 'string' && Array.isArray(b.slots);
}
