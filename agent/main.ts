#!/usr/bin/env node
/**
 * flotilla-agent: the control plane of one server. Wiring and lifecycle only; the logic is
 * src/agent/.
 */
import { Command, InvalidArgumentError } from 'commander';
import { Agent, DEFAULT_WATCH_MS } from '../src/agent/agent';
import { DEFAULT_HOST_SAMPLE_MS } from '../src/agent/host-health';
import { AgentHttp } from './http';
import { DAEMON_ENVIRONMENT_HELP, die, runDaemon, warnPrivateTmp, whichServer } from '../daemon/process';
import { packageVersion } from '../daemon/version';
import { daemonKey } from '../src/transport/curve';
import { createLogger } from '../src/log';
import { parseMap } from '../src/map/load';
import { MAP_FILE_SETTLE_MS, openMapStore, readWhole } from '../src/map/open';

const program = new Command('flotilla-agent')
  .description(
    "Run this server's control plane: collect the portals' beacons, pause and resume them for portalctl, hold the map in force and check every edit of the map file.",
  )
  .version(packageVersion(), '-V, --version')
  .requiredOption('-m, --map <file|etcd-url>', 'map file (YAML or JSON), or etcd://HOST:PORT[,HOST:PORT...]/PREFIX', process.env.FLOTILLA_MAP)
  .option('--server <name>', "this server's name in the map (default $FLOTILLA_SERVER, else the host name)")
  .option('--run-dir <dir>', "directory for ipc sockets (default the map's run_dir)")
  .option('--key <file>', "this server's secret key file, for a map with keys (default $FLOTILLA_KEY, else /etc/flotilla/keys/<server>.key)")
  .option('--bind <host>', "address of the TCP control socket (default the server's host in the map)")
  .option('--hold-limit <seconds>', 'a hold of buckets waiting longer than this for their old owner is shown as stuck (default 120)', process.env.FLOTILLA_HOLD_LIMIT)
  .option('--host-sample-ms <ms>', `how often the host's memory, load, disks and processes are sampled, in ms (0: never)`, String(DEFAULT_HOST_SAMPLE_MS))
  .option('--watch <ms>', 'how often to check the map file for an edit, in ms; 0: only on SIGHUP or portalctl reload', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a whole number of ms, 0 or more');
    return n;
  }, DEFAULT_WATCH_MS)
  .addHelpText(
    'after',
    `
${DAEMON_ENVIRONMENT_HELP}

Signals:
  SIGHUP                read the map file again (as portalctl reload does); an invalid edit is
                        logged and the map in force stays
  SIGTERM, SIGINT       stop

Example:
  flotilla-agent --map /etc/flotilla/map.yaml --server alpha
`,
  )
  .showHelpAfterError();

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<{ map: string; server?: string; runDir?: string; key?: string; bind?: string; holdLimit?: string; hostSampleMs: string; watch: number }>();
  process.umask(0o007); // sockets for the service's user and group only
  const store = await openMapStore(o.map);
  const map = await readWhole(store, MAP_FILE_SETTLE_MS, createLogger('agent'), () => parseMap(store.read(), store.source)); // a file being written: read it whole
  const server = whichServer(map, o.server);
  daemonKey(map, server, o.key, o.bind); // CURVE: this server's key, checked against the map (src/transport/curve.ts)
  const log = createLogger('agent', { server });
  store.log = log;
  warnPrivateTmp(log, o.runDir ?? map.runDir);
  const holdLimitMs = o.holdLimit === undefined ? undefined : Math.round(Number(o.holdLimit) * 1000);
  const agent = new Agent({
    mapFile: o.map,
    store,
    server,
    runDir: o.runDir,
    bindHost: o.bind,
    watchMs: o.watch,
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
    reload: () => {
      const r = agent.reload();
      return r.outcome === 'applied' ? `epoch ${r.epoch} taken (was ${r.from})` : r.outcome === 'unchanged' ? `map unchanged, epoch ${r.epoch}` : `edit rejected, epoch ${r.epoch} stays in force`;
    },
    status: () => {
      const st = agent.status();
      const states = st.streams.map((s) => `${s.stream} ${s.paused ? 'paused' : s.state}`).join(', ');
      return `epoch ${st.epoch}${st.mapErrors ? ' (an edit of the map was rejected)' : ''}; ${states}`;
    },
  });
}

main().catch((err: unknown) => die(err));
