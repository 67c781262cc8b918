/**
 * Frames of the Flotilla wire protocol (docs/protocol.md). Every message starts with a 16-byte
 * header frame:
 *
 *   offset 0  2 bytes  magic "FL"
 *          2  1 byte   version (1)
 *          3  1 byte   type (MessageType) in bits 0-6; bit 7 (INNER_FLAG) on a BATCH: sent from
 *                      inside the flow (by a component), taken while the stream is paused
 *          4  4 bytes  seq, big-endian: the sender's batch number, echoed in the reply
 *          8  4 bytes  epoch, big-endian: the map epoch of whoever wrote the message
 *         12  4 bytes  count, big-endian: records in the batch (or acknowledged)
 */

export const MAGIC0 = 0x46; // 'F'
export const MAGIC1 = 0x4c; // 'L'
export const VERSION = 1;
export const HEADER_BYTES = 16;

/**
 * The routing id a portal's spool forwarder starts its connections with (then `/<server>/` and
 * random hex): a portal takes records from such a sender as older than those it holds for their
 * buckets (docs/delivery.md, re-guiding).
 */
export const FORWARD_IDENTITY = 'fwd';

/**
 * Bit 7 of the type byte: on a BATCH, "these records were emitted by a component while it
 * processed a delivery" (the SDK's sender sets it). A paused portal still takes such batches, so
 * the components that emitted them can finish and the flow drains (docs/operations.md, "Pause").
 * Zero on every other message.
 */
export const INNER_FLAG = 0x80;

/** Message types. Values are part of the protocol and never change. */
export const MessageType = {
  /** sender -> portal: [header, stream, body] */
  BATCH: 1,
  /** portal -> sender: [header]; every record of batch `seq` was processed */
  ACK: 2,
  /** portal -> sender: [header, code, message]; batch `seq` was refused */
  ERROR: 3,
  /** portal -> sender: [header]; the stream is no longer paused: resend held batches in order */
  RESUME: 4,
  /** component -> portal: [header, json {slot, pid}]; this process serves `slot` */
  READY: 16,
  /** portal -> component: [header, body]; delivery `seq` holds `count` records */
  DELIVER: 17,
  /** component -> portal: [header]; delivery `seq` is processed */
  DONE: 18,
  /** component -> portal: [header, json ComponentBeacon]; every heartbeat interval */
  HEARTBEAT: 19,
  // ---- the management bus (docs/protocol.md, "Configurations") ----
  /** portal -> component: [header(seq = version), json {version, config}]; out of band, not behind DELIVERs */
  CONFIGURE: 20,
  /** component -> portal: [header(seq = version), json {slot, version, ok, reason?}]; the answer to CONFIGURE */
  CONFIGURED: 21,
  // ---- cancellation (docs/protocol.md, "Cancellation") ----
  /** portal -> component: [header (seq: 0, or the number to confirm), json {cancellations}]; out of band */
  CANCEL: 22,
  /** component -> portal: [header (seq: the CANCEL's)]; the cancellations are in force here */
  CANCELLED: 23,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

/** A decoded header. */
export interface Header {
  version: number;
  type: number;
  seq: number;
  epoch: number;
  count: number;
  /** The type byte's INNER_FLAG: a BATCH sent from inside the flow. */
  inner: boolean;
}

/** Encodes a header into a new 16-byte buffer (`inner`: set INNER_FLAG, for a BATCH). */
export function encodeHeader(type: MessageType, seq: number, epoch: number, count: number, inner = false): Buffer {
  const b = Buffer.allocUnsafe(HEADER_BYTES);
  b[0] = MAGIC0;
  b[1] = MAGIC1;
  b[2] = VERSION;
  b[3] = inner ? type | INNER_FLAG : type;
  b.writeUInt32BE(seq >>> 0, 4);
  b.writeUInt32BE(epoch >>> 0, 8);
  b.writeUInt32BE(count >>> 0, 12);
  return b;
}

/** Decodes a header frame; null if it is not one (wrong size or magic). */
export function decodeHeader(frame: Buffer | undefined): Header | null {
  if (!frame || frame.length !== HEADER_BYTES || frame[0] !== MAGIC0 || frame[1] !== MAGIC1) return null;
  return {
    version: frame[2]!,
    type: frame[3]! & ~INNER_FLAG,
    seq: frame.readUInt32BE(4),
    epoch: frame.readUInt32BE(8),
    count: frame.readUInt32BE(12),
    inner: (frame[3]! & INNER_FLAG) !== 0,
  };
}

/**
 * A count frame: 4 bytes big-endian, the second frame of an ACK (records of the batch dropped by
 * a cancellation) and of a DONE (records the component skipped as cancelled).
 */
export function countFrame(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/** The count in an ACK's or a DONE's second frame; 0 when there is none (or it is not 4 bytes). */
export function readCountFrame(frame: Buffer | undefined): number {
  return frame?.length === 4 ? frame.readUInt32BE(0) : 0;
}
