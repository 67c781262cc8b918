/**
 * A component's decoding of a delivery: a body that is not well-formed envelopes (it should never
 * come from a portal, but a bug once sent uninitialised memory) is reported and skipped, never
 * read past its end or looped over.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import avro from 'avsc';
import { decodeBody, EnvelopeWriter } from '../src/protocol/envelope';

const type = avro.Type.forSchema({ type: 'record', name: 'R', fields: [{ name: 'key', type: 'string' }, { name: 'seq', type: 'long' }] });

test('decodeBody reports a broken body and returns at once, whatever its bytes', () => {
  const w = new EnvelopeWriter();
  for (let i = 0; i < 5; i++) w.appendEncoded(`k${i}`, Buffer.alloc(16), 0, ['a/b/0'], type.toBuffer({ key: `k${i}`, seq: i }));
  const good = w.take();
  assert.equal(decodeBody(good, type).length, 5);
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 255;
  for (let n = 0; n < 2000; n++) {
    const bad = Buffer.from(good);
    // Flip a few bytes, or replace everything after some point with noise.
    if (n % 2 === 0) for (let k = 0; k < 3; k++) bad[rand() % bad.length] = rand();
    else for (let i = rand() % bad.length; i < bad.length; i++) bad[i] = rand();
    const problems: string[] = [];
    const out = decodeBody(bad, type, (_i, why) => problems.push(why));
    assert.ok(out.length <= 5);
    if (out.length < 5) assert.ok(problems.length > 0, 'a record left out is reported');
  }
});
