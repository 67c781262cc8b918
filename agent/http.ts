/**
 * The agent's HTTP server, on the map's `http_port` of this server (bound to `http_host`,
 * loopback unless the map says otherwise): for Prometheus, for a health check, and for people.
 *
 *   GET /              the status page (page.ts), which polls the two JSON routes below
 *   GET /api/status    this server: its status, its problems and its health code
 *   GET /api/cluster   every server of the map, asked over TCP as `portalctl status --cluster` does
 *   GET /metrics       Prometheus text (metrics.ts)
 *   GET /healthz       200 when healthy, 503 with the problems when not (codes: src/agent/problems.ts)
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { agentStatus, remoteAgent } from '../src/agent/client';
import { healthExit, problemsOf, type Problem } from '../src/agent/problems';
import { FlotillaError } from '../src/errors';
import type { Logger } from '../src/log';
import type { FlotillaMap } from '../src/map/types';
import type { AgentStatus } from '../src/protocol/control';
import { Metrics } from './metrics';
import { PAGE_HTML } from './page';

/** How long /api/cluster waits for another server's agent. */
export const CLUSTER_TIMEOUT_MS = 1500;

/** What the HTTP server reads of the agent. */
export interface HttpAgent {
  readonly map: FlotillaMap;
  status(): AgentStatus;
}

/** One server as /api/status and /api/cluster show it. */
export interface ServerView {
  server: string;
  /** `portalctl status`'s exit status for it: 0 healthy (see src/agent/problems.ts). */
  health: number;
  problems: Problem[];
  status: AgentStatus | null;
  /** Why its agent could not be asked. */
  error?: string;
}

export class AgentHttp {
  private readonly server: Server;
  private readonly metrics: Metrics;

  constructor(
    private readonly agent: HttpAgent,
    private readonly name: string,
    private readonly log: Logger,
  ) {
    this.metrics = new Metrics({ server: name, instance: agent.map.instance });
    this.server = createServer((req, res) => {
      this.route(req, res).catch((err: unknown) => {
        this.log.error({ err, url: req.url }, `http: ${req.url}: ${(err as Error).message}`);
        if (!res.headersSent) send(res, 500, 'text/plain', `error: ${(err as Error).message}\n`);
        else res.end();
      });
    });
  }

  /** Listens on `host:port`; throws CONFIG_INVALID naming the address when it cannot. Returns the URL. */
  async listen(host: string, port: number): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) =>
        reject(new FlotillaError('CONFIG_INVALID', `the agent's HTTP server cannot listen on ${host}:${port} (http_host:http_port of ${this.name}): ${err.code ?? err.message}`, { cause: err }));
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    const a = this.server.address() as AddressInfo;
    return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'only GET\n');
    switch (path) {
      case '/':
      case '/index.html':
        return send(res, 200, 'text/html; charset=utf-8', PAGE_HTML);
      case '/metrics':
        return send(res, 200, this.metrics.contentType, await this.metrics.render(this.agent.status()));
      case '/healthz': {
        const view = viewOf(this.agent.status());
        return sendJson(res, view.health === 0 ? 200 : 503, { ok: view.health === 0, server: view.server, health: view.health, problems: view.problems });
      }
      case '/api/status':
        return sendJson(res, 200, viewOf(this.agent.status()));
      case '/api/cluster':
        return sendJson(res, 200, await this.cluster());
      default:
        return send(res, 404, 'text/plain', `no ${path} here: try /, /metrics, /healthz, /api/status, /api/cluster\n`);
    }
  }

  /** Every server of the map: this one from the agent itself, the others over TCP at their agent_port. */
  private cluster(): Promise<ServerView[]> {
    return Promise.all(
      this.agent.map.servers.map(async (s): Promise<ServerView> => {
        if (s.name === this.name) return viewOf(this.agent.status());
        const target = remoteAgent(s);
        if (!target) return { server: s.name, health: 1, problems: [], status: null, error: 'no agent_port in the map: its agent cannot be asked from here' };
        try {
          return viewOf(await agentStatus(target, { timeoutMs: CLUSTER_TIMEOUT_MS }));
        } catch (err) {
          return { server: s.name, health: 1, problems: [], status: null, error: (err as Error).message };
        }
      }),
    );
  }
}

/** A server's status with its problems and health code. */
export function viewOf(status: AgentStatus): ServerView {
  const problems = problemsOf(status);
  return { server: status.server, health: healthExit(problems), problems, status };
}

function send(res: ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

function sendJson(res: ServerResponse, code: number, value: unknown): void {
  send(res, code, 'application/json', JSON.stringify(value));
}
