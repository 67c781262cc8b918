/**
 * Requests to a portal on this server over its control socket (what the agent, `portalctl` and
 * the demo use). Each fails with a clear error if no portal answers in time.
 */
import { FlotillaError } from '../errors';
import type { PortalStats } from './portal';
import { controlEndpoint } from '../protocol/endpoints';
import { requestJson } from '../transport/request';

export function portalStats(runDir: string, stream: string, timeoutMs = 1000): Promise<PortalStats> {
  return portalRequest<PortalStats>(runDir, stream, { cmd: 'stats' }, timeoutMs);
}

/**
 * Sends one JSON request to a portal's control socket (`stats`, `beacon`, `pause`, `resume`,
 * `switch`, `drained`, `release`, `ping`) and returns its JSON reply.
 */
export async function portalRequest<T>(runDir: string, stream: string, request: object, timeoutMs = 1000): Promise<T> {
  const endpoint = controlEndpoint(runDir, stream);
  try {
    return (await requestJson(endpoint, request, timeoutMs)) as T;
  } catch (err) {
    throw new FlotillaError('PORTAL_UNREACHABLE', `no answer from the ${stream} portal at ${endpoint} within ${timeoutMs} ms`, { cause: err });
  }
}
