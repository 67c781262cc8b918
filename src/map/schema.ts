/**
 * The JSON Schema a map file is checked against before anything uses it. Cross-field rules that
 * a schema cannot say (unique names, ports that clash, a key field that exists in the Avro
 * schema) are checked afterwards in load.ts, and reported the same way. Every property has a
 * description, for the editors that show them; the package ships this schema as
 * config/map.schema.json (`npm run schema` writes it; `portalctl map schema` prints it).
 */

const NAME = '^[a-z][a-z0-9_-]{0,31}$';
const port = (description: string) => ({ type: 'integer', minimum: 1, maximum: 65535, description }) as const;
/** A size in bytes: a number, or a string such as "512MiB", "1GiB" or "64KiB". */
const size = (description: string) =>
  ({ type: ['integer', 'string'], minimum: 0, pattern: '^[0-9]+(\\.[0-9]+)?\\s*(B|KiB|MiB|GiB|TiB|kB|MB|GB|TB)?$', description }) as const;
const perStream = (value: object, description: string) => ({
  type: 'object',
  description,
  propertyNames: { pattern: NAME },
  additionalProperties: value,
});

/** A Z85-encoded CURVE public key. */
const curveKey = (description: string) => ({ type: 'string', pattern: '^[0-9a-zA-Z.\\-:+=^!/*?&<>()\\[\\]{}@%$#]{40}$', description }) as const;
const keyList = (description: string) =>
  ({
    type: 'array',
    description,
    items: {
      type: 'object',
      required: ['name', 'public_key'],
      additionalProperties: false,
      description: 'A named client key.',
      properties: {
        name: { type: 'string', pattern: NAME, description: 'Who holds the key (shown in logs and status).' },
        public_key: curveKey('Its CURVE public key (NAME.pub from `portalctl keys generate NAME`).'),
      },
    },
  }) as const;

export const MAP_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://flotilla.invalid/map.schema.json',
  title: 'Flotilla map',
  description: 'Which server owns which key of each stream, and where each portal listens (docs/map.md).',
  type: 'object',
  required: ['instance', 'epoch', 'servers', 'streams'],
  additionalProperties: false,
  properties: {
    instance: { type: 'string', pattern: NAME, description: 'Deployment name (prod, dev, test); several instances share a host without clashing.' },
    epoch: { type: 'integer', minimum: 1, maximum: 4294967295, description: 'Version of the map: raise it by one on every edit; a file with the same epoch is not taken again.' },
    heartbeat_ms: { type: 'integer', minimum: 50, maximum: 60000, description: 'How often every process beacons its state, in ms (default 1000).' },
    stop_drain_ms: { type: 'integer', minimum: 0, maximum: 600000, description: "How long a stopping portal lets accepted records finish, in ms (default 20000); keep it below the unit's TimeoutStopSec." },
    run_dir: { type: 'string', minLength: 1, description: "Directory of the instance's ipc sockets (default /run/flotilla/<instance>); an ipc path may be at most 107 bytes." },
    security: {
      type: 'object',
      additionalProperties: false,
      description: 'Transport security (docs/security.md): CURVE keys, or plain TCP on loopback only.',
      properties: {
        plain_tcp: { type: 'boolean', description: 'true: no keys, plain TCP; allowed only when every server binds a loopback address (the one-host demo).' },
        max_connections: { type: 'integer', minimum: 16, maximum: 100000, description: 'Most TCP connections one portal or agent keeps open (default 2048); past it new ones are refused until some close.' },
      },
    },
    operators: keyList('Keys that may run every command of portalctl over TCP (pause, resume, reload, release, status).'),
    senders: keyList("Keys that may send records to the portals (and nothing else); the servers' own keys may too."),
    servers: {
      type: 'array',
      description: 'The servers of the instance.',
      minItems: 1,
      items: {
        type: 'object',
        required: ['name', 'host'],
        additionalProperties: false,
        description: 'One server: its name, address, weight and ports.',
        properties: {
          name: { type: 'string', pattern: NAME, description: "The server's identity (placement hashes it: renaming a server moves its buckets); unique." },
          host: { type: 'string', minLength: 1, pattern: '^[^\\s:/]+$', description: 'Address senders connect to and the portals bind.' },
          weight: { type: 'number', minimum: 0, maximum: 1000, description: 'Share of buckets (default 1); 0: in the map, owns no bucket (a server being added or drained).' },
          agent_port: port("The server's agent control port (portalctl --cluster, other agents); none: ipc only."),
          ports: perStream(port("This server's portal port for the stream."), "This server's portal port per stream, instead of the stream's port."),
          slots: perStream({ type: 'integer', minimum: 1, maximum: 1024, description: "This server's slot count for the stream." }, "This server's slot count per stream, instead of the stream's slots."),
          http_port: port("The agent's HTTP port: Prometheus /metrics, the status page, /healthz; absent: no HTTP server."),
          http_host: { type: 'string', minLength: 1, pattern: '^[^\\s/]+$', description: 'Address the HTTP server binds (default 127.0.0.1, loopback only).' },
          public_key: curveKey("The server's CURVE public key (its NAME.pub from `portalctl keys generate`); its secret stays in the server's key file."),
        },
      },
    },
    streams: {
      type: 'array',
      minItems: 1,
      description: 'The streams (data-flow types) of the instance.',
      items: {
        type: 'object',
        required: ['name', 'key', 'port', 'schema'],
        additionalProperties: false,
        description: 'One stream: its key, port, buckets, slots, Avro schema and spool.',
        properties: {
          name: { type: 'string', pattern: NAME, description: 'The stream; unique.' },
          key: { type: 'string', minLength: 1, description: "The payload field whose value is the record's key: string, int or long in the schema." },
          port: port("TCP port of the stream's portal on every server (unless a server's ports says otherwise)."),
          buckets: { type: 'integer', minimum: 1, maximum: 65536, description: 'How many buckets keys hash to (default 1024); fixed once the stream exists.' },
          slots: { type: 'integer', minimum: 1, maximum: 1024, description: 'Component slots per server (default 4), unless a server says otherwise.' },
          window: { type: 'integer', minimum: 1, maximum: 1024, description: 'Most batches one sender connection may have unacknowledged at one portal (default 16).' },
          max_batch_bytes: { type: 'integer', minimum: 1024, maximum: 67108864, description: 'Largest batch body a portal accepts, in bytes (default 1 MiB).' },
          schema: { type: ['object', 'string'], description: "The records' Avro schema (a record), or the path of a JSON file holding it, relative to the map." },
          spool: {
            type: 'object',
            additionalProperties: false,
            description: "The portal's disk spool (the same on every server of the stream).",
            properties: {
              mode: { enum: ['off', 'spill', 'always'], description: 'off (default): memory only; spill: to disk while paused, or a slot is dead or full; always: to disk before every ack' },
              dir: { type: 'string', minLength: 1, description: 'Base directory (default /var/lib/flotilla/<instance>/spool); files go to <dir>/<server>/<stream>.' },
              max_bytes: size('The most the spool holds on disk (default 1GiB); at least 4 x max_batch_bytes.'),
              when_full: { enum: ['block', 'reject'], description: 'block (default): senders are slowed; reject: batches are refused with SPOOL_FULL' },
              fsync: { enum: ['always', 'interval', 'never'], description: 'When written records are forced to disk (default interval): what survives a power loss.' },
              fsync_interval_ms: { type: 'integer', minimum: 1, maximum: 60000, description: 'With fsync: interval, how often, in ms (default 1000).' },
              min_free_bytes: size('Free-space floor of the spool filesystem (default 64MiB): below it the spool takes no records.'),
            },
          },
          memory: {
            type: 'object',
            additionalProperties: false,
            description: "Bounds of what the stream's portal holds in memory (docs/security.md, Limits); each past bound is counted in status.",
            properties: {
              max_queued_bytes: size('Bytes of records the portal holds, queued for its slots or in flight (default 256MiB): past it the portal stops reading from senders.'),
              max_slot_bytes: size("Bytes of one slot's backlog (default 64MiB): past it the slot is full: its records go to the spool, or without one the portal stops reading."),
              max_unread_replies: { type: 'integer', minimum: 16, maximum: 1000000, description: 'Replies (ACK, ERROR) queued for one sender connection that does not read them (default 1024); past it they are dropped and counted. At least 2 x window.' },
              max_rss_bytes: size("The portal's resident memory (default 1GiB): past it, while it still grows (a message that never ends, buffers a peer fills), every sender connection is dropped; senders reconnect and resend."),
            },
          },
        },
      },
    },
  },
} as const;
