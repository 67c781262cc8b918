/**
 * Binding a socket with an error that names the address: ZeroMQ's own says only "Address
 * already in use", which leaves an operator to guess which of a server's ports clashed.
 */
import { FlotillaError } from '../errors';

/** Binds `socket` to `endpoint`; a failure is a BIND_FAILED error naming the endpoint and `what`. */
export async function bindNamed(socket: { bind(endpoint: string): Promise<void> }, endpoint: string, what: string): Promise<void> {
  try {
    await socket.bind(endpoint);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    const hint = /in use/i.test(reason) ? ' (another process listens there: a second copy of this one, or another instance or program on the same port)' : '';
    throw new FlotillaError('BIND_FAILED', `${what} cannot listen on ${endpoint}: ${reason}${hint}`, { cause: err });
  }
}
