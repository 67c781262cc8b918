/**
 * ZAP (ZeroMQ's authentication protocol, RFC 27): which CURVE keys a server socket admits. libzmq
 * asks the socket bound at `inproc://zeromq.zap.01` in the same context about every handshake on
 * a socket with a `zapDomain`; this process's one handler answers 200 for a key its domain's
 * rule admits and 400 for any other, or for any while the socket has its most connections
 * (connections.ts), counted and logged once per interval by cause. Plain TCP (NULL) is asked
 * about too, for the cap.
 *
 *   client --CURVE HELLO/INITIATE(key)--> portal ingress (zapDomain "portal")
 *                                          --[1.0, id, portal, address, identity, CURVE, key]--> ZapHandler
 *                                          <--[1.0, id, 200 | 400, text, user id, ""]--
 *
 * ZAP is not consulted on ipc sockets (local, guarded by the run directory's modes).
 */
import * as zmq from 'zeromq';
import type { CauseCounter } from '../log';
import { z85Encode } from './keys';

/** The endpoint libzmq sends ZAP requests to. */
const ZAP_ENDPOINT = 'inproc://zeromq.zap.01';

/** Says who holds a key (`operator ops`, `server beta`), or null when the domain does not admit it; '' is a plain-TCP client. */
export type Admit = (publicKey: string) => string | null;

/** What a domain's handshakes came to. */
export interface ZapCounts {
  admitted: number;
  /** Refused for their key (KEY_REFUSED). */
  refused: number;
  /** Refused because the socket had its most connections (CONNECTION_CAP). */
  overCap: number;
}

interface Domain {
  admit: Admit;
  /** True while the socket has its most connections: every handshake is refused. */
  full: () => boolean;
  counts: ZapCounts;
  causes: CauseCounter;
}

class ZapHandler {
  private readonly socket = new zmq.Reply({ linger: 0 });
  private readonly domains = new Map<string, Domain>();
  private started: Promise<void> | null = null;

  /** Binds the handler once per process, before any socket with a zapDomain binds. */
  start(): Promise<void> {
    this.started ??= (async () => {
      await this.socket.bind(ZAP_ENDPOINT);
      void this.loop();
    })();
    return this.started;
  }

  register(domain: string, admit: Admit, full: () => boolean, causes: CauseCounter): ZapCounts {
    const counts = this.domains.get(domain)?.counts ?? { admitted: 0, refused: 0, overCap: 0 };
    this.domains.set(domain, { admit, full, counts, causes });
    return counts;
  }

  private async loop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.socket.receive();
      } catch {
        return; // closed
      }
      await this.socket.send(this.answer(frames)).catch(() => undefined);
    }
  }

  private answer(frames: Buffer[]): (Buffer | string)[] {
    const [version, id, domainFrame, address, , mechanism, credentials] = frames;
    const reply = (status: string, text: string, user = '') => [version ?? '1.0', id ?? '', status, text, user, ''];
    const domain = this.domains.get(domainFrame?.toString() ?? '');
    if (!domain) return reply('400', 'no such domain');
    if (domain.full()) {
      domain.counts.overCap++;
      domain.causes.count('CONNECTION_CAP', `a handshake from ${address?.toString() ?? '?'} refused: the socket has its most connections (security.max_connections)`);
      return reply('400', 'too many connections');
    }
    // NULL (plain TCP, a map without keys) is admitted by a rule that takes the empty key.
    const plain = mechanism?.toString() === 'NULL';
    const key = plain ? '' : mechanism?.toString() === 'CURVE' && credentials?.length === 32 ? z85Encode(credentials) : null;
    const holder = key === null ? null : domain.admit(key);
    if (holder === null) {
      domain.counts.refused++;
      domain.causes.count('KEY_REFUSED', `a ${mechanism?.toString() ?? '?'} handshake from ${address?.toString() ?? '?'} with ${key === null ? 'no CURVE key' : `key ${key}, not listed in the map for this socket`}`);
      return reply('400', 'key not allowed');
    }
    domain.counts.admitted++;
    return reply('200', 'OK', holder);
  }
}

let handler: ZapHandler | null = null;

/**
 * Admits to sockets of `domain` (their `zapDomain`) the keys `admit` names; returns the domain's
 * counters (live: read them for status). A domain registered again takes the new rule (a map edit).
 */
export async function guardDomain(domain: string, admit: Admit, full: () => boolean, causes: CauseCounter): Promise<ZapCounts> {
  handler ??= new ZapHandler();
  const counts = handler.register(domain, admit, full, causes);
  await handler.start();
  return counts;
}
