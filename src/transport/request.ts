/**
 * One request, one reply: a JSON request to a control socket (REP or ROUTER) and its JSON reply,
 * bounded by a timeout. Every control client (portalctl, the agent, the demo) goes through it.
 */
import { existsSync } from 'node:fs';
import * as zmq from 'zeromq';
import { FlotillaError } from '../errors';
import { isErrorReply } from '../protocol/control';
import { clientOptions, ownKey } from './curve';
import { signRequest } from './proof';

/**
 * Sends `request` as JSON to a REP (or ROUTER) socket at `endpoint` and returns the parsed
 * reply. Rejects with a plain Error on a timeout, a socket error or a reply that is not JSON;
 * callers wrap it in an error that names what did not answer. `serverKey`: the server's CURVE
 * public key (a keyed map), the connection then runs CURVE with this process's key.
 */
export async function requestJson(endpoint: string, request: object, timeoutMs: number, serverKey?: string): Promise<unknown> {
  // Refresh libuv's cached clock first: after a long synchronous stretch it is stale, and a
  // timer started now would fire at once. (zeromq's own receiveTimeout has the same problem.)
  await new Promise((resolve) => setImmediate(resolve));
  const req = new zmq.Request({ linger: 0, ...clientOptions(serverKey) });
  // A keyed server learns who asks from the proof in the request (proof.ts), not from the socket.
  const body = serverKey === undefined ? request : signRequest(request, ownKey(), serverKey);
  let timer: NodeJS.Timeout | undefined;
  try {
    req.connect(endpoint);
    const answer = (async () => {
      await req.send(JSON.stringify(body));
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

/**
 * Sends a control request (see protocol/control.ts) and returns the reply. An error reply
 * `{"error", "code"}` is thrown as the FlotillaError it names, its message passed through
 * `describe` (to say who answered); no answer in time is thrown as `unreachable(cause)`.
 */
export async function callControl<T>(
  endpoint: string,
  request: object,
  timeoutMs: number,
  unreachable: (cause: unknown) => FlotillaError,
  describe: (message: string) => string = (m) => m,
  serverKey?: string,
): Promise<T> {
  let reply: unknown;
  try {
    reply = await requestJson(endpoint, request, timeoutMs, serverKey);
  } catch (err) {
    if (err instanceof FlotillaError) throw err; // this side's own problem (KEY_REQUIRED), not the peer's silence
    throw unreachable(err);
  }
  if (isErrorReply(reply)) throw FlotillaError.fromReply(reply.code, describe(reply.error));
  return reply as T;
}

/** The path of an `ipc://` endpoint whose socket file does not exist (nobody listens), else null. */
export function missingIpc(endpoint: string): string | null {
  if (!endpoint.startsWith('ipc://')) return null;
  const path = endpoint.slice('ipc://'.length);
  return existsSync(path) ? null : path;
}
