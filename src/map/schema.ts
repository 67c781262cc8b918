/**
 * The JSON Schema a map file is checked against before anything uses it. Cross-field rules that
 * a schema cannot say (unique names, ports that clash, a key field that exists in the Avro
 * schema) are checked afterwards in map.ts, and reported the same way.
 */

const NAME = '^[a-z][a-z0-9_-]{0,31}$';
const PORT = { type: 'integer', minimum: 1, maximum: 65535 } as const;
/** A size in bytes: a number, or a string such as "512MiB", "1GiB" or "64KiB". */
const SIZE = { type: ['integer', 'string'], minimum: 0, pattern: '^[0-9]+(\\.[0-9]+)?\\s*(B|KiB|MiB|GiB|TiB|kB|MB|GB|TB)?$' } as const;
const perStream = (value: object) => ({
  type: 'object',
  propertyNames: { pattern: NAME },
  additionalProperties: value,
});

export const MAP_SCHEMA = {
  $id: 'https://flotilla.invalid/map.schema.json',
  type: 'object',
  required: ['instance', 'epoch', 'servers', 'streams'],
  additionalProperties: false,
  properties: {
    instance: { type: 'string', pattern: NAME, description: 'deployment name (prod, dev, test)' },
    epoch: { type: 'integer', minimum: 1, maximum: 4294967295, description: 'raise by one on every edit' },
    heartbeat_ms: { type: 'integer', minimum: 50, maximum: 60000 },
    stop_drain_ms: { type: 'integer', minimum: 0, maximum: 600000, description: 'how long a stopping portal drains (below TimeoutStopSec)' },
    run_dir: { type: 'string', minLength: 1 },
    servers: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['name', 'host'],
        additionalProperties: false,
        properties: {
          name: { type: 'string', pattern: NAME },
          host: { type: 'string', minLength: 1, pattern: '^[^\\s:/]+$' },
          weight: { type: 'number', minimum: 0, maximum: 1000, description: '0: in the map, owns no bucket (a server being added or drained)' },
          agent_port: PORT,
          http_port: { ...PORT, description: "the agent's HTTP port: Prometheus /metrics, the status page, /healthz; absent: no HTTP server" },
          http_host: { type: 'string', minLength: 1, pattern: '^[^\\s/]+$', description: 'address the HTTP server binds (default 127.0.0.1, loopback only)' },
          ports: perStream(PORT),
          slots: perStream({ type: 'integer', minimum: 1, maximum: 1024 }),
        },
      },
    },
    streams: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['name', 'key', 'port', 'schema'],
        additionalProperties: false,
        properties: {
          name: { type: 'string', pattern: NAME },
          key: { type: 'string', minLength: 1 },
          port: PORT,
          buckets: { type: 'integer', minimum: 1, maximum: 65536 },
          slots: { type: 'integer', minimum: 1, maximum: 1024 },
          window: { type: 'integer', minimum: 1, maximum: 1024 },
          max_batch_bytes: { type: 'integer', minimum: 1024, maximum: 67108864 },
          schema: { type: ['object', 'string'] },
          spool: {
            type: 'object',
            additionalProperties: false,
            properties: {
              mode: { enum: ['off', 'spill', 'always'], description: 'off: memory only; spill: to disk while paused, or a slot is dead or full; always: to disk before every ack' },
              dir: { type: 'string', minLength: 1, description: 'spool files go to <dir>/<server>/<stream>' },
              max_bytes: SIZE,
              when_full: { enum: ['block', 'reject'], description: 'block: senders are slowed; reject: batches are refused with SPOOL_FULL' },
              fsync: { enum: ['always', 'interval', 'never'] },
              fsync_interval_ms: { type: 'integer', minimum: 1, maximum: 60000 },
              min_free_bytes: SIZE,
            },
          },
        },
      },
    },
  },
} as const;
