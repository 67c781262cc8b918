/**
 * Timestamps for the tail-latency investigation (`bench/tail/tail.ts`). Every traced process
 * (load generator, portal, sink) records events on one clock, CLOCK_MONOTONIC in ms, which is the
 * same clock in every process on a machine, so a batch can be followed from process to process.
 * Events come from Flotilla's named hooks (`node:diagnostics_channel`, docs/architecture.md,
 * "Named hooks"); nothing is patched. Tracing is off until `start()`; `dump()` returns what was
 * recorded and turns it off.
 */
import { subscribe } from 'node:diagnostics_channel';
import { PerformanceObserver } from 'node:perf_hooks';
import type { SenderBatchEvent } from '../../src/sender/channel';
import type { OutboxSend } from '../../src/transport/outbox';

// performance.now() is uv_hrtime (CLOCK_MONOTONIC) minus the process's time origin.
const OFFSET = Number(process.hrtime.bigint()) / 1e6 - performance.now();

/** CLOCK_MONOTONIC, ms: comparable between processes on one machine. */
export function clock(): number {
  return performance.now() + OFFSET;
}

/** A performance.now() reading of this process, on the shared clock. */
export function toClock(perfMs: number): number {
  return perfMs + OFFSET;
}

export interface TraceDump {
  /** Rows of numbers by event name; the tracing code of each process documents its columns. */
  events: Record<string, number[][]>;
  /** V8 garbage collections: [start on the shared clock, duration ms, kind (perf_hooks gc kind)]. */
  gc: [number, number, number][];
}

/**
 * One kind of event: rows of `cols` numbers in a preallocated Float64Array, so that recording
 * allocates nothing on the JS heap (an array per row made the traced portal's old generation
 * grow, and V8 then ran a mark-compact every 200 ms that the untraced portal does not run).
 */
export class EventLog {
  private data: Float64Array;
  private rows = 0;

  constructor(
    private readonly tracer: Tracer,
    readonly cols: number,
    capacityRows = 1 << 16,
  ) {
    this.data = new Float64Array(cols * capacityRows);
  }

  /** Records one row (only while tracing); missing columns are 0. */
  add(a: number, b = 0, c = 0, d = 0, e = 0, f = 0): void {
    if (!this.tracer.active) return;
    if ((this.rows + 1) * this.cols > this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    const i = this.rows++ * this.cols;
    const data = this.data;
    data[i] = a;
    if (this.cols > 1) data[i + 1] = b;
    if (this.cols > 2) data[i + 2] = c;
    if (this.cols > 3) data[i + 3] = d;
    if (this.cols > 4) data[i + 4] = e;
    if (this.cols > 5) data[i + 5] = f;
  }

  clear(): void {
    this.rows = 0;
  }

  toRows(): number[][] {
    const out: number[][] = [];
    for (let r = 0; r < this.rows; r++) out.push(Array.from(this.data.subarray(r * this.cols, (r + 1) * this.cols)));
    return out;
  }
}

export class Tracer {
  private on = false;
  private readonly logs = new Map<string, EventLog>();
  private gc: [number, number, number][] = [];

  constructor() {
    const obs = new PerformanceObserver((list) => {
      if (!this.on) return;
      for (const e of list.getEntries()) this.gc.push([toClock(e.startTime), e.duration, (e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0]);
    });
    obs.observe({ entryTypes: ['gc'] });
  }

  get active(): boolean {
    return this.on;
  }

  /** The log of one kind of event, with `cols` numbers a row (at most 6). */
  log(kind: string, cols: number): EventLog {
    let l = this.logs.get(kind);
    if (!l) this.logs.set(kind, (l = new EventLog(this, cols)));
    return l;
  }

  start(): void {
    for (const l of this.logs.values()) l.clear();
    this.gc = [];
    this.on = true;
  }

  dump(): TraceDump {
    this.on = false;
    const events: Record<string, number[][]> = {};
    for (const [k, l] of this.logs) events[k] = l.toRows();
    return { events, gc: this.gc };
  }
}

/**
 * Records [tag, socket.send called] in `log` for each message the Outbox named `outbox` hands to
 * its socket (the `flotilla:outbox:send` hook, src/transport/outbox.ts), where `tag(msg)` names
 * the message (null: do not record it). The instant is the same as before the hooks: just
 * before `socket.send` is called.
 */
export function traceSends(tr: Tracer, outbox: string, log: EventLog, tag: (msg: Buffer[]) => number | null): void {
  subscribe('flotilla:outbox:send', (m) => {
    const e = m as OutboxSend;
    if (!tr.active || e.outbox !== outbox) return;
    const id = tag(e.msg);
    if (id !== null) log.add(id, toClock(e.at));
  });
}

/**
 * Traces a load generator's Sender through its named hooks (src/sender/channel.ts and
 * replies.ts; one stream, one portal, so one channel, whose batch seqs are unique):
 *   close [batch seq, batch closed, records, records closed into batches before this one]
 *   tx    [batch seq, handed to the outbox, records]
 *   send  [batch seq, socket.send called]
 *   ackrx [batch seq, ACK handled, records]
 * "Records before" counts every batch closed since this was called, traced or not, so call it
 * before the first record is sent: it then numbers records as the load's ticks do.
 * Instants: `close` is taken inside closeBatch before the body is taken from the writer (it was
 * taken just before closeBatch was called); `ackrx` just before `onAck` is called (it was taken
 * inside onAck); `tx` and `send` are the same instants as before.
 */
export function traceSender(tr: Tracer): void {
  const closeLog = tr.log('close', 4);
  const txLog = tr.log('tx', 3);
  const sendLog = tr.log('send', 2);
  const ackLog = tr.log('ackrx', 3);
  let closed = 0;
  subscribe('flotilla:sender:batch', (m) => {
    const b = m as SenderBatchEvent;
    closeLog.add(b.seq, toClock(b.at), b.count, closed);
    closed += b.count;
  });
  subscribe('flotilla:sender:transmit', (m) => {
    const b = m as SenderBatchEvent;
    txLog.add(b.seq, toClock(b.at), b.count);
  });
  subscribe('flotilla:sender:ack', (m) => {
    const b = m as SenderBatchEvent;
    ackLog.add(b.seq, toClock(b.at), b.count);
  });
  // Headers are 16 bytes: type at offset 3, seq at 4 (src/protocol/wire.ts).
  traceSends(tr, 'sender', sendLog, (msg) => msg[0]!.readUInt32BE(4));
}
