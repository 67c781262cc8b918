/**
 * Requests to a portal on this server over its control socket (what the agent, `portalctl`, the
 * demo and the tests use): typed by protocol/control.ts. Each fails with PORTAL_UNREACHABLE if
 * no portal answers in time, and with the portal's own code if it refuses the request.
 */
import { FlotillaError } from '../errors';
import type { PortalReplies, PortalRequest, PortalStats } from '../protocol/control';
import { controlEndpoint } from '../protocol/endpoints';
import { callControl, missingIpc } from '../transport/request';

/** How long a caller waits for a portal's reply unless told otherwise. */
export const DEFAULT_PORTAL_TIMEOUT_MS = 1000;

/** Sends one request to `stream`'s portal in `runDir` and returns its reply. */
export async function portalRequest<R extends PortalRequest>(
  runDir: string,
  stream: string,
  request: R,
  timeoutMs = DEFAULT_PORTAL_TIMEOUT_MS,
): Promise<PortalReplies[R['cmd']]> {
  const endpoint = controlEndpoint(runDir, stream);
  const missing = missingIpc(endpoint);
  if (missing !== null) throw new FlotillaError('PORTAL_UNREACHABLE', `no ${stream} portal on this server: ${endpoint} does not exist`);
  return callControl<PortalReplies[R['cmd']]>(
    endpoint,
    request,
    timeoutMs,
    (cause) => new FlotillaError('PORTAL_UNREACHABLE', `no answer from the ${stream} portal at ${endpoint} within ${timeoutMs} ms`, { cause }),
  );
}

/** The portal's counters, rates and slots. */
export function portalStats(runDir: string, stream: string, timeoutMs = DEFAULT_PORTAL_TIMEOUT_MS): Promise<PortalStats> {
  return portalRequest(runDir, stream, { cmd: 'stats' }, timeoutMs);
}
