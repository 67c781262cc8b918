/**
 * Whether a portal's stream is paused. The pause is a file in the run directory, written before
 * the pause takes effect, so a portal that restarts while paused comes back paused.
 */
import { existsSync, unlinkSync, writeFileSync } from 'node:fs';
import type { Logger } from '../log';
import { pauseFile } from '../protocol/endpoints';

export class PauseState {
  private on = false;
  private readonly file: string;

  constructor(
    runDir: string,
    private readonly stream: string,
    private readonly log: Logger,
  ) {
    this.file = pauseFile(runDir, stream);
  }

  get paused(): boolean {
    return this.on;
  }

  /** Reads the pause file (at start-up). */
  load(): boolean {
    this.on = existsSync(this.file);
    return this.on;
  }

  /** Pauses or resumes; the file first. True if the state changed. */
  set(paused: boolean): boolean {
    if (paused) writeFileSync(this.file, `${new Date().toISOString()}\n`);
    else if (existsSync(this.file)) unlinkSync(this.file);
    if (this.on === paused) return false;
    this.log.info(`portal ${this.stream}: ${paused ? 'paused' : 'resumed'}`);
    this.on = paused;
    return true;
  }
}
