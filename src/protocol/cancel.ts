/**
 * Cancellation out of band (docs/protocol.md, "Cancellation"): what a cancellation is, the
 * control requests that carry it (portalctl or a sender -> every agent -> its portals), the
 * CANCEL message a portal sends its components, and the agent's file that keeps the
 * cancellations in force across restarts (`<run_dir>/cancels.json`), which a portal reads when it
 * starts.
 *
 *   portalctl cancel / Sender.cancel --{"cmd":"cancel"}--> every agent --> cancels.json, then
 *     --{"cmd":"cancel","cancellations":[...]}--> each portal --CANCEL (22)--> each component
 *                                                            <--CANCELLED (23)--
 */
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../atomic-file';
import { join, resolve } from 'node:path';
import { badRequest, name } from './fields';
import { isRootId } from './root';

/** How long a cancellation stays in force unless told otherwise: 10 minutes. */
export const DEFAULT_CANCEL_TTL_MS = 10 * 60_000;
/** The longest a cancellation may stay in force: 7 days. */
export const MAX_CANCEL_TTL_MS = 7 * 24 * 3600_000;

/** One cancellation: every record of root `root` not yet delivered is dropped until `expiresAt`. */
export interface Cancellation {
  /** The root record's id, 32 lowercase hex digits (src/protocol/root.ts). */
  root: string;
  /** The stream the root was sent on (said in logs and status; the cancellation reaches every stream). */
  stream: string;
  /** When it stops being in force, ms since the Unix epoch. */
  expiresAt: number;
}

/** An agent's `cancel`: from portalctl, a sender, or a script. */
export interface AgentCancelRequest {
  cmd: 'cancel';
  stream: string;
  root: string;
  ttlMs: number;
}

/** A portal's `cancel`, from its agent: the cancellations to put in force. */
export interface PortalCancelRequest {
  cmd: 'cancel';
  cancellations: Cancellation[];
}

/** A portal's answer: records dropped, and which live components confirmed (CANCELLED). */
export interface PortalCancelReply {
  ok: true;
  /** Records dropped at once (queued, held; spooled ones are dropped as they are read back). */
  dropped: number;
  /** Slots whose components confirmed the CANCEL. */
  confirmed: number[];
  /** Live slots that did not confirm in time (they still get it with their next READY). */
  unconfirmed: number[];
}

/** One portal's part of an agent's answer. */
export interface CancelPortalResult {
  stream: string;
  ok: boolean;
  dropped?: number;
  unconfirmed?: number[];
  error?: string;
}

/** An agent's answer to `cancel`: the cancellation is on its disk; what each portal did. */
export interface CancelReply {
  server: string;
  ok: boolean;
  root: string;
  expiresAt: number;
  portals: CancelPortalResult[];
}

/** The JSON frame of a CANCEL (portal -> component). */
export interface CancelMessage {
  cancellations: { root: string; expiresAt: number }[];
}

/** Checks an agent's `cancel` request (BAD_REQUEST names the field). */
export function parseAgentCancel(o: Record<string, unknown>): AgentCancelRequest {
  const stream = name(o, 'stream', 'cancel', 'a stream name');
  if (typeof o.root !== 'string' || !isRootId(o.root)) throw badRequest('cancel needs "root", a record id as 32 lowercase hex digits');
  const ttl = o.ttlMs ?? DEFAULT_CANCEL_TTL_MS;
  if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1 || ttl > MAX_CANCEL_TTL_MS) throw badRequest(`cancel's "ttlMs" must be a whole number of ms from 1 to ${MAX_CANCEL_TTL_MS}`);
  return { cmd: 'cancel', stream, root: o.root, ttlMs: ttl };
}

/** Checks a portal's `cancel` request. */
export function parsePortalCancel(o: Record<string, unknown>): PortalCancelRequest {
  const list = o.cancellations;
  if (!Array.isArray(list) || list.length > 100_000 || !list.every(isCancellation)) {
    throw badRequest('cancel needs "cancellations", a list of {root, stream, expiresAt}');
  }
  return { cmd: 'cancel', cancellations: list };
}

function isCancellation(c: unknown): c is Cancellation {
  const o = c as Partial<Cancellation> | null;
  return typeof o === 'object' && o !== null && typeof o.root === 'string' && isRootId(o.root) && typeof o.stream === 'string' && typeof o.expiresAt === 'number';
}

/** How long a portal waits for its live components to confirm a CANCEL, ms. */
export const CONFIRM_MS = 3000;

/** Where an agent keeps the cancellations in force. */
export function cancelsFile(runDir: string): string {
  return join(resolve(runDir), 'cancels.json');
}

/** The cancellations in force in a run directory's file (none if it is missing or unreadable). */
export function readCancels(runDir: string, now = Date.now()): Cancellation[] {
  try {
    const v = JSON.parse(readFileSync(cancelsFile(runDir), 'utf8')) as { cancellations?: unknown };
    return Array.isArray(v.cancellations) ? v.cancellations.filter(isCancellation).filter((c) => c.expiresAt > now) : [];
  } catch {
    return [];
  }
}

/** Writes the cancellations in force so that a crash leaves the old file or the new one. */
export function writeCancels(runDir: string, cancellations: readonly Cancellation[]): void {
  writeFileAtomic(cancelsFile(runDir), JSON.stringify({ cancellations }));
}
