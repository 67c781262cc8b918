/**
 * Key -> bucket. The hash is specified byte for byte in docs/map.md so that a sender written in
 * another language computes the same bucket:
 *
 *   bucket = fnv1a32(utf8(key)) mod buckets
 *
 * FNV-1a, 32 bits: h = 0x811c9dc5; for each byte b: h = (h XOR b) * 0x01000193 mod 2^32.
 */

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a 32-bit hash of `buf[start, end)`, as an unsigned integer. */
export function fnv1a32(buf: Uint8Array, start = 0, end = buf.length): number {
  let h = FNV_OFFSET;
  for (let i = start; i < end; i++) {
    h = Math.imul(h ^ buf[i]!, FNV_PRIME);
  }
  return h >>> 0;
}

/** FNV-1a 32-bit hash of a string's UTF-8 bytes, without allocating for ASCII keys. */
export function fnv1a32String(key: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c > 0x7f) return fnv1a32(Buffer.from(key, 'utf8'));
    h = Math.imul(h ^ c, FNV_PRIME);
  }
  return h >>> 0;
}

/** The bucket a key belongs to, in a stream of `buckets` buckets. */
export function bucketOf(key: string, buckets: number): number {
  return fnv1a32String(key) % buckets;
}

/** The bucket of a key given as UTF-8 bytes in `buf[start, end)`. */
export function bucketOfBytes(buf: Uint8Array, start: number, end: number, buckets: number): number {
  return fnv1a32(buf, start, end) % buckets;
}

/** The local slot that processes a bucket on a server with `slots` slots. */
export function slotOf(bucket: number, slots: number): number {
  return bucket % slots;
}
