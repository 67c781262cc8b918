/**
 * How fast this machine is right now, so that runs made at different times can be compared. On
 * a shared VM the same code has given 0.9M and 1.7M records/s with no other process visible in
 * the VM: the host, not the guest, was busy. Two probes (about 1.5 s in all):
 *   - a fixed JavaScript loop (FNV-1a over 1 KB), ns per byte: raw CPU speed of one vCPU;
 *   - a pipe ping-pong with a child process, one byte every millisecond: what waking another
 *     process costs, which is what each hop of a record costs at 100k records/s.
 */
import { spawn } from 'node:child_process';

export interface Calibration {
  js_ns_per_byte: number;
  pipe_rtt_us_p50: number;
  pipe_rtt_us_p99: number;
}

function jsSpeed(): number {
  const buf = Buffer.alloc(1024, 7);
  const fnv = (b: Buffer) => {
    let h = 0x811c9dc5;
    for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i]!, 0x01000193) >>> 0;
    return h;
  };
  let x = 0;
  for (let i = 0; i < 2000; i++) x ^= fnv(buf);
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < 20_000; i++) x ^= fnv(buf);
    runs.push(Number(process.hrtime.bigint() - t) / 20_000 / buf.length);
  }
  if (x === 0.5) throw new Error('unreachable'); // keeps x alive
  return runs.sort((a, b) => a - b)[2]!;
}

function pipeRtts(rounds: number): Promise<number[]> {
  const child = spawn(process.execPath, ['-e', "process.stdin.on('data', (d) => process.stdout.write(d))"], { stdio: ['pipe', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    const rtts: number[] = [];
    let sentAt = 0n;
    const ping = () => {
      sentAt = process.hrtime.bigint();
      child.stdin.write('x');
    };
    child.once('error', reject);
    child.stdout.on('data', () => {
      rtts.push(Number(process.hrtime.bigint() - sentAt) / 1000);
      if (rtts.length < rounds) setTimeout(ping, 1);
      else {
        child.kill();
        resolve(rtts);
      }
    });
    setTimeout(ping, 50);
  });
}

/** Measures both probes. */
export async function calibrate(): Promise<Calibration> {
  const js = jsSpeed();
  const rtts = (await pipeRtts(1000)).slice(100).sort((a, b) => a - b);
  const q = (p: number) => Math.round(rtts[Math.min(rtts.length - 1, Math.floor(p * rtts.length))]!);
  return { js_ns_per_byte: Math.round(js * 1000) / 1000, pipe_rtt_us_p50: q(0.5), pipe_rtt_us_p99: q(0.99) };
}
