/** Runs one of the project's commands as a child process, as an operator would. */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `dist/<script>` with `args` and returns its exit status and output. */
export function runCli(script: string, args: string[], timeoutMs = 20_000): CliResult {
  const r = spawnSync(process.execPath, [join(__dirname, '..', '..', script), ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export const portalctl = (...args: string[]) => runCli('agent/portalctl.js', args);
