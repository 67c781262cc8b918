/**
 * The line protocol of `portal-exec` (docs/components.md): splitting a program's stdout into
 * lines with a bound on their length, and reading a value in Avro's JSON encoding with an error
 * that names the field at fault.
 */
import avro from 'avsc';

/**
 * Decodes `json`, a value in Avro's JSON encoding, with `type`. Throws an error naming the
 * field at fault. Fields not in the schema are ignored; missing fields take their defaults.
 */
export function fromAvroJson(type: avro.Type, json: unknown): unknown {
  try {
    return type.fromString(JSON.stringify(json ?? null));
  } catch (err) {
    throw new Error(whereInvalid(type, json, 'value') ?? (err as Error).message);
  }
}

/** The first record field (path from `value`) whose JSON does not decode, and why. */
function whereInvalid(type: avro.Type, json: unknown, path: string): string | undefined {
  if (!(type instanceof avro.types.RecordType)) return undefined;
  if (!isObject(json)) return `${path} must be a JSON object (record ${type.name ?? ''})`;
  for (const field of type.fields) {
    const v = json[field.name];
    if (v === undefined) {
      if (field.defaultValue() === undefined) return `${path}.${field.name} is missing`;
      continue;
    }
    try {
      field.type.fromString(JSON.stringify(v));
    } catch (err) {
      return whereInvalid(field.type, v, `${path}.${field.name}`) ?? `${path}.${field.name}: ${(err as Error).message}`;
    }
  }
  return undefined;
}

/** Waits for `p` at most `ms`; true if it settled in time. */
export async function within(ms: number, p: Promise<unknown>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((done) => (timer = setTimeout(() => done(false), ms)));
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * A 'data' listener that calls `onLine` with each newline-terminated line (without the newline;
 * a trailing CR is dropped too). A line growing past `maxBytes` is discarded up to its newline
 * and reported once to `onTooLong`.
 */
export function lineSplitter(maxBytes: number, onLine: (line: string) => void, onTooLong: (bytes: number) => void): (chunk: Buffer) => void {
  let parts: Buffer[] = [];
  let size = 0;
  let skipping = false;
  return (chunk) => {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      if (!skipping) {
        parts.push(chunk.subarray(start, nl));
        let line = (parts.length === 1 ? parts[0]! : Buffer.concat(parts)).toString('utf8');
        if (line.endsWith('\r')) line = line.slice(0, -1);
        onLine(line);
      }
      parts = [];
      size = 0;
      skipping = false;
      start = nl + 1;
    }
    if (skipping || start === chunk.length) return;
    parts.push(chunk.subarray(start));
    size += chunk.length - start;
    if (size > maxBytes) {
      onTooLong(maxBytes);
      parts = [];
      size = 0;
      skipping = true;
    }
  };
}

