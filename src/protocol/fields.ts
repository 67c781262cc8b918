/**
 * The checks of a control request's fields (protocol/control.ts and the requests of its features):
 * each returns the field or throws BAD_REQUEST naming the command, the field and what it must be.
 */
import { FlotillaError } from '../errors';

/** A BAD_REQUEST error with `message`. */
export function badRequest(message: string): FlotillaError {
  return new FlotillaError('BAD_REQUEST', message);
}

/** `v` as a JSON object, or BAD_REQUEST. */
export function object(v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badRequest('request is not a JSON object');
  return v as Record<string, unknown>;
}

/** BAD_REQUEST for a command not in `commands` (listed in the message). */
export function unknownCommand(cmd: unknown, commands: readonly string[]): FlotillaError {
  return badRequest(`unknown command ${JSON.stringify(cmd) ?? 'undefined'}; commands: ${commands.join(', ')}`);
}

/** `o.epoch`: a whole number from 0 to 2^32 - 1. */
export function epoch(o: Record<string, unknown>, cmd: string): number {
  const e = o.epoch;
  if (typeof e !== 'number' || !Number.isInteger(e) || e < 0 || e > 0xffffffff) throw badRequest(`${cmd} needs "epoch", a whole number from 0 to 4294967295`);
  return e;
}

/** `o[field]`: a server or stream name (letters, digits, _ . -; up to 64). */
export function name(o: Record<string, unknown>, field: string, cmd: string, what = 'a server name'): string {
  const v = o[field];
  if (typeof v !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(v)) throw badRequest(`${cmd} needs "${field}", ${what} (letters, digits, _ . -)`);
  return v;
}

/** `o.digest`: a map's content digest, 64 hex digits. */
export function digest(o: Record<string, unknown>, cmd: string): string {
  const v = o.digest;
  if (typeof v !== 'string' || !/^[0-9a-f]{64}$/.test(v)) throw badRequest(`${cmd} needs "digest", a map's content digest (64 hex digits)`);
  return v;
}

/** `o.buckets`: a list of bucket numbers. */
export function buckets(o: Record<string, unknown>, cmd: string): number[] {
  const v = o.buckets;
  if (!Array.isArray(v) || v.length > 65536 || !v.every((b) => Number.isInteger(b) && b >= 0 && b < 65536)) throw badRequest(`${cmd} needs "buckets", a list of bucket numbers`);
  return v as number[];
}
