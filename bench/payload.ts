/** The bench stream's schema, keys and pre-encoded 100-byte Avro payloads. */
import avro from 'avsc';

/** Size of one record's payload (Flotilla) or of one message (baseline), bytes. */
export const RECORD_BYTES = 100;
/** Distinct keys the load spreads over (so every slot gets its share). */
export const KEYS = 10_000;
export const STREAM = 'bench';

export const BENCH_SCHEMA = {
  type: 'record',
  name: 'BenchRecord',
  fields: [
    { name: 'key', type: 'string' },
    { name: 'data', type: 'bytes' },
  ],
} as const;

/** Key i, fixed width so every payload has the same size. */
export function keyOf(i: number): string {
  return `k${String(i).padStart(6, '0')}`;
}

/** One payload per key, each exactly RECORD_BYTES of Avro (key field + filler bytes). */
export function encodedPayloads(): { keys: string[]; payloads: Buffer[] } {
  const type = avro.Type.forSchema(BENCH_SCHEMA as unknown as avro.Schema);
  const keys: string[] = [];
  const payloads: Buffer[] = [];
  for (let i = 0; i < KEYS; i++) {
    const key = keyOf(i);
    let fill = RECORD_BYTES;
    let buf = type.toBuffer({ key, data: Buffer.alloc(fill, 0x61) });
    while (buf.length > RECORD_BYTES) buf = type.toBuffer({ key, data: Buffer.alloc(--fill, 0x61) });
    if (buf.length !== RECORD_BYTES) throw new Error(`cannot make a ${RECORD_BYTES}-byte payload for ${key}`);
    keys.push(key);
    payloads.push(buf);
  }
  return { keys, payloads };
}
