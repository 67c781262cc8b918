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
 * `ping`) and returns its JSON reply.
 */
export async function portalRequest<T>(runDir: string, stream: string, request: object, timeoutMs = 1000): Promise<T> {
  const endpoint = controlEndpoint(runDir, stream);
  // Refresh libuv's cached clock first: after a long synchronous stretch it is stale, and a
  // timer started now would fire at once.
  await new Promise((resolve) => setImmediate(resolve));
  const req = new zmq.Request({ linger: 0 });
  let timer: NodeJS.Timeout | undefined;
  try {
    req.connect(endpoint);
    const answer = (async () => {
      await req.send(JSON.stringify(request));
      const [reply] = await req.receive();
      return JSON.parse(reply!.toString('utf8')) as T;
    })();
    answer.catch(() => undefined); // closing the socket on a timeout rejects it; nobody waits
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timed out')), timeoutMs);
    });
    return await Promise.race([answer, timeout]);
  } catch (err) {
    throw new FlotillaError('PORTAL_UNREACHABLE', `no answer from the ${stream} portal at ${endpoint} within ${timeoutMs} ms`, { cause: err });
  } finally {
    clearTimeout(timer);
    req.close();
  }
}
