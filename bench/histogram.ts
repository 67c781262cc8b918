/** A latency histogram with 10 µs buckets up to 1 s (everything slower lands in the last). */

const BUCKET_MS = 0.01;
const BUCKETS = 100_000;

export class Histogram {
  readonly counts = new Float64Array(BUCKETS);
  total = 0;
  max = 0;

  /** Records `n` observations of `ms` milliseconds. */
  add(ms: number, n = 1): void {
    const b = Math.min(BUCKETS - 1, Math.max(0, Math.floor(ms / BUCKET_MS)));
    this.counts[b]! += n;
    this.total += n;
    if (ms > this.max) this.max = ms;
  }

  /** Adds another histogram's counts (e.g. from another load generator) into this one. */
  merge(other: { counts: [number, number][]; max: number }): void {
    for (const [b, n] of other.counts) {
      this.counts[b]! += n;
      this.total += n;
    }
    if (other.max > this.max) this.max = other.max;
  }

  /** The non-empty buckets as [bucket, count] pairs: small enough to send over ipc. */
  toSparse(): { counts: [number, number][]; max: number } {
    const counts: [number, number][] = [];
    for (let b = 0; b < BUCKETS; b++) if (this.counts[b]! > 0) counts.push([b, this.counts[b]!]);
    return { counts, max: this.max };
  }

  /** The q-quantile (0..1) in ms, at the upper edge of its bucket; NaN when empty. */
  quantile(q: number): number {
    if (this.total === 0) return NaN;
    const rank = q * this.total;
    let seen = 0;
    for (let b = 0; b < BUCKETS; b++) {
      seen += this.counts[b]!;
      if (seen >= rank) return Math.min((b + 1) * BUCKET_MS, this.max);
    }
    return this.max;
  }

  reset(): void {
    this.counts.fill(0);
    this.total = 0;
    this.max = 0;
  }
}
