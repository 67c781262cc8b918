/**
 * Options of long-lived classes, checked once: `parseOptions` merges the caller's options over the
 * class's `DEFAULT_*` values and throws a CONFIG_INVALID error naming the field for a value that
 * cannot work (a window of 0, a negative size), so a mistake fails at construction with a clear
 * message instead of as a stall later on.
 *
 *   this.o = parseOptions('Sender', opts, { lingerMs: DEFAULT_LINGER_MS, ... }, { lingerMs: number({ min: 0 }), ... });
 */
import { FlotillaError } from './errors';

/** Checks one value; returns what is wrong with it ("must be ..."), or null if it is fine. */
export type Check = (value: unknown) => string | null;

/** A whole number in [min, max]. */
export function int(range: { min?: number; max?: number } = {}): Check {
  const { min = -Infinity, max = Infinity } = range;
  return (v) => (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? null : `must be a whole number${bounds(min, max)}`);
}

/** A finite number in [min, max]. */
export function number(range: { min?: number; max?: number } = {}): Check {
  const { min = -Infinity, max = Infinity } = range;
  return (v) => (typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max ? null : `must be a number${bounds(min, max)}`);
}

/** A string that is not empty. */
export const text: Check = (v) => (typeof v === 'string' && v.length > 0 ? null : 'must be a non-empty string');

function bounds(min: number, max: number): string {
  if (min > -Infinity && max < Infinity) return ` from ${min} to ${max}`;
  if (min > -Infinity) return ` of at least ${min}`;
  if (max < Infinity) return ` of at most ${max}`;
  return '';
}

/**
 * `given` over `defaults`, each field named in `checks` checked once its default is merged in
 * (a field left undefined takes its default; a field without a default may stay undefined).
 * Throws FlotillaError CONFIG_INVALID naming every field that cannot work, as `what.field`.
 */
export function parseOptions<T extends object, D extends Partial<T>>(
  what: string,
  given: T,
  defaults: D,
  checks: { [K in keyof T]?: Check },
): T & Required<D> {
  const merged: Record<string, unknown> = { ...defaults };
  for (const [k, v] of Object.entries(given)) if (v !== undefined) merged[k] = v;
  const problems: string[] = [];
  for (const [field, check] of Object.entries(checks) as [string, Check][]) {
    const value = merged[field];
    if (value === undefined) continue;
    const problem = check(value);
    if (problem) problems.push(`${what} option ${field} is ${show(value)}; it ${problem}`);
  }
  if (problems.length > 0) throw new FlotillaError('CONFIG_INVALID', problems.join('; '));
  return merged as T & Required<D>;
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return typeof v;
}
