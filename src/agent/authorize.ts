/**
 * Who may ask an agent what over TCP, in a map with keys (docs/security.md). ZAP admits only the
 * servers', operators' and senders' keys to the agent port (src/transport/zap.ts); each request
 * proves its key (src/transport/proof.ts), and then:
 *
 *   every command (and every one added later)     operators and servers
 *   release                                       operators, and the server that gave the buckets up (`from`)
 *   senders                                       only ping and cancel (a producer cancels its own
 *                                                 requests: a root id is known only to who holds its records)
 *   every reply to a key not an operator's        without local paths or pids (redact)
 *
 * Requests over ipc (this server's own run directory, guarded by its modes) are not checked here.
 */
import { FlotillaError } from '../errors';
import { type KeyHolder, keyHolder } from '../map/security';
import type { FlotillaMap } from '../map/types';
import type { AgentRequest } from '../protocol/control';

/** Commands a listed sender may make. */
export const SENDER_COMMANDS: readonly AgentRequest['cmd'][] = ['ping', 'cancel'];

/** Who proved a request: an operator, a server of the map, or a listed sender. */
export type Caller = KeyHolder;

/** The caller holding `key` in `map`; throws NOT_AUTHORIZED for a key the map does not list. */
export function callerOf(map: FlotillaMap, key: string): Caller {
  const holder = keyHolder(map, key);
  if (!holder) throw new FlotillaError('NOT_AUTHORIZED', `key ${key} is not an operator's, a server's or a sender's in the map in force`);
  return holder;
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
