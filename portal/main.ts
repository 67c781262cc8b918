#!/usr/bin/env node
/**
 * flotilla-portal: the portal daemon for one stream on this server. Wiring and lifecycle only;
 * the routing logic is src/portal/.
 */
import { Command } from 'commander';
import { MAP_FILE_SETTLE_MS, openMap } from '../src/map/open';
import { createLogger } from '../src/log';
import { Portal } from '../src/portal/portal';
import { DAEMON_ENVIRONMENT_HELP, die, runDaemon, warnPrivateTmp, whichServer } from '../daemon/process';
import { packageVersion } from '../daemon/version';
import { daemonKey } from '../src/transport/curve';

const program = new Command('flotilla-portal')
  .description('Serve one stream on this server: take batches on its TCP port, route each record by key to a local component slot.')
  .version(packageVersion(), '-V, --version')
  .requiredOption('-m, --map <file|etcd-url>', 'map file (YAML or JSON), or etcd://HOST:PORT[,HOST:PORT...]/PREFIX', process.env.FLOTILLA_MAP)
  .requiredOption('-s, --stream <name>', 'stream this portal serves')
  .option('--server <name>', "this server's name in the map (default $FLOTILLA_SERVER, else the host name)")
  .option('--run-dir <dir>', "directory for ipc sockets (default the map's run_dir)")
  .option('--key <file>', "this server's secret key file, for a map with keys (default $FLOTILLA_KEY, else /etc/flotilla/keys/<server>.key)")
  .option('--bind <host>', "address to listen on (default the server's host in the map)")
  .option('--spool-dir <dir>', "base directory of the stream's spool (default the stream's spool.dir in the map)")
  .option('--stop-drain-ms <ms>', "on SIGTERM, how long to let accepted records finish before exiting anyway (default the map's stop_drain_ms, 20000)", Number)
  .addHelpText(
    'after',
    `
${DAEMON_ENVIRONMENT_HELP}

Signals:
  SIGHUP                ignored (logged): a portal takes a new map from its agent at an epoch
                        switch, so reload the agent (systemctl reload flotilla-agent@INSTANCE)
  SIGTERM, SIGINT       stop

Example:
  flotilla-portal --map /etc/flotilla/map.yaml --server alpha --stream clicks
`,
  )
  .showHelpAfterError();

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<{ map: string; stream: string; server?: string; runDir?: string; key?: string; bind?: string; spoolDir?: string; stopDrainMs?: number }>();
  process.umask(0o007); // sockets and spool for the service's user and group only
  const keeper = await openMap(o.map, { settleMs: MAP_FILE_SETTLE_MS, log: createLogger('portal', { stream: o.stream }) }); // read again at each epoch switch
  const server = whichServer(keeper.map, o.server);
  daemonKey(keeper.map, server, o.key, o.bind); // CURVE: this server's key, checked against the map (src/transport/curve.ts)
  const log = createLogger('portal', { stream: o.stream, server });
  if (keeper.store) keeper.store.log = log;
  warnPrivateTmp(log, o.runDir ?? keeper.map.runDir);
  const portal = new Portal({ map: keeper, server, stream: o.stream, runDir: o.runDir, bindHost: o.bind, spoolDir: o.spoolDir, stopDrainMs: o.stopDrainMs, log });
  await runDaemon(`portal ${o.stream}`, log, {
    start: () => portal.start(),
    stop: () => portal.stop(),
    status: () => {
      const st = portal.stats();
      const live = st.slots.filter((x) => x.connected).length;
      return `epoch ${st.epoch}, ${st.paused ? 'paused' : 'running'}; ${Math.round(st.rates.inPerSec)} in/s, ${Math.round(st.rates.outPerSec)} out/s, ${st.queuedRecords} queued; ${live}/${st.slots.length} slots connected`;
    },
  });
}

main().catch((err: unknown) => die(err));
