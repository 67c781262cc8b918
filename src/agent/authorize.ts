/**
 * Who may ask an agent what over TCP, in a map with keys (docs/security.md). ZAP admits only the
 * servers', operators' and senders' keys to the agent port (src/transport/zap.ts); each request
 * proves its key (src/transport/proof.ts), and then:
 *
 *   read-only (ping, status, map, load, drained)  operators and servers; status without local
 *                                                 paths or pids unless an operator asks
 *   release                                       operators, and the server that gave the buckets up (`from`)
 *   anything else (pause, resume, reload, and every command added later)   operators and servers
 *   senders                                       only ping and cancel (a producer cancels its own
 *                                                 requests: a root id is known only to who holds its records)
 *
 * Requests over ipc (this server's own run directory, guarded by its modes) are not checked here.
 */
import { FlotillaError } from '../errors';
import type { FlotillaMap } from '../map/types';
import type { AgentRequest } from '../protocol/control';

/** Commands that change nothing: a new command is not one unless added here. */
export const READ_ONLY_COMMANDS: readonly AgentRequest['cmd'][] = ['ping', 'status', 'map', 'load', 'drained', 'configs'];

/** Commands a listed sender may make. */
export const SENDER_COMMANDS: readonly AgentRequest['cmd'][] = ['ping', 'cancel'];

/** Who proved a request: an operator, a server of the map, or a listed sender. */
export interface Caller {
  role: 'operator' | 'server' | 'sender';
  name: string;
}

/** The caller holding `key` in `map`; throws NOT_AUTHORIZED for a key that is neither an operator's nor a server's. */
export function callerOf(map: FlotillaMap, key: string): Caller {
  const operator = map.security.operators.find((k) => k.publicKey === key);
  if (operator) return { role: 'operator', name: operator.name };
  const server = map.servers.find((s) => s.publicKey === key);
  if (server) return { role: 'server', name: server.name };
  const sender = map.security.senders.find((k) => k.publicKey === key);
  if (sender) return { role: 'sender', name: sender.name };
  throw new FlotillaError('NOT_AUTHORIZED', `key ${key} is not an operator's, a server's or a sender's in the map in force`);
}

/** Throws NOT_AUTHORIZED unless `caller` may make `req` (the table above). */
export function authorize(caller: Caller, req: AgentRequest): void {
  if (caller.role === 'sender' && !SENDER_COMMANDS.includes(req.cmd)) {
    throw new FlotillaError('NOT_AUTHORIZED', `sender ${caller.name} may not ${req.cmd}: a sender's key may only ${SENDER_COMMANDS.join(' and ')} (operators and servers do the rest)`);
  }
  if (req.cmd === 'release' && caller.role === 'server' && caller.name !== req.from) {
    throw new FlotillaError('NOT_AUTHORIZED', `server ${caller.name} may not release the buckets of ${req.from}: only ${req.from} (whose buckets they were) or an operator may`);
  }
}

/** Field names that give away the host's layout or processes, left out of status for a non-operator. */
const LOCAL_FIELDS = new Set(['pid', 'pids', 'mapFile', 'runDir', 'dir', 'file', 'path', 'processes', 'disks']);

/** `reply` without local paths and pids (at any depth), for a caller that is not an operator. */
export function redact<T>(reply: T): T {
  return JSON.parse(JSON.stringify(reply), (k, v: unknown) => (LOCAL_FIELDS.has(k) ? undefined : v)) as T;
}
