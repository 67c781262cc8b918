declare module 'hashring' {
  /** Ketama consistent hashing (libketama compatible): 40 vnodes x 4 points per server. */
  class HashRing {
    constructor(servers: Record<string, { weight?: number; vnodes?: number }> | string[], algorithm?: string, options?: Record<string, unknown>);
    get(key: string): string | undefined;
  }
  export = HashRing;
}
