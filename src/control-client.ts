/**
 * Asks a portal on this server for its stats over its control socket (what `portalctl status`
 * and the demo show). Fails with a clear error if no portal answers in time.
 */
import * as zmq from 'zeromq';
import { FlotillaError } from './errors';
import type { PortalStats } from './portal';
import { controlEndpoint } from './run-dir';

export async function portalStats(runDir: string, stream: string, timeoutMs = 1000): Promise<PortalStats> {
  const endpoint = controlEndpoint(runDir, stream);
  // Refresh libuv's cached clock first: after a long synchronous stretch it is stale, and a
  // timer started now would fire at once.
  await new Promise((resolve) => setImmediate(resolve));
  const req = new zmq.Request({ linger: 0 });
  let timer: NodeJS.Timeout | undefined;
  try {
    req.connect(endpoint);
    const answer = (async () => {
      await req.send('{"cmd":"stats"}');
      const [reply] = await req.receive();
      return JSON.parse(reply!.toString('utf8')) as PortalStats;
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
