/**
 * Raw frames, for tests that talk to a portal without the Sender so they can send what a Sender
 * never would:
 *
 * - `batchBody`, `batchFrames`: a BATCH message (docs/protocol.md) of `{ key, seq }` records, as
 *   frames a test can cut, mutate or mislabel before sending them on a plain DEALER;
 * - `readReply`: the header (and for an ERROR its code and message) of what the portal answered;
 * - `zmtp`: ZMTP 3.0 written by hand over a plain TCP socket (rfc.zeromq.org/spec/23), for what no
 *   ZeroMQ library can be made to send: a multipart message cut off halfway by a sender that dies.
 */
import { connect as tcpConnect } from 'node:net';
import avro from 'avsc';
import { EnvelopeWriter } from '../../src/protocol/envelope';
import { decodeHeader, encodeHeader, MessageType } from '../../src/protocol/wire';
import { RECORD_SCHEMA } from './flows';

/** The payload type of the test streams (RECORD_SCHEMA). */
export const ORDER = avro.Type.forSchema(RECORD_SCHEMA('Order') as avro.Schema);

/** A test record, as the payload schema has it. */
export interface KeySeq {
  key: string;
  seq: number;
}

/** `${prefix}${i}` for i in [from, to), each with seq 0: one record per key. */
export function keyRange(prefix: string, from: number, to: number): KeySeq[] {
  return Array.from({ length: to - from }, (_, i) => ({ key: `${prefix}${from + i}`, seq: 0 }));
}

let lastId = 0n;

/** A well-formed BATCH body: one envelope per record, each with an id of its own (a counter). */
export function batchBody(records: KeySeq[]): Buffer {
  const w = new EnvelopeWriter();
  const id = Buffer.alloc(16);
  for (const r of records) {
    id.writeBigUInt64BE(++lastId, 8);
    w.append(r.key, id, Date.now(), [], ORDER, r);
  }
  return w.take();
}

/** The three frames of a BATCH with sequence number `seq`: header (count = records), stream, body. */
export function batchFrames(seq: number, records: KeySeq[], opts: { epoch?: number; stream?: string } = {}): Buffer[] {
  return [encodeHeader(MessageType.BATCH, seq, opts.epoch ?? 1, records.length), Buffer.from(opts.stream ?? 'orders'), batchBody(records)];
}

/** A portal's reply as read off the wire. */
export interface Reply {
  /** MessageType.ACK or MessageType.ERROR (or whatever else came). */
  type: number;
  seq: number;
  epoch: number;
  count: number;
  /** An ERROR's code ('' for an ACK). */
  code: string;
  /** An ERROR's message ('' for an ACK). */
  message: string;
}

/** Reads the frames of a reply: its 16-byte header, and for an ERROR the code and message frames. */
export function readReply(frames: Buffer[]): Reply {
  const [h, code, message] = frames;
  const header = decodeHeader(h);
  if (!header) throw new Error(`a reply whose first frame is not a Flotilla header: ${h?.toString('hex') ?? '(none)'}`);
  return { type: header.type, seq: header.seq, epoch: header.epoch, count: header.count, code: code?.toString() ?? '', message: message?.toString() ?? '' };
}

/** ZMTP 3.0 by hand (NULL mechanism, as a DEALER), over a plain TCP socket. */
export const zmtp = {
  /** The 64-byte greeting: signature, version 3.0, mechanism NULL, not as-server. */
  greeting(): Buffer {
    const g = Buffer.alloc(64);
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3; // version 3.0
    g.write('NULL', 12, 'ascii'); // mechanism; as-server (byte 32) 0; filler zero
    return g;
  },
  /** The READY command, saying Socket-Type DEALER. */
  ready(): Buffer {
    const name = Buffer.from('Socket-Type');
    const value = Buffer.from('DEALER');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(value.length);
    const body = Buffer.concat([Buffer.from([5]), Buffer.from('READY'), Buffer.from([name.length]), name, len, value]);
    return Buffer.concat([Buffer.from([0x04, body.length]), body]);
  },
  /** One frame; `more` if another frame of the message follows. */
  frame(data: Buffer, more: boolean): Buffer {
    const long = data.length > 255;
    const head = Buffer.alloc(long ? 9 : 2);
    head[0] = (more ? 0x01 : 0) | (long ? 0x02 : 0);
    if (long) head.writeBigUInt64BE(BigInt(data.length), 1);
    else head[1] = data.length;
    return Buffer.concat([head, data]);
  },
  /** A whole multipart message: every frame but the last marked `more`. */
  message(frames: Buffer[]): Buffer {
    return Buffer.concat(frames.map((f, i) => zmtp.frame(f, i < frames.length - 1)));
  },
  /**
   * Connects to 127.0.0.1:`port`, greets, writes READY, and `bytes` once the portal's READY is in
   * (ZAP admitted the connection), then closes (FIN); resolves once closed. The rest waits for the portal's greeting: libzmq 4.3 fails the handshake (ZMTP
   * protocol error) when a greeting and what follows it arrive in one read.
   */
  async sendAndClose(port: number, bytes: Buffer): Promise<void> {
    const sock = tcpConnect(port, '127.0.0.1');
    let got = 0;
    let sent = false;
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.once('connect', () => sock.write(zmtp.greeting()));
      sock.on('data', (data: Buffer) => {
        const before = got;
        got += data.length;
        // Our READY once the portal's greeting is in; the bytes once its READY is (the portal
        // answers READY after ZAP admits the connection: bytes sent before may be dropped with
        // a connection that closes during its handshake, never having been a sender).
        if (before < 64 && got >= 64) sock.write(zmtp.ready());
        if (got > 64 && !sent) {
          sent = true;
          sock.end(bytes);
        }
      });
      sock.once('close', () => resolve());
    });
  },
};
