/**
 * The bench's child processes: every process it starts is spawned through a ProcessGroup, so
 * one `stopAll()` ends them all (SIGTERM, then SIGKILL after a grace period), and a parent that
 * exits for any reason kills whatever is still running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** A child process of the bench; those started with `ipc` answer `request`. */
export class Child {
  private nextId = 1;
  private waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private tail = '';
  /** Resolves when an ipc child says it is ready. */
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
  ) {
    proc.stderr?.on('data', (d: Buffer) => {
      this.tail = (this.tail + d.toString()).slice(-4000);
    });
    this.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    this.ready = new Promise((resolve, reject) => {
      proc.on('message', (m: { ready?: boolean; id?: number; result?: unknown; error?: string }) => {
        if (m.ready) return resolve();
        const w = m.id !== undefined ? this.waiting.get(m.id) : undefined;
        if (!w) return;
        this.waiting.delete(m.id!);
        if (m.error !== undefined) w.reject(new Error(`${this.name}: ${m.error}`));
        else w.resolve(m.result);
      });
      proc.once('exit', (code, signal) => {
        const err = new Error(`${this.name} exited (code ${code}, signal ${signal})\n${this.tail}`);
        reject(err);
        for (const w of this.waiting.values()) w.reject(err);
        this.waiting.clear();
      });
    });
    this.ready.catch(() => undefined);
  }

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** The last few KB the child wrote on stderr. */
  get stderrTail(): string {
    return this.tail;
  }

  /** Sends a command to an ipc child and resolves with its answer. */
  request<T>(cmd: string, args: unknown = null): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      if (!this.running) return reject(new Error(`${this.name} is not running\n${this.tail}`));
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.proc.send({ id, cmd, args });
    });
  }

  /** Ends the child: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    if (!this.running) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Starts node scripts and remembers them, so that they can all be stopped. */
export class ProcessGroup {
  private readonly children: Child[] = [];

  constructor() {
    // Last resort: whatever happens to the bench, its children do not outlive it.
    process.once('exit', () => {
      for (const c of this.children) if (c.running) c.proc.kill('SIGKILL');
    });
  }

  /**
   * Spawns `node [nodeFlags] script args`; with `ipc` the child can be sent requests. `cpus`
   * (a taskset list such as "0" or "0,1") pins it; `env` adds environment variables; its stdout
   * goes to `stdoutFd` if given (e.g. for node --trace-gc), else nowhere.
   */
  start(
    name: string,
    script: string,
    args: string[],
    opts: { ipc?: boolean; nodeFlags?: string[]; cpus?: string; env?: Record<string, string>; stdoutFd?: number } = {},
  ): Child {
    const argv = [...(opts.nodeFlags ?? []), script, ...args];
    // taskset execs node, so the child's pid is node's.
    const [cmd, cmdArgs] = opts.cpus ? ['taskset', ['-c', opts.cpus, process.execPath, ...argv]] : [process.execPath, argv];
    const proc = spawn(cmd, cmdArgs, {
      stdio: ['ignore', opts.stdoutFd ?? 'ignore', 'pipe', ...(opts.ipc ? (['ipc'] as const) : [])],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
    });
    const child = new Child(name, proc);
    this.children.push(child);
    return child;
  }

  /** Stops every child started so far, in parallel. */
  async stopAll(graceMs = 3000): Promise<void> {
    await Promise.all(this.children.map((c) => c.stop(graceMs)));
  }
}

/** Peak resident set size of a process (VmHWM), in MB; NaN if it cannot be read. */
export function peakRssMb(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** CPU time a process has used (user + system), in seconds; NaN if it cannot be read. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at field 3; utime is 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/** CPU time the whole machine has spent busy (all cores, all processes), in seconds; NaN if unknown. */
export function machineBusySeconds(): number {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    const busy = cpu[0]! + cpu[1]! + cpu[2]! + cpu[5]! + cpu[6]! + cpu[7]!;
    return busy / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/** USER_HZ: 100 on every Linux architecture Node supports. */
const CLOCK_TICKS = 100;
