/** What a portal counts: one object, written by the parts that see each event, read by health.ts. */

export interface PortalCounters {
  recordsIn: number;
  recordsOut: number;
  batchesIn: number;
  batchesAcked: number;
}

export function newCounters(): PortalCounters {
  return { recordsIn: 0, recordsOut: 0, batchesIn: 0, batchesAcked: 0 };
}
