/**
 * Flotilla's public API: everything a sender, a component or a tool needs, and nothing else.
 */
export { Sender, type SenderOptions, type SenderStats, DEFAULT_LINGER_MS, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_RECORDS } from './sender/sender';
export { Component, runComponent, type ComponentContext, type ComponentOptions } from './component/component';
export { type Delivered, ENVELOPE_SCHEMA } from './protocol/envelope';
export { isRootId, rootOf } from './protocol/root';
export { type CancelReply, DEFAULT_CANCEL_TTL_MS } from './protocol/cancel';
export { Portal, type PortalOptions, type PortalStats } from './portal/portal';
export { portalStats, portalRequest } from './portal/client';
export { agentStatus, agentPause, agentResume, agentReload, localAgent, remoteAgent, type AgentTarget } from './agent/client';
export { type PortalBeacon, type ComponentBeacon, type SlotBeacon, type SlotView, DEAD_AFTER_BEATS } from './protocol/beacons';
export { agentConfigure } from './agent/client';
export { type Config, type ConfigureRequest, type ConfigureReply, type SlotConfigResult, type StreamConfigs, effectiveConfig } from './protocol/configure';
export {
  type AgentRequest,
  type AgentReplies,
  type AgentStatus,
  type PortalRequest,
  type PortalReplies,
  type ErrorReply,
  AGENT_COMMANDS,
  PORTAL_COMMANDS,
} from './protocol/control';
export { loadMap, parseMap } from './map/load';
export { streamOf, serverOf, portalPort, portalEndpoint, slotCount } from './map/lookup';
export { type FlotillaMap, type MapServer, type MapStream } from './map/types';
export { diffMaps, type MapDiff, type StreamDiff, type BucketMove } from './map/diff';
export { bucketOf, fnv1a32, slotOf } from './map/bucket';
export { FlotillaError, MapInvalidError, WireError, ERROR_CODES, WIRE_ERROR_CODES, type ErrorCode, type WireErrorCode, type MapProblem } from './errors';
export { MapKeeper } from './map/keeper';
export { openMap, openMapStore, type OpenMapOptions } from './map/open';
export { type MapStore, type StoreHealth } from './map/store';
export { routeKey, type Route } from './map/route';
export { createLogger, type Logger } from './log';
