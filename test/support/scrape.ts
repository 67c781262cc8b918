/** Reads an agent's HTTP routes as Prometheus or a health checker would. */

/** One sample of a Prometheus text scrape. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** GETs `url`; resolves with the status code and the body. */
export async function get(url: string): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
}

/** Parses Prometheus text format 0.0.4 (the lines that are samples). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** Scrapes `url` (an agent's /metrics) into samples. */
export async function scrape(url: string): Promise<Sample[]> {
  const r = await get(url);
  if (r.status !== 200) throw new Error(`${url}: HTTP ${r.status}: ${r.body}`);
  return parseMetrics(r.body);
}

/** The samples of `name` whose labels include `labels`. */
export function samples(all: Sample[], name: string, labels: Record<string, string | number> = {}): Sample[] {
  return all.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === String(v)));
}

/** The value of the one sample of `name` with `labels`; throws if there is not exactly one. */
export function value(all: Sample[], name: string, labels: Record<string, string | number> = {}): number {
  const found = samples(all, name, labels);
  if (found.length !== 1) throw new Error(`${found.length} samples of ${name}${JSON.stringify(labels)}`);
  return found[0]!.value;
}

/** The sum of the samples of `name` with `labels`. */
export const sum = (all: Sample[], name: string, labels: Record<string, string | number> = {}) => samples(all, name, labels).reduce((n, s) => n + s.value, 0);
