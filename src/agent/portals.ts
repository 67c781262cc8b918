/**
 * The agent's hand on its server's portals: pause or resume a set of streams in parallel, and
 * ask every portal for a fresh beacon. Each portal answers on its control socket in the run
 * directory (portal/client.ts); one that does not answer is reported, never waited on forever.
 *
 *   agent --{"cmd":"pause"} (REQ)--> <run_dir>/<stream>.ctl.ipc
 */
import { FlotillaError } from '../errors';
import type { Logger } from '../log';
import type { FlotillaMap } from '../map/types';
import { portalRequest } from '../portal/client';
import type { PortalBeacon } from '../protocol/beacons';
import type { LoadReport, PauseReply, PortalReplies, PortalRequest, StreamResult } from '../protocol/control';
import { isBeacon } from './beacons';

/** Pauses (or resumes) the portals of `streams` (default every stream of `map`). */
export async function pausePortals(
  o: { server: string; runDir: string; map: FlotillaMap; timeoutMs: number; log: Logger },
  paused: boolean,
  streams?: string[],
): Promise<PauseReply> {
  const { map } = o;
  const names = streams && streams.length > 0 ? streams : map.streams.map((s) => s.name);
  const unknown = names.filter((n) => !map.streams.some((s) => s.name === n));
  if (unknown.length > 0) {
    throw new FlotillaError('UNKNOWN_STREAM', `no stream ${unknown.map((n) => `"${n}"`).join(', ')} in the map in force (streams: ${map.streams.map((s) => s.name).join(', ')})`);
  }
  const cmd = paused ? 'pause' : 'resume';
  const results = await Promise.all(
    names.map(async (stream): Promise<StreamResult> => {
      try {
        const reply = await portalRequest(o.runDir, stream, { cmd }, o.timeoutMs);
        return { stream, ok: reply.paused === paused, paused: reply.paused };
      } catch (err) {
        const e = err instanceof FlotillaError ? err : new FlotillaError('INTERNAL', String(err));
        // Unreachable: the error says so; anything else is the portal refusing.
        if (e.code === 'PORTAL_UNREACHABLE') return { stream, ok: false, error: e.message, code: e.code };
        return { stream, ok: false, error: `the ${stream} portal refused ${cmd}: ${e.message}`, code: e.code };
      }
    }),
  );
  const ok = results.every((r) => r.ok);
  const failed = results.filter((r) => !r.ok);
  if (ok) o.log.info({ streams: names }, `${cmd}: ${names.join(', ')}`);
  else o.log.warn({ streams: names, failed }, `${cmd}: failed for ${failed.map((r) => r.stream).join(', ')}`);
  return { server: o.server, ok, results };
}

/** Asks the portal of each of `streams` for its current beacon; those that answer in time. */
export async function freshBeacons(runDir: string, streams: readonly string[], timeoutMs: number): Promise<PortalBeacon[]> {
  // No answer: the periodic beacons (or their absence) tell.
  return (await askEachPortal(runDir, streams, { cmd: 'beacon' }, timeoutMs)).filter(isBeacon);
}

/** Each portal's load report (those that answer). */
export function portalLoads(runDir: string, streams: readonly string[], timeoutMs: number): Promise<LoadReport[]> {
  return askEachPortal(runDir, streams, { cmd: 'load' }, timeoutMs);
}

/** Sends `request` to the portal of each of `streams` at once; the replies of those that answer in time. */
async function askEachPortal<R extends PortalRequest>(runDir: string, streams: readonly string[], request: R, timeoutMs: number): Promise<PortalReplies[R['cmd']][]> {
  const replies = await Promise.all(streams.map((stream) => portalRequest(runDir, stream, request, timeoutMs).catch(() => null)));
  return replies.filter((r): r is Awaited<PortalReplies[R['cmd']]> => r !== null);
}
