// The primitives, the envelope and the frames of dsn_client.js against every shared
// vector (../shared/vectors beside the repository): NIST, Wycheproof, RFCs, XKCP, and
// the project's own protocol_v1.json, byte for byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { DSNError, _internals } from '../dsn_client.js';

const {
  SHA256, HmacSha256Key, Shake256, sha256, hmacSha256, hmacSha256Async, hkdf, hkdfExtract, hkdfExpand, shake256,
  seal, sealSync, open, openSync, parseToken, deriveTrafficKeys, buildRequestFrame, openResponseFrame,
  openRequestFrame, buildResponseFrame, randomBytes,
} = _internals;

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const vectorsDir = path.resolve(repoRoot, '..', 'shared', 'vectors');
if (!existsSync(path.join(vectorsDir, 'protocol_v1.json'))) {
  throw new Error(`the shared test vectors are missing: expected them in ${vectorsDir}`);
}
const load = (name) => JSON.parse(readFileSync(path.join(vectorsDir, name), 'utf8'));

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const bytes = (h) => new Uint8Array(Buffer.from(h, 'hex'));
const text = (s) => new TextEncoder().encode(s);

function message(c) {
  const unit = bytes(c.input);
  if (!c.repeat) return unit;
  const out = new Uint8Array(unit.length * c.repeat);
  for (let i = 0; i < c.repeat; i++) out.set(unit, i * unit.length);
  return out;
}

test('SHA-256: NIST CAVP and FIPS 180 examples (sha256.json), one shot and in odd pieces', () => {
  const { cases } = load('sha256.json');
  assert.equal(cases.length, 73);
  for (const c of cases) {
    const m = message(c);
    assert.equal(hex(sha256(m)), c.output, c.comment);
    const h = new SHA256();
    for (let i = 0; i < m.length; i += 63) h.update(m.subarray(i, i + 63));
    assert.equal(hex(h.digest()), c.output, `${c.comment} (63-byte pieces)`);
  }
});

function checkHmacCases(cases) {
  let valid = 0;
  let invalid = 0;
  for (const c of cases) {
    const mac = hmacSha256(bytes(c.key), bytes(c.msg));
    const tag = mac.subarray(0, c.tagSize / 8);
    if (c.result === 'valid') {
      assert.equal(hex(tag), c.tag, `tcId ${c.tcId}: ${c.comment}`);
      valid++;
    } else {
      assert.notEqual(hex(tag), c.tag, `tcId ${c.tcId} must not verify: ${c.comment}`);
      invalid++;
    }
  }
  return { valid, invalid };
}

test('HMAC-SHA256: Wycheproof, truncated tags, invalid tags never verify (hmac_sha256.json)', () => {
  const { cases } = load('hmac_sha256.json');
  assert.deepEqual(checkHmacCases(cases), { valid: 66, invalid: 108 });
});

test('HMAC-SHA256: RFC 4231 test cases 1-7 (hmac_sha256_rfc4231.json)', () => {
  const { cases } = load('hmac_sha256_rfc4231.json');
  assert.deepEqual(checkHmacCases(cases), { valid: 7, invalid: 0 });
});

test('HMAC-SHA256: crypto.subtle and the JS fallback agree on every vector', async () => {
  const cases = [...load('hmac_sha256.json').cases, ...load('hmac_sha256_rfc4231.json').cases];
  for (const c of cases) {
    const key = bytes(c.key);
    const msg = bytes(c.msg);
    assert.equal(hex(await hmacSha256Async(key, msg)), hex(hmacSha256(key, msg)), `tcId ${c.tcId}`);
  }
});

test('HMAC-SHA256: a key whose pads are kept agrees with one made per call and with node:crypto', () => {
  // Random keys (empty, short, one block, longer than a block) and messages around the
  // block boundaries, each key used for many messages in a row, in one part and in pieces.
  for (const keyLength of [0, 1, 31, 32, 63, 64, 65, 100, 200]) {
    const key = randomBytes(keyLength);
    const kept = new HmacSha256Key(key);
    for (const length of [0, 1, 32, 55, 56, 63, 64, 65, 119, 120, 128, 215, 1000]) {
      const msg = randomBytes(length);
      const expected = createHmac('sha256', key).update(msg).digest('hex');
      const cut = length >> 1;
      assert.equal(hex(kept.mac([msg])), expected, `key ${keyLength} B, msg ${length} B`);
      assert.equal(hex(kept.mac([msg.subarray(0, cut), new Uint8Array(0), msg.subarray(cut)])), expected);
      assert.equal(hex(hmacSha256(key, msg)), expected);
      assert.equal(hex(sha256(msg)), createHash('sha256').update(msg).digest('hex'), `sha256 of ${length} B`);
    }
  }
});

test('HMAC-SHA256: a SHA256 copy goes on independently of its original', () => {
  const prefix = randomBytes(70);
  const a = new SHA256().update(prefix);
  const b = a.copy();
  const tail = randomBytes(40);
  assert.equal(hex(b.update(tail).digest()), hex(sha256(new Uint8Array([...prefix, ...tail]))));
  assert.equal(hex(a.digest()), hex(sha256(prefix)));
});

test('envelope: one key sealing and opening many messages, JS and crypto.subtle agree', async () => {
  const key = randomBytes(64);
  const aad = text('dsn-sync/v1 res\n/sync/0123456789abcdef');
  for (let i = 0; i < 50; i++) {
    const plaintext = randomBytes(i * 7);
    const nonce = randomBytes(16);
    const blob = sealSync(key, aad, plaintext, nonce);
    assert.equal(hex(await seal(key, aad, plaintext, nonce)), hex(blob));
    assert.equal(hex(openSync(key, aad, blob)), hex(plaintext));
    blob[blob.length - 1 - (i % 32)] ^= 1;
    assert.equal(openSync(key, aad, blob), null);
    assert.equal(await open(key, aad, blob), null);
  }
});

test('HKDF-SHA256: Wycheproof, oversize requests refused (hkdf_sha256.json)', () => {
  const { cases } = load('hkdf_sha256.json');
  let refused = 0;
  for (const c of cases) {
    if (c.result === 'valid') {
      assert.equal(hex(hkdf(bytes(c.ikm), bytes(c.salt), bytes(c.info), c.size)), c.okm, `tcId ${c.tcId}: ${c.comment}`);
    } else {
      assert.throws(() => hkdf(bytes(c.ikm), bytes(c.salt), bytes(c.info), c.size), RangeError, `tcId ${c.tcId}`);
      refused++;
    }
  }
  assert.equal(cases.length, 86);
  assert.equal(refused, 3);
});

test('HKDF-SHA256: RFC 5869 A.1-A.3 with PRK (hkdf_sha256_rfc5869.json)', () => {
  const { cases } = load('hkdf_sha256_rfc5869.json');
  assert.equal(cases.length, 3);
  for (const c of cases) {
    const prk = hkdfExtract(bytes(c.salt), bytes(c.ikm));
    assert.equal(hex(prk), c.prk, c.tcId);
    assert.equal(hex(hkdfExpand(prk, bytes(c.info), c.size)), c.okm, c.tcId);
  }
});

test('SHAKE256: FIPS 202 examples, XKCP KATs, every prefix length (shake256.json)', () => {
  const { cases } = load('shake256.json');
  assert.equal(cases.length, 26);
  for (const c of cases) {
    const m = message(c);
    assert.equal(hex(shake256(m, c.outputLen)), c.output, c.comment);
    for (const k of [0, 1, 32, 135, 136, 137, 272, 273, c.outputLen]) {
      if (k > c.outputLen) continue;
      assert.equal(hex(shake256(m, k)), c.output.slice(0, 2 * k), `${c.comment}, first ${k} bytes`);
    }
    // Absorbed in uneven pieces, squeezed in uneven pieces: the same stream.
    const x = new Shake256();
    for (let i = 0; i < m.length; i += 7) x.update(m.subarray(i, i + 7));
    let out = '';
    for (let taken = 0, step = 1; taken < c.outputLen; taken += step, step += 13) {
      out += hex(x.squeeze(Math.min(step, c.outputLen - taken)));
    }
    assert.equal(out, c.output, `${c.comment} (pieces)`);
  }
});

const protocol = load('protocol_v1.json');

test('protocol_v1: server derivations (PRK, instance, token key)', () => {
  const { server } = protocol;
  const prk = hkdfExtract(text('dsn-sync/v1'), bytes(server.secret));
  assert.equal(hex(prk), server.prk);
  assert.equal(hex(hkdfExpand(prk, text('instance'), 8)), server.instance);
  assert.equal(hex(hkdfExpand(prk, text('token'), 64)), server.token_key);
});

test('protocol_v1: token, kid, token secret, traffic keys', () => {
  const { server, token } = protocol;
  const kid = _internals.b64uEncode(sealSync(bytes(server.token_key), text('dsn-sync/v1 token'), text(token.claims_json), bytes(token.seal_nonce)));
  assert.equal(kid, token.kid);
  const prk = bytes(server.prk);
  const tokenSecret = hkdfExpand(prk, text(`token-secret ${kid}`), 32);
  assert.equal(hex(tokenSecret), token.token_secret);
  assert.equal(`dsn1.${kid}.${_internals.b64uEncode(tokenSecret)}`, token.token);
  const parsed = parseToken(token.token);
  assert.equal(parsed.kid, token.kid);
  assert.equal(hex(parsed.tokenSecret), token.token_secret);
  const keys = deriveTrafficKeys(parsed.tokenSecret);
  assert.equal(hex(keys.c2s), token.c2s);
  assert.equal(hex(keys.s2c), token.s2c);
});

test('protocol_v1: seals with fixed nonces, both HMAC paths, and they open', async () => {
  assert.equal(protocol.seal.length, 4);
  for (const c of protocol.seal) {
    const key = bytes(c.key);
    const aad = bytes(c.aad);
    const plaintext = bytes(c.plaintext);
    const sealed = sealSync(key, aad, plaintext, bytes(c.nonce));
    assert.equal(hex(sealed), c.sealed);
    assert.equal(hex(await seal(key, aad, plaintext, bytes(c.nonce))), c.sealed);
    const stream = shake256(new Uint8Array([...text('dsn-sync/v1 stream'), ...key.subarray(0, 32), ...bytes(c.nonce)]), plaintext.length);
    assert.equal(hex(stream).slice(0, c.keystream_prefix.length), c.keystream_prefix);
    assert.equal(hex(openSync(key, aad, sealed)), c.plaintext);
    assert.equal(hex(await open(key, aad, sealed)), c.plaintext);
  }
});

test('protocol_v1: request frame byte for byte, and it opens on the server side', async () => {
  const { token, request } = protocol;
  const { c2s } = deriveTrafficKeys(bytes(token.token_secret));
  const { frame, nonce } = await buildRequestFrame(c2s, token.kid, request.path, request.body_json, bytes(request.nonce));
  assert.equal(hex(frame), request.frame);
  assert.equal(hex(nonce), request.nonce);
  const opened = await openRequestFrame(c2s, request.path, bytes(request.frame));
  assert.deepEqual({ ...opened, nonce: hex(opened.nonce) }, { kid: token.kid, nonce: request.nonce, json: request.body_json });
});

test('protocol_v1: response frame byte for byte, and the client opens it', async () => {
  const { token, response } = protocol;
  const { s2c } = deriveTrafficKeys(bytes(token.token_secret));
  const frame = await buildResponseFrame(s2c, bytes(response.request_nonce), response.body_json, bytes(response.nonce));
  assert.equal(hex(frame), response.frame);
  assert.equal(await openResponseFrame(s2c, bytes(response.request_nonce), bytes(response.frame)), response.body_json);
});

test('protocol_v1: must_fail frames do not open', async () => {
  const { token } = protocol;
  const { c2s } = deriveTrafficKeys(bytes(token.token_secret));
  assert.equal(protocol.must_fail.length, 2);
  for (const c of protocol.must_fail) {
    assert.equal(await openRequestFrame(c2s, c.path, bytes(c.frame)), null, c.why);
  }
});

test('envelope: every single-bit flip, truncation, wrong aad or wrong nonce is refused', async () => {
  const key = randomBytes(64);
  const aad = text('dsn-sync/v1 res\n0123456789abcdef');
  const sealed = sealSync(key, aad, text('{"ok":true}'));
  for (let i = 0; i < sealed.length * 8; i += 5) {
    const tampered = sealed.slice();
    tampered[i >> 3] ^= 1 << (i & 7);
    assert.equal(openSync(key, aad, tampered), null, `bit ${i}`);
    assert.equal(await open(key, aad, tampered), null, `bit ${i}`);
  }
  assert.equal(openSync(key, aad, sealed.subarray(0, 47)), null);
  assert.equal(await open(key, aad, sealed.subarray(0, sealed.length - 1)), null);
  assert.equal(openSync(key, text('other'), sealed), null);
  const { s2c } = deriveTrafficKeys(randomBytes(32));
  const frame = await buildResponseFrame(s2c, randomBytes(16), '{}');
  assert.equal(await openResponseFrame(s2c, randomBytes(16), frame), null);
  assert.equal(await openResponseFrame(s2c, new Uint8Array(16), Uint8Array.of(2, ...frame.subarray(1))), null);
});

test('envelope: a 1 MiB round trip, and seal output is fresh every time', async () => {
  const key = randomBytes(64);
  const data = randomBytes(1 << 20);
  const sealed = await seal(key, text('a'), data);
  assert.equal(sealed.length, data.length + 48);
  assert.deepEqual(await open(key, text('a'), sealed), data);
  assert.deepEqual(openSync(key, text('a'), sealed), data);
  assert.notDeepEqual(await seal(key, text('a'), data), sealed);
});

test('randomBytes: more than one 65,536-byte chunk, and a clear error without a CSPRNG', () => {
  const r = randomBytes(200000);
  assert.equal(r.length, 200000);
  assert.ok(r.subarray(150000).some((b) => b !== 0));
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'crypto');
  Object.defineProperty(globalThis, 'crypto', { value: undefined, configurable: true });
  try {
    assert.throws(() => randomBytes(16), (e) => e instanceof DSNError && e.code === 'no_random' && /getRandomValues/.test(e.message));
  } finally {
    Object.defineProperty(globalThis, 'crypto', saved);
  }
});

test('tokens: malformed tokens are DSNError bad_token; base64url is strict', () => {
  for (const bad of ['', 'dsn1', 'dsn2.abc.' + 'A'.repeat(43), 'dsn1..' + 'A'.repeat(43), 'dsn1.abc.short', 'dsn1.a+c.' + 'A'.repeat(43), null, 42]) {
    assert.throws(() => parseToken(bad), (e) => e instanceof DSNError && e.code === 'bad_token', String(bad));
  }
  assert.throws(() => _internals.b64uDecode('ab=c'), TypeError);
  for (let n = 0; n < 40; n++) {
    const b = randomBytes(n);
    const s = _internals.b64uEncode(b);
    assert.equal(s, Buffer.from(b).toString('base64url'));
    assert.deepEqual(_internals.b64uDecode(s), b);
  }
});
