/** The values a batch becomes inside a portal: the sender's batch, and its parts for each slot. */
import type { Slot } from './slot';

/** A sender's batch, waiting for its slots (in spool mode `always`, acknowledged once written). */
export interface InBatch {
  /** The sender's routing id, and the same as a string (a map key). */
  sender: Buffer;
  senderKey: string;
  seq: number;
  count: number;
  /** Deliveries of the batch not yet done; the batch is acknowledged when this reaches 0. */
  remaining: number;
}

/** One slot's part of a batch, or records read back from the spool. */
export interface Delivery {
  id: number;
  /** The batch to acknowledge when every part is done; null when it was acknowledged on write. */
  batch: InBatch | null;
  slot: Slot;
  body: Buffer;
  count: number;
  /** performance.now() when it was made, then when it was sent to the slot. */
  sentAt: number;
  /**
   * Spooled records in this delivery, as (bucket, generation, end offset, records) quads: once
   * it is done, each bucket's spool cursor moves past them.
   */
  marks: number[] | null;
}
