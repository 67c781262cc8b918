/**
 * Requests to a portal on this server over its control socket (what the agent, `portalctl` and
 * the demo use). Each fails with a clear error if no portal answers in time.
 */
import * as zmq from 'zeromq';
import { FlotillaError } from './errors';
import type { PortalStats } from './portal';
import { controlEndpoint } from './run-dir';

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

/**
 * Sends `request` as JSON to a REP (or ROUTER) socket at `endpoint` and returns the parsed
 * reply. Rejects with a plain Error on a timeout, a socket error or a reply that is not JSON;
 * callers wrap it in an error that names what did not answer.
 */
export async function requestJson(endpoint: string, request: object, timeoutMs: number): Promise<unknown> {
  // Refresh libuv's cached clock first: after a long synchronous stretch it is stale, and a
  // timer started now would fire at once. (zeromq's own receiveTimeout has the same problem.)
  await new Promise((resolve) => setImmediate(resolve));
  const req = new zmq.Request({ linger: 0 });
  let timer: NodeJS.Timeout | undefined;
  try {
    req.connect(endpoint);
    const answer = (async () => {
      await req.send(JSON.stringify(request));
      const [reply] = await req.receive();
      return JSON.parse(reply!.toString('utf8')) as unknown;
    })();
    answer.catch(() => undefined); // closing the socket on a timeout rejects it; nobody waits
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    });
    return await Promise.race([answer, timeout]);
  } finally {
    clearTimeout(timer);
    req.close();
  }
}
