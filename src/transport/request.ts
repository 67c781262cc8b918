/**
 * One request, one reply: a JSON request to a control socket (REP or ROUTER) and its JSON reply,
 * bounded by a timeout. Every control client (portalctl, the agent, the demo) goes through it.
 */
import * as zmq from 'zeromq';

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
