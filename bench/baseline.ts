/**
 * The baseline: a plain per-message zeromq.js proxy (PULL tcp -> PUSH ipc), producers pushing
 * 100-byte messages, one consumer pulling them; records/s counted at the consumer.
 */
import { join } from 'node:path';
import { measureRate, type RateWindow } from './measure';
import type { BenchOptions } from './options';
import { freePorts } from '../test/support/ports';
import type { ProcessGroup } from './procs';

/** Runs the baseline for one window and stops its processes. */
export async function runBaseline(group: ProcessGroup, dir: string, o: BenchOptions): Promise<RateWindow> {
  const [port] = await freePorts(1);
  const tcp = `tcp://127.0.0.1:${port}`;
  const ipc = `ipc://${join(dir, 'baseline.ipc')}`;
  const script = (name: string) => join(__dirname, name);
  const device = group.start('baseline device', script('baseline-device.js'), [tcp, ipc], { ipc: true });
  await device.ready;
  const consumer = group.start('baseline consumer', script('baseline-consumer.js'), [ipc], { ipc: true });
  const producers = Array.from({ length: o.senders }, (_, i) =>
    group.start(`baseline producer ${i}`, script('baseline-producer.js'), [tcp], { ipc: true }),
  );
  const all = [device, consumer, ...producers];
  try {
    await Promise.all(all.map((c) => c.ready));
    await Promise.all(producers.map((p) => p.request('start')));
    return await measureRate(
      async () => (await consumer.request<{ received: number }>('count')).received,
      o.seconds,
      o.warmup,
      { proxy: [device.pid], consumer: [consumer.pid], producers: producers.map((p) => p.pid) },
    );
  } finally {
    await Promise.all(producers.map((p) => p.request('stop').catch(() => undefined)));
    await Promise.all(all.map((c) => c.stop()));
  }
}
