#!/usr/bin/env node
/**
 * flotilla-agent: the control plane of one server. Wiring and lifecycle only; the logic is
 * src/agent/.
 */
import { Command } from 'commander';
import { Agent } from '../src/agent/agent';
import { AgentHttp } from './http';
import { DEFAULT_HOST_SAMPLE_MS } from '../src/agent/host-health';
import { die, runDaemon, whichServer } from '../daemon/process';
import { createLogger } from '../src/log';
import { loadMap } from '../src/map/load';

const program = new Command('flotilla-agent')
  .description(
    "Run this server's control plane: collect the portals' beacons, pause and resume them for portalctl, hold the map in force and check every edit of the map file.",
  )
  .requiredOption('-m, --map <file>', 'map file (YAML or JSON)', process.env.FLOTILLA_MAP)
  .option('--server <name>', "this server's name in the map (default $FLOTILLA_SERVER, else the host name)")
  .option('--run-dir <dir>', "directory for ipc sockets (default the map's run_dir)")
  .option('--bind <host>', "address of the TCP control socket (default the server's host in the map)")
  .option('--hold-limit <seconds>', 'a hold of buckets waiting longer than this for their old owner is shown as stuck (default 120)', process.env.FLOTILLA_HOLD_LIMIT)
  .option('--host-sample-ms <ms>', `how often the host's memory, load, disks and processes are sampled, in ms (0: never)`, String(DEFAULT_HOST_SAMPLE_MS))
  .addHelpText('after', '\nExample:\n  flotilla-agent --map /etc/flotilla/map.yaml --server alpha\n')
  .showHelpAfterError();

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<{ map: string; server?: string; runDir?: string; bind?: string; holdLimit?: string; hostSampleMs: string }>();
  process.umask(0o007); // sockets for the service's user and group only
  const server = whichServer(loadMap(o.map), o.server);
  const log = createLogger('agent', { server });
  const holdLimitMs = o.holdLimit === undefined ? undefined : Math.round(Number(o.holdLimit) * 1000);
  const agent = new Agent({
    mapFile: o.map,
    server,
    runDir: o.runDir,
    bindHost: o.bind,
    log,
    hostSampleMs: Number(o.hostSampleMs),
    ...(holdLimitMs === undefined ? {} : { holdLimitMs }),
  });
  const self = agent.map.servers.find((s) => s.name === server);
  const http = self?.httpPort !== undefined ? new AgentHttp(agent, server, log) : null;
  await runDaemon('agent', log, {
    async start() {
      await agent.start();
      if (!http) return;
      try {
        const url = await http.listen(self!.httpHost, self!.httpPort!);
        log.info({ url }, `agent of ${server}: status page ${url}, metrics ${url}metrics, health ${url}healthz`);
      } catch (err) {
        await agent.stop();
        throw err;
      }
    },
    async stop() {
      await http?.close();
      await agent.stop();
    },
  });
}

main().catch((err: unknown) => die(err));
