/**
 * CURVE with allow-listed keys, server `alpha` on a host of its own (a network namespace); the
 * test process is every client, taking one key after another:
 *
 *   Sender (key web, listed sender)   --CURVE--> alpha:orders portal --ipc--> 2 recorder slots
 *   portalctl (key ops, operator)     --CURVE--> alpha agent_port
 *   stranger (key not in the map)     --CURVE--> refused by ZAP, counted (KEY_REFUSED)
 *   alpha's public key, wrong secret  --CURVE--> handshake fails, counted (HANDSHAKE_FAILED)
 *
 * and a capture on alpha's link sees no record payload in clear.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as zmq from 'zeromq';
import { agentStatus, localAgent, remoteAgent } from '../src/agent/client';
import { Sender } from '../src/sender/sender';
import { useKey } from '../src/transport/curve';
import { generateKeyPair, readKeyFile, writeKeyPair } from '../src/transport/keys';
import { requestJson } from '../src/transport/request';
import { deploy, portalctlAsync, startAgent, waitAgent, waitFor, type Deployment } from './support/deploy';
import { RECORD_SCHEMA } from './support/flows';
import { canMakeHosts, type Hosts, makeHosts } from './support/netns';
import { freePorts } from './support/ports';
import { assertExactlyOnceInOrder, readRecorded, sentRounds } from './support/records';

const SLOTS = 2;
const skip = canMakeHosts() ? false : 'needs root and ip (network namespaces)';
let d: Deployment;
let hosts: Hosts;
let keys: string;
const key = (name: string) => join(keys, `${name}.key`);
const files = () => Array.from({ length: SLOTS }, (_, s) => d.outOf('orders', s));
const refused = async (cause: string) => (await d.stats('orders', 'alpha')).errors[cause] ?? 0;

before(async () => {
  if (skip) return;
  hosts = makeHosts(2);
  keys = mkdtempSync(join(tmpdir(), 'flt-keys-'));
  const pub = (name: string) => writeKeyPair(keys, name).publicKey;
  const [port, agentPort] = await freePorts(2);
  d = deploy(
    {
      instance: 'test',
      epoch: 1,
      heartbeat_ms: 200,
      servers: [
        { name: 'alpha', host: hosts.address(0), agent_port: agentPort, public_key: pub('alpha') },
        // In the map, owning nothing, not running: its key is a server's.
        { name: 'beta', host: hosts.address(1), weight: 0, public_key: pub('beta') },
      ],
      operators: [{ name: 'ops', public_key: pub('ops') }],
      senders: [{ name: 'web', public_key: pub('web') }],
      streams: [{ name: 'orders', key: 'key', port, buckets: 64, slots: SLOTS, schema: RECORD_SCHEMA('Order') }],
    },
    { prefixOf: () => hosts.prefix(0), keyOf: () => key('alpha') },
  );
  pub('stranger');
  startAgent(d, 'alpha');
  d.startPortal('orders', 'alpha');
  for (let slot = 0; slot < SLOTS; slot++) d.startRecorder('orders', slot, { server: 'alpha' });
  await waitAgent(d, 'alpha');
  await d.waitSlotsConnected('orders', SLOTS, 'alpha');
});

after(async () => {
  if (process.env.FLOTILLA_TEST_LOGS) process.stderr.write(d?.logs.join('') ?? '');
  useKey(null);
  await d?.stop();
  hosts?.remove();
});

test('a listed sender: its records flow, once each, in order per key; a capture of the link shows no payload', { skip }, async () => {
  // A raw AF_PACKET socket in alpha's namespace: every frame on alpha's link, as tcpdump would.
  const pcap = join(d.dir, 'link.raw');
  const capture = spawn(hosts.prefix(0)[0]!, [...hosts.prefix(0).slice(1), 'python3', '-c', CAPTURE, pcap], { stdio: 'ignore' });
  await waitFor('the capture to start', () => existsSync(`${pcap}.ready`));
  useKey(readKeyFile(key('web')));
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  const sent = sentRounds(40, 5, 'SECRETPAYLOAD');
  try {
    for (let round = 0; round < 5; round++) for (let k = 0; k < 40; k++) sender.send('orders', { key: `SECRETPAYLOAD${k}`, seq: round });
    await sender.flush();
    await waitFor('every record recorded', () => readRecorded(files()).length >= 200);
  } finally {
    await sender.close();
  }
  assertExactlyOnceInOrder(d.map, 'orders', files(), sent);
  capture.kill('SIGTERM');
  await new Promise((r) => capture.once('exit', r));
  const frames = readFileSync(pcap);
  assert.ok(frames.length > 200 * 20, `the capture holds the traffic (${frames.length} bytes)`);
  assert.equal(frames.includes('SECRETPAYLOAD'), false, 'a record key in clear on the wire');
});

test('a key not in the map: its records never arrive, and each refusal is counted', { skip }, async () => {
  const before = await refused('KEY_REFUSED');
  useKey(readKeyFile(key('stranger')));
  const sender = new Sender({ map: d.mapFile, lingerMs: 1 });
  try {
    sender.send('orders', { key: 'intruder', seq: 1 });
    await waitFor('the portal to refuse the key', async () => (await refused('KEY_REFUSED')) > before);
  } finally {
    await sender.close();
  }
  const recorded = files().map((f) => readFileSync(f, 'utf8')).join('');
  assert.equal(recorded.includes('intruder'), false);
});

test("alpha's public key with another secret: the handshake fails and is counted", { skip }, async () => {
  const before = await refused('HANDSHAKE_FAILED');
  const alpha = d.map.servers[0]!;
  const socket = new zmq.Dealer({ linger: 0, curveServerKey: alpha.publicKey!, curvePublicKey: alpha.publicKey!, curveSecretKey: generateKeyPair().secretKey });
  try {
    socket.connect(`tcp://${alpha.host}:${d.map.streams[0]!.port}`);
    await waitFor('the portal to count a failed handshake', async () => (await refused('HANDSHAKE_FAILED')) > before);
  } finally {
    socket.close();
  }
});

test('the agent port: an operator may pause and resume; an unlisted key may not even read status; a sender key may only cancel', { skip }, async () => {
  const target = remoteAgent(d.map.servers[0]!)!;
  const errorsOf = async () => (await agentStatus(localAgent(d.runDirOf('alpha')))).errors ?? {};
  const changes = [{ cmd: 'status' }, { cmd: 'pause' }, { cmd: 'resume' }, { cmd: 'release', stream: 'orders', from: 'alpha' }];
  const before = (await errorsOf()).KEY_REFUSED ?? 0;
  useKey(readKeyFile(key('stranger')));
  for (const request of changes) {
    await assert.rejects(requestJson(target.endpoint, request, 1500, target.publicKey), /timed out/, `stranger: ${request.cmd}`);
  }
  await waitFor("the agent to count the stranger's refusals", async () => ((await errorsOf()).KEY_REFUSED ?? 0) >= before + 4);
  // A listed sender passes the handshake, and then may only ping and cancel.
  const refusedBefore = (await errorsOf()).NOT_AUTHORIZED ?? 0;
  useKey(readKeyFile(key('web')));
  for (const request of changes) {
    const reply = (await requestJson(target.endpoint, request, 3000, target.publicKey)) as { code?: string; error?: string };
    assert.equal(reply.code, 'NOT_AUTHORIZED', `web: ${request.cmd}: ${JSON.stringify(reply)}`);
    assert.match(reply.error!, /sender web may not/);
  }
  assert.ok(((await errorsOf()).NOT_AUTHORIZED ?? 0) >= refusedBefore + 4);
  const cancel = (await requestJson(target.endpoint, { cmd: 'cancel', stream: 'orders', root: 'ab'.repeat(16), ttlMs: 60_000 }, 3000, target.publicKey)) as { code?: string };
  assert.equal(cancel.code, undefined, `web: cancel: ${JSON.stringify(cancel)}`);
  const pause = await portalctlAsync(['pause', '--cluster', '--map', d.mapFile, '--key', key('ops')]);
  assert.equal(pause.status, 0, pause.stderr);
  assert.match(pause.stdout, /alpha: paused orders/);
  assert.equal((await d.stats('orders', 'alpha')).paused, true);
  const resume = await portalctlAsync(['resume', '--cluster', '--map', d.mapFile, '--key', key('ops')]);
  assert.equal(resume.status, 0, resume.stderr);
  assert.equal((await d.stats('orders', 'alpha')).paused, false);
  const shown = await portalctlAsync(['status', '--cluster', '--map', d.mapFile, '--key', key('ops')]);
  assert.match(shown.stdout, /agent port: CURVE, \d+ of \d+ connections, [1-9]\d* keys refused/, shown.stdout + shown.stderr);
  const noKey = await portalctlAsync(['status', '--cluster', '--map', d.mapFile]);
  assert.equal(noKey.status, 1);
  assert.match(noKey.stderr, /KEY_REQUIRED/);
});

test('path-like stream names are refused with a clear code', { skip }, async () => {
  useKey(readKeyFile(key('ops')));
  const target = remoteAgent(d.map.servers[0]!)!;
  for (const request of [
    { cmd: 'resume', streams: ['../beta/orders'] },
    { cmd: 'release', stream: '../beta/orders', from: 'alpha' },
  ]) {
    const reply = (await requestJson(target.endpoint, request, 3000, target.publicKey)) as { code?: string; error?: string };
    assert.ok(reply.code === 'UNKNOWN_STREAM' || reply.code === 'BAD_REQUEST', `${request.cmd}: ${JSON.stringify(reply)}`);
    assert.match(reply.error ?? '', /stream/);
  }
});

test("over TCP: a server's key may release only its own buckets and reads status without paths or pids; a request without its proof is refused", { skip }, async () => {
  const target = remoteAgent(d.map.servers[0]!)!;
  const ask = (request: object) => requestJson(target.endpoint, request, 3000, target.publicKey) as Promise<{ code?: string; error?: string } & Record<string, unknown>>;
  useKey(readKeyFile(key('beta')));
  const others = await ask({ cmd: 'release', stream: 'orders', from: 'alpha' });
  assert.equal(others.code, 'NOT_AUTHORIZED', JSON.stringify(others));
  assert.match(others.error!, /only alpha .* or an operator/);
  const own = await ask({ cmd: 'release', stream: 'orders', from: 'beta' });
  // Past authorization, to the portal itself: it holds nothing for beta here.
  assert.equal(own.code, 'BAD_REQUEST', JSON.stringify(own));
  assert.match(own.error!, /holds nothing for beta/);
  const asServer = JSON.stringify(await ask({ cmd: 'status' }));
  assert.match(asServer, /"server":"alpha"/);
  for (const field of ['pid', 'runDir', 'mapFile']) assert.equal(asServer.includes(`"${field}"`), false, `${field} shown to a server key: ${asServer}`);
  useKey(readKeyFile(key('ops')));
  const asOperator = await ask({ cmd: 'status' });
  assert.equal(typeof asOperator.pid, 'number');
  // The operator's key on the socket, but no proof in the request: refused.
  const me = readKeyFile(key('ops'));
  const bare = new zmq.Request({ linger: 0, curveServerKey: target.publicKey!, curvePublicKey: me.publicKey, curveSecretKey: me.secretKey });
  try {
    bare.connect(target.endpoint);
    await bare.send(JSON.stringify({ cmd: 'pause' }));
    const [reply] = await bare.receive();
    assert.equal((JSON.parse(reply!.toString()) as { code: string }).code, 'NOT_AUTHORIZED');
  } finally {
    bare.close();
  }
  assert.equal((await d.stats('orders', 'alpha')).paused, false);
  const errors = (await agentStatus(localAgent(d.runDirOf('alpha')))).errors ?? {};
  assert.ok((errors.NOT_AUTHORIZED ?? 0) >= 2, JSON.stringify(errors));
});

/** Python: appends every frame seen on this namespace's links to argv[1] until SIGTERM. */
const CAPTURE = `
import signal, socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.settimeout(0.1)
out = open(sys.argv[1], 'wb')
open(sys.argv[1] + '.ready', 'w').close()
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
while not stop:
    try:
        out.write(s.recv(65536))
    except (socket.timeout, InterruptedError):
        pass
out.close()
`;
