/**
 * The agent's part of a cancellation (docs/protocol.md, "Cancellation"): keep it in force on disk
 * (`<run_dir>/cancels.json`), then send it to every portal of the server.
 *
 *   portalctl cancel / Sender.cancel --{"cmd":"cancel", stream, root, ttlMs}--> agent
 *     cancels.json (written first: a portal that starts reads it) --> each portal's `cancel`
 *
 * The file is written before any portal is told, and a portal reads it once its control socket
 * is bound: a portal restarting meanwhile either is reached, or starts after the write and reads
 * it. So a cancellation is never lost for a portal that is up or comes up before it expires.
 */
import { FlotillaError } from '../errors';
import type { Logger } from '../log';
import type { FlotillaMap } from '../map/types';
import { portalRequest } from '../portal/client';
import { type AgentCancelRequest, type CancelPortalResult, type CancelReply, CONFIRM_MS, readCancels, writeCancels } from '../protocol/cancel';

/** Keeps the cancellation on disk, sends it to every portal here; what each portal did. */
export async function cancelHere(
  o: { server: string; runDir: string; map: FlotillaMap; timeoutMs: number; log: Logger },
  req: AgentCancelRequest,
): Promise<CancelReply> {
  if (!o.map.streams.some((s) => s.name === req.stream)) {
    throw new FlotillaError('UNKNOWN_STREAM', `no stream "${req.stream}" in the map in force (streams: ${o.map.streams.map((s) => s.name).join(', ')})`);
  }
  const now = Date.now();
  const expiresAt = now + req.ttlMs;
  const list = readCancels(o.runDir, now).filter((c) => c.root !== req.root);
  const cancellation = { root: req.root, stream: req.stream, expiresAt };
  list.push(cancellation);
  writeCancels(o.runDir, list);
  // The portal answers once its components confirmed, within CONFIRM_MS; a second more for the rest.
  const timeoutMs = o.timeoutMs + CONFIRM_MS + 1000;
  const portals = await Promise.all(
    o.map.streams.map(async ({ name }): Promise<CancelPortalResult> => {
      try {
        const r = await portalRequest(o.runDir, name, { cmd: 'cancel', cancellations: [cancellation] }, timeoutMs);
        return { stream: name, ok: true, dropped: r.dropped, unconfirmed: r.unconfirmed };
      } catch (err) {
        const e = err instanceof FlotillaError ? err : new FlotillaError('INTERNAL', String(err));
        return { stream: name, ok: false, error: `${e.message} [${e.code}]; it takes the cancellation from ${o.runDir}/cancels.json when it starts` };
      }
    }),
  );
  const dropped = portals.reduce((n, p) => n + (p.dropped ?? 0), 0);
  o.log.info({ root: req.root, stream: req.stream, expiresAt, dropped }, `cancel ${req.root} (${req.stream}): in force until ${new Date(expiresAt).toISOString()}; ${dropped} records dropped`);
  return { server: o.server, ok: true, root: req.root, expiresAt, portals };
}
