/**
 * The portal's control socket: each request of protocol/control.ts, checked, to the portal
 * method that answers it.
 *
 *   agent / portalctl --PortalRequest (ipc)--> ControlServer --handlePortalRequest--> Portal
 */
import type { PortalCancelRequest } from '../protocol/cancel';
import { type PortalReplies, parsePortalRequest, type ReleaseRequest } from '../protocol/control';
import type { StreamConfigs } from '../protocol/configure';

/** What the control socket may ask of a portal. */
export interface PortalControl {
  stats(): PortalReplies['stats'];
  beacon(advance: boolean): PortalReplies['beacon'];
  setPaused(paused: boolean): PortalReplies['pause'];
  switchEpoch(epoch: number, digest?: string): PortalReplies['switch'];
  drained(): PortalReplies['drained'];
  load(): PortalReplies['load'];
  release(request: ReleaseRequest): PortalReplies['release'];
  cancel(cancellations: PortalCancelRequest['cancellations']): Promise<PortalReplies['cancel']>;
  configure(configs: StreamConfigs): PortalReplies['configure'];
}

/** Answers one control request (JSON, not yet checked); throws a FlotillaError to refuse it. */
export function handlePortalRequest(portal: PortalControl, raw: unknown): PortalReplies[keyof PortalReplies] | Promise<PortalReplies['cancel']> {
  const req = parsePortalRequest(raw);
  switch (req.cmd) {
    case 'ping':
      return { ok: true };
    case 'stats':
      return portal.stats();
    case 'beacon':
      return portal.beacon(false);
    case 'pause':
      return portal.setPaused(true);
    case 'resume':
      return portal.setPaused(false);
    case 'switch':
      return portal.switchEpoch(req.epoch, req.digest);
    case 'drained':
      return portal.drained();
    case 'load':
      return portal.load();
    case 'release':
      return portal.release(req);
    case 'cancel':
      return portal.cancel(req.cancellations);
    case 'configure':
      return portal.configure(req.configs);
  }
}
