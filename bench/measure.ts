/** Measurement windows: a counter read before and after, and the CPU each process used meanwhile. */
import { cpuSeconds, machineBusySeconds } from './procs';

export interface RateWindow {
  /** Length of the window as measured, seconds. */
  seconds: number;
  /** Counter increase over the window. */
  count: number;
  perSecond: number;
  /**
   * CPU used over the window per role, in % of one core (100 = one core busy), and as `other`
   * whatever the rest of the machine used meanwhile (other people's processes on a shared box).
   */
  cpuPercent: Record<string, number>;
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Waits `warmupS`, then reads `counter` at the start and end of a `seconds` window, with the
 * CPU time of each role's processes (`pids`). `atStart` runs right after the first reading,
 * `atEnd` right after the last.
 */
export async function measureRate(
  counter: () => Promise<number>,
  seconds: number,
  warmupS: number,
  pids: Record<string, number[]>,
  atStart: () => Promise<void> = async () => undefined,
  atEnd: () => Promise<void> = async () => undefined,
): Promise<RateWindow> {
  await sleep(warmupS * 1000);
  const cpu = () => Object.fromEntries(Object.entries(pids).map(([role, ps]) => [role, ps.reduce((a, p) => a + cpuSeconds(p), 0)]));
  const c0 = cpu();
  const m0 = machineBusySeconds();
  const t0 = performance.now();
  const n0 = await counter();
  await atStart();
  await sleep(seconds * 1000);
  const c1 = cpu();
  const m1 = machineBusySeconds();
  const n1 = await counter();
  await atEnd();
  const elapsed = (performance.now() - t0) / 1000;
  const cpuPercent: Record<string, number> = {};
  for (const role of Object.keys(pids)) cpuPercent[role] = Math.round(((c1[role]! - c0[role]!) / elapsed) * 100);
  const ours = Object.values(cpuPercent).reduce((a, b) => a + b, 0);
  cpuPercent.other = Math.max(0, Math.round(((m1 - m0) / elapsed) * 100 - ours));
  return { seconds: elapsed, count: n1 - n0, perSecond: (n1 - n0) / elapsed, cpuPercent };
}

/** Sums a numeric field over the answers of several children. */
export function sum<T>(items: T[], field: (t: T) => number): number {
  return items.reduce((a, t) => a + field(t), 0);
}
