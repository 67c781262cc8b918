/**
 * The directories a daemon writes (the run directory, a stream's spool) are checked at start:
 * created with their documented mode when missing, put back to it when loosened (or tightened)
 * since, and refused when another user owns them, since that user could then read the records
 * or put a socket of their own in the place of ours.
 */
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { FlotillaError } from './errors';

/** Mode of the run directory: the service's user and group (portalctl runs in the group). */
export const RUN_DIR_MODE = 0o770;
/** Mode of a stream's spool directory: the service's user, read-only to its group. */
export const SPOOL_DIR_MODE = 0o750;

/**
 * Makes `dir` (and missing parents) a directory owned by this process's user with exactly
 * `mode`; returns what it did. Throws DIR_UNSAFE when it is not a directory or belongs to
 * someone else, naming the path, the owner and the way out.
 */
export function ensureOwnDir(dir: string, mode: number, what: string): 'created' | 'corrected' | 'kept' {
  let created = false;
  try {
    created = mkdirSync(dir, { recursive: true, mode }) !== undefined;
  } catch (err) {
    // EEXIST: something that is not a directory is there (said below)
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new FlotillaError('DIR_UNSAFE', `cannot create the ${what} ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const st = statSync(dir);
  if (!st.isDirectory()) throw new FlotillaError('DIR_UNSAFE', `the ${what} ${dir} is not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new FlotillaError(
      'DIR_UNSAFE',
      `the ${what} ${dir} belongs to uid ${st.uid}, not to this process's user (uid ${uid}); run as its owner, or remove it (or chown it to uid ${uid}) if it is not in use`,
    );
  }
  if ((st.mode & 0o777) === mode) return created ? 'created' : 'kept';
  chmodSync(dir, mode); // mkdir's mode passes through the umask; a directory made earlier may be looser
  return created ? 'created' : 'corrected';
}
