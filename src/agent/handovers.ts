/**
 * One handover interface, two stores: how a new owner learns that the old owner of buckets it
 * holds has drained them, and how an old owner says so. With map files the agents ask each other
 * (`drained` at the old owner's agent_port: `AgentHandovers`); with an etcd map the old owner
 * writes a drain record and the new owner reads it (handovers-etcd.ts). The rounds
 * (epoch-switch.ts) are the same either way.
 */
import type { FlotillaMap } from '../map/types';
import type { PortalBeacon } from '../protocol/beacons';
import type { HandoverReply } from '../protocol/control';
import { askAgent, remoteAgent } from './client';

/** Whether the old owner has drained: yes, or why not (a reason for a person, naming whom it waits for). */
export type DrainWord = { drained: true } | { drained: false; reason: string };

/** A release made here: the buckets of `stream` held for `from` since `epoch`, now processed here. */
export interface ReleaseNote {
  from: string;
  stream: string;
  epoch: number;
  digest: string;
  buckets: number[];
  /** Ended by an operator without the old owner's word. */
  forced: boolean;
}

export interface HandoverStore {
  readonly kind: 'agents' | 'etcd';
  /** Old owner's side, each round: record what this server's portals have drained (nothing to do when asked instead). */
  publish(beacons: PortalBeacon[], target: FlotillaMap, previous: FlotillaMap): Promise<void>;
  /** New owner's side: has `from` drained what it gave up of `stream` in the switch to `epoch` (map `digest`)? */
  drained(from: string, stream: string, epoch: number, digest: string, maps: readonly FlotillaMap[]): Promise<DrainWord>;
  /** Notes a release made here. */
  released(note: ReleaseNote): Promise<void>;
}

/** The file way: the new owner's agent asks the old owner's (`drained`, over TCP). */
export class AgentHandovers implements HandoverStore {
  readonly kind = 'agents' as const;

  constructor(private readonly timeoutMs: number) {}

  async publish(): Promise<void> {
    // The old owner is asked (answerDrained in epoch-switch.ts); nothing to write.
  }

  async drained(from: string, stream: string, epoch: number, digest: string, maps: readonly FlotillaMap[]): Promise<DrainWord> {
    const server = maps.map((m) => m.servers.find((s) => s.name === from)).find((s) => s !== undefined);
    const agent = server ? remoteAgent(server) : null;
    if (!agent) return { drained: false, reason: server ? `${from} has no agent_port in the map, so it cannot be asked` : `${from} is not in the map any more` };
    let reply: HandoverReply;
    try {
      reply = await askAgent(agent, { cmd: 'drained', stream, epoch, digest }, this.timeoutMs);
    } catch (err) {
      return { drained: false, reason: `${from} does not answer (${(err as Error).message})` };
    }
    return reply.drained ? { drained: true } : { drained: false, reason: `${from}: ${reply.reason ?? 'not drained yet'}` };
  }

  async released(): Promise<void> {
    // The portal's handover file keeps what it holds; nothing else to write.
  }
}
