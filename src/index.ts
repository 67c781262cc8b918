/**
 * Flotilla's public API: everything a sender, a component or a tool needs, and nothing else.
 */
export { Sender, type SenderOptions, type SenderStats, DEFAULT_LINGER_MS, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_RECORDS } from './sender';
export { Component, runComponent, type ComponentContext, type ComponentOptions } from './component';
export { type Delivered, ENVELOPE_SCHEMA } from './envelope';
export { Portal, type PortalOptions, type PortalStats } from './portal';
export { portalStats, portalRequest } from './control-client';
export { agentStatus, agentPause, agentResume, agentReload, localAgent, remoteAgent, type AgentTarget } from './agent-client';
export { type AgentStatus } from './agent';
export { type PortalBeacon, type ComponentBeacon, type SlotBeacon, DEAD_AFTER_BEATS } from './heartbeat';
export {
  loadMap,
  parseMap,
  streamOf,
  serverOf,
  portalPort,
  portalEndpoint,
  slotCount,
  type FlotillaMap,
  type MapServer,
  type MapStream,
} from './map';
export { diffMaps, type MapDiff, type StreamDiff, type BucketMove } from './map-diff';
export { bucketOf, fnv1a32, slotOf } from './bucket';
export { FlotillaError, MapInvalidError, WireError, WIRE_ERROR_CODES, type ErrorCode, type WireErrorCode, type MapProblem } from './errors';
export { createLogger, type Logger } from './log';
