/** What the bench ran on, for the record. */
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg, release } from 'node:os';
import type { Calibration } from './calibrate';

export interface Machine {
  nproc: number;
  cpu_model: string;
  node: string;
  kernel: string;
  /** 1-minute load average when the bench started (the machine may be shared). */
  loadavg_1m: number;
  /** The machine's speed when the bench started (bench/calibrate.ts). */
  calibration?: Calibration;
}

/** Describes this machine: cores, CPU model (from /proc/cpuinfo), Node and kernel versions. */
export function describeMachine(): Machine {
  let model = 'unknown';
  try {
    model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? model;
  } catch {
    // not Linux: leave it unknown
  }
  return { nproc: availableParallelism(), cpu_model: model, node: process.version, kernel: release(), loadavg_1m: loadavg()[0]! };
}
