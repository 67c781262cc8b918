/**
 * The keys Flotilla writes under its etcd prefix, and what each holds (JSON). docs/operations.md
 * lists them for operators.
 *
 *   <prefix>/map                                   MapRecord: the map in force (text, epoch, digest)
 *   <prefix>/history/<epoch>                       MapRecord: every epoch ever applied, the current one included
 *   <prefix>/servers/<server>                      ServerRecord: an agent's word, under its lease (gone when it dies)
 *   <prefix>/drains/<stream>/<server>/<epoch>      DrainRecord: <server> has drained what it gave up of <stream> at <epoch>
 *   <prefix>/releases/<stream>/<server>/<epoch>/<from>  ReleaseRecord: <server> released what it held for <from>
 *
 * Epochs in keys are zero-padded to 10 digits, so keys sort by epoch.
 */

/** A map as etcd keeps it. */
export interface MapRecord {
  epoch: number;
  digest: string;
  text: string;
  /** When `portalctl map apply` wrote it (ms since the Unix epoch). */
  appliedAt: number;
}

/** The old owner's drain of the buckets it gave up of one stream in the switch to `epoch`. */
export interface DrainRecord {
  server: string;
  stream: string;
  epoch: number;
  digest: string;
  /** The buckets it gave up in that switch (as its agent computed them). */
  buckets: number[];
  drainedAt: number;
}

/** A new owner's release of the buckets it held for `from`. */
export interface ReleaseRecord {
  server: string;
  from: string;
  stream: string;
  epoch: number;
  digest: string;
  buckets: number[];
  releasedAt: number;
  /** Ended by an operator (`portalctl release`) without a drain record. */
  forced: boolean;
}

const pad = (epoch: number) => String(epoch).padStart(10, '0');

/** The key names under one prefix. */
export class EtcdKeys {
  constructor(readonly prefix: string) {}
  get map(): string {
    return `${this.prefix}/map`;
  }
  history(epoch: number): string {
    return `${this.prefix}/history/${pad(epoch)}`;
  }
  get historyPrefix(): string {
    return `${this.prefix}/history/`;
  }
  server(name: string): string {
    return `${this.prefix}/servers/${name}`;
  }
  get serversPrefix(): string {
    return `${this.prefix}/servers/`;
  }
  drain(stream: string, server: string, epoch: number): string {
    return `${this.drainsOf(stream, server)}${pad(epoch)}`;
  }
  drainsOf(stream: string, server: string): string {
    return `${this.prefix}/drains/${stream}/${server}/`;
  }
  release(stream: string, server: string, epoch: number, from: string): string {
    return `${this.prefix}/releases/${stream}/${server}/${pad(epoch)}/${from}`;
  }
}
