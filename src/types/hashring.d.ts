declare module 'hashring' {
  /** Ketama consistent hashing (libketama compatible): md5 points, 4 per vnode. */
  class HashRing {
    constructor(servers: Record<string, { weight?: number; vnodes?: number }> | string[], algorithm?: string | ((key: string) => Buffer), options?: Record<string, unknown>);
    get(key: string): string | undefined;
  }
  export = HashRing;
}
