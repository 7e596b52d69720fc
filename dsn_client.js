/*
 * dsn_client.js: the browser and Node client of dsn-sync, speaking wire protocol
 * version 1.1, and 1.0 with an older server (PROTOCOL.md in the dsn-sync repository; its known answers are in
 * vectors/protocol_v1.json).
 *
 *     import { connectDSN } from './dsn_client.js';
 *     const client = connectDSN('http://127.0.0.1:3000/sync/<instance>', token);
 *     client.onDataChange('users', (all) => render(all));
 *     await client.create('users', 'user_004', { name: 'Ada' });
 *
 * It keeps a mirror of the tables the token may read, fed by a long-poll loop (with
 * connectDSN(url, token, { stream: true }), by streamed pulls: one open answer carries a
 * sealed message per change until its `wait` runs out; see the option), and an
 * outbox of writes that are applied to the mirror at once (optimistically) and sent in
 * order, each with a stable mutation id, until the backend accepts or refuses them.
 * In a browser the mirror and the outbox live in IndexedDB (one database per server
 * instance, one object store per table), so reads answer at once after a reload, even
 * with the server down, and writes made offline are sent exactly once when it returns.
 * On a first visit, getAll and get wait for the first sync (options.firstSyncTimeout).
 * Many tabs of one app share one connection: one tab leads (Web Locks), the others
 * follow it over a BroadcastChannel.
 *
 * With subscriptions (client.subscribe(name, params), the proposed PROTOCOL section 7)
 * the mirror holds only the union of the rows the app's subscriptions select, not whole
 * tables: a new subscription loads its rows without touching the rest, closing one drops
 * the rows no other holds, and the set and each row's membership are stored with the
 * mirror, so they survive reloads and offline periods.
 * Where IndexedDB is missing (Node), the mirror is kept in memory. Where it exists but
 * refuses to open (a sandboxed or third-party frame, private browsing, a full disk),
 * the mirror is kept in memory too, and onStatus says so once, with
 * {state, code: 'no_persistence', message}: everything works, nothing survives a reload.
 *
 * Where the client stands, for progress bars and tools such as the inspector:
 *
 *     client.cursor   {epoch, seq, sv}: how far the mirror has followed the server's
 *                     change feed; null until it has synced once (with IndexedDB, a
 *                     reload finds the stored cursor as soon as the mirror is loaded)
 *     client.schema   {table: {key, fields}} as the server last described it; {} before
 *     client.onSync((progress) => ...)   progress = {cursor, pending}, pending = the
 *                     number of queued writes; called once soon, then after every pull
 *                     answer applied, every write answered and every write queued;
 *                     returns off()
 *
 * Both getters are read-only: they answer frozen objects, which the client replaces
 * rather than changes, so one kept from earlier still says what it said then.
 *
 * Runs in browsers (as a module, also from another origin: every request is a CORS
 * "simple request") and in Node 19+ (Node 18 with --experimental-global-webcrypto,
 * for crypto.getRandomValues). One file, no dependencies, no imports.
 *
 * Layers, low level first, like tweetnacl: bytes and randomness; the primitives, written
 * from their standards so that the client also works where crypto.subtle is absent
 * (a page on plain http:// over a LAN): SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104),
 * HKDF-SHA256 (RFC 5869), Keccak-f[1600] and SHAKE256 (FIPS 202); the envelope and
 * frames (PROTOCOL.md sections 1-3); the mirror stores (memory, IndexedDB); the session
 * (one token's requests: keys, endpoint, clock, hello, retries, streams); the client
 * (the mirror, the outbox, one retry loop each for the feed and the sender, and the
 * election of one connected tab among many).
 */

/** Every refusal and failure this module reports; `.code` is the protocol's error code
 * (`rejected`, `invalid`, `exists`, ...) or one of the client's own (`unauthorized`,
 * `closed`, `bad_token`, `no_random`, `bad_response`, `unsupported`). A subscription's
 * refusal also carries `.sub`, its id. */
export class DSNError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'DSNError';
    this.code = code;
  }
}

/* ============================================================================
 * Bytes and randomness
 * ========================================================================== */

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

function utf8(text) {
  return textEncoder.encode(text);
}

function concatBytes(...parts) {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function u16(n) {
  return Uint8Array.of(n >>> 8, n & 255);
}

function u32(n) {
  return Uint8Array.of(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);
}

function toHex(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i++) out += (bytes[i] < 16 ? '0' : '') + bytes[i].toString(16);
  return out;
}

function fromHex(hex) {
  if (hex.length % 2 || /[^0-9a-fA-F]/.test(hex)) throw new TypeError(`not hex: ${JSON.stringify(hex.slice(0, 40))}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

const B64U_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const B64U_VALUES = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64U_VALUES[B64U_ALPHABET.charCodeAt(i)] = i;

/** base64url without padding (RFC 4648 section 5), as the protocol writes kids and mids. */
function b64uEncode(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((bytes.length - i) * 8) / 6));
    for (let c = 0; c < chars; c++) out += B64U_ALPHABET[(n >>> (18 - 6 * c)) & 63];
  }
  return out;
}

/** Strict: any character outside the alphabet, or a length that no byte string has,
 * throws a TypeError. */
function b64uDecode(text) {
  if (text.length % 4 === 1) throw new TypeError('not base64url: impossible length');
  const out = new Uint8Array(Math.floor((text.length * 6) / 8));
  let bits = 0;
  let value = 0;
  let o = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    const v = code < 128 ? B64U_VALUES[code] : -1;
    if (v < 0) throw new TypeError(`not base64url: ${JSON.stringify(text[i])} at ${i}`);
    value = ((value << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (value >>> bits) & 255;
    }
  }
  return out;
}

/** Chunks of 65,536 bytes: the Web Crypto API refuses more in one call. */
const RANDOM_CHUNK = 65536;

/** `n` bytes from the platform's CSPRNG; throws DSNError('no_random') without one,
 * because a nonce from anything weaker would break the envelope. */
function randomBytes(n) {
  const cryptoObject = globalThis.crypto;
  if (!cryptoObject || typeof cryptoObject.getRandomValues !== 'function') {
    throw new DSNError('no_random', 'dsn-sync needs crypto.getRandomValues for its nonces, and this platform has none ' +
      '(Node 18: run with --experimental-global-webcrypto, or set globalThis.crypto = require("node:crypto").webcrypto)');
  }
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += RANDOM_CHUNK) cryptoObject.getRandomValues(out.subarray(i, Math.min(n, i + RANDOM_CHUNK)));
  return out;
}

/** A random id for a new record's key: 22 URL-safe characters (base64url of 16 bytes
 * from crypto.getRandomValues, 128 bits), so that clients can make keys offline without
 * asking the server. Works where crypto.randomUUID is missing (a page on plain http://
 * over a LAN is not a secure context). Throws DSNError('no_random') without a CSPRNG. */
export function newId() {
  return b64uEncode(randomBytes(16));
}

/* ============================================================================
 * SHA-256 (FIPS 180-4)
 * ========================================================================== */

// Section 4.2.2: the first 32 bits of the fractional parts of the cube roots of the
// first 64 primes.
const SHA256_K = Int32Array.of(
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2);

// Section 5.3.3: the first 32 bits of the fractional parts of the square roots of the
// first 8 primes.
const SHA256_H0 = Int32Array.of(
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19);

const SHA256_BLOCK = 64;

// The message schedule of section 6.2.2, shared by every SHA256: `compress` fills and
// reads it in one synchronous call, so no two uses overlap, and a hash costs no 256-byte
// allocation of its own (HMAC makes two per message).
const SHA256_W = new Int32Array(64);

/** Incremental SHA-256: `new SHA256().update(a).update(b).digest()`. */
class SHA256 {
  constructor() {
    this.H = SHA256_H0.slice();
    this.buffer = new Uint8Array(SHA256_BLOCK);
    this.buffered = 0;
    this.length = 0;
  }

  /** An independent SHA256 in the same state: what has been absorbed so far is absorbed
   * once, and each copy goes on from there (HMAC's keyed pads). */
  copy() {
    const twin = new SHA256();
    twin.H.set(this.H);
    twin.buffer.set(this.buffer);
    twin.buffered = this.buffered;
    twin.length = this.length;
    return twin;
  }

  update(data) {
    let i = 0;
    this.length += data.length;
    if (this.buffered) {
      const take = Math.min(SHA256_BLOCK - this.buffered, data.length);
      this.buffer.set(data.subarray(0, take), this.buffered);
      this.buffered += take;
      i = take;
      if (this.buffered < SHA256_BLOCK) return this;
      this.compress(this.buffer, 0);
      this.buffered = 0;
    }
    for (; i + SHA256_BLOCK <= data.length; i += SHA256_BLOCK) this.compress(data, i);
    this.buffer.set(data.subarray(i), 0);
    this.buffered = data.length - i;
    return this;
  }

  /** Section 5.1.1 padding (a 1 bit, zeros, the 64-bit message length in bits), written
   * into the block buffer, then the hash value H as 32 big-endian bytes. The object is
   * spent afterwards. */
  digest() {
    const buffer = this.buffer;
    let n = this.buffered;
    buffer[n++] = 0x80;
    if (n > SHA256_BLOCK - 8) {
      buffer.fill(0, n);
      this.compress(buffer, 0);
      n = 0;
    }
    buffer.fill(0, n, SHA256_BLOCK - 8);
    buffer.set(u32(Math.floor(this.length / 0x20000000)), SHA256_BLOCK - 8);
    buffer.set(u32((this.length << 3) >>> 0), SHA256_BLOCK - 4);
    this.compress(buffer, 0);
    const out = new Uint8Array(32);
    for (let t = 0; t < 8; t++) {
      const word = this.H[t];
      out[4 * t] = word >>> 24; out[4 * t + 1] = word >>> 16; out[4 * t + 2] = word >>> 8; out[4 * t + 3] = word;
    }
    return out;
  }

  /** Section 6.2.2: one 64-byte block at `offset` of `bytes`. */
  compress(bytes, offset) {
    const W = SHA256_W;
    const H = this.H;
    for (let t = 0; t < 16; t++) {
      const j = offset + 4 * t;
      W[t] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
    }
    for (let t = 16; t < 64; t++) {
      const w15 = W[t - 15];
      const w2 = W[t - 2];
      const sigma0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
      const sigma1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
      W[t] = (sigma1 + W[t - 7] + sigma0 + W[t - 16]) | 0;
    }
    let a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (let t = 0; t < 64; t++) {
      const Sigma1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const Ch = (e & f) ^ (~e & g);
      const T1 = (h + Sigma1 + Ch + SHA256_K[t] + W[t]) | 0;
      const Sigma0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const Maj = (a & b) ^ (a & c) ^ (b & c);
      const T2 = (Sigma0 + Maj) | 0;
      h = g; g = f; f = e; e = (d + T1) | 0;
      d = c; c = b; b = a; a = (T1 + T2) | 0;
    }
    H[0] = (H[0] + a) | 0; H[1] = (H[1] + b) | 0; H[2] = (H[2] + c) | 0; H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
  }
}

function sha256(data) {
  return new SHA256().update(data).digest();
}

/* ============================================================================
 * HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869)
 * ========================================================================== */

/** HMAC-SHA256 under one key, its pads absorbed once. RFC 2104 section 4 suggests it:
 * the compression function's results on the blocks K ^ ipad and K ^ opad can be kept
 * with the key, and each message then starts from them: two of the seven compressions
 * of a 215-byte frame's tag, and the pads' allocations. Measured in Node 20, the HMAC of
 * a 225-byte MAC input went from 6.0 to 2.0 us (3.1 us with the pads made per call: the
 * rest of the gain is `digest` and `SHA256_W` allocating nothing per block), and openSync
 * of a 215-byte frame from 10.5 to 6.6 us. Keep one per key that is used again; the
 * envelope does (`macStateOf`). */
class HmacSha256Key {
  constructor(key) {
    const block = new Uint8Array(SHA256_BLOCK);
    block.set(key.length > SHA256_BLOCK ? sha256(key) : key);
    for (let i = 0; i < SHA256_BLOCK; i++) block[i] ^= 0x36;
    this.inner = new SHA256().update(block);
    for (let i = 0; i < SHA256_BLOCK; i++) block[i] ^= 0x36 ^ 0x5c;
    this.outer = new SHA256().update(block);
    block.fill(0);
  }

  /** HMAC(K, text) = H((K ^ opad) || H((K ^ ipad) || text)), where `text` is the
   * concatenation of `parts` (hashed in place, never copied). */
  mac(parts) {
    const inner = this.inner.copy();
    for (const part of parts) inner.update(part);
    return this.outer.copy().update(inner.digest()).digest();
  }
}

/** HMAC-SHA256 of the concatenation of `parts` under `key`, synchronous, in JS. Keys
 * used once (HKDF's) go through here; the envelope's keep their `HmacSha256Key`. */
function hmacSha256(key, ...parts) {
  return new HmacSha256Key(key).mac(parts);
}

function subtleCrypto() {
  // Absent outside secure contexts: a page on plain http:// from another host than
  // localhost has globalThis.crypto but no crypto.subtle.
  return globalThis.crypto?.subtle;
}

const subtleKeys = new WeakMap();

/** The CryptoKey for `macKey`, imported once per key object. */
function subtleHmacKey(subtle, macKey) {
  let key = subtleKeys.get(macKey);
  if (!key) {
    key = subtle.importKey('raw', macKey, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
    subtleKeys.set(macKey, key);
  }
  return key;
}

/** HMAC-SHA256 through crypto.subtle where it exists (native code, several times the
 * speed of the JS one on large messages), else `hmacSha256`. Resolves to 32 bytes. */
async function hmacSha256Async(key, data) {
  const subtle = subtleCrypto();
  // Web Crypto refuses an empty HMAC key; RFC 2104 allows it.
  if (!subtle || key.length === 0) return hmacSha256(key, data);
  return new Uint8Array(await subtle.sign('HMAC', await subtleHmacKey(subtle, key), data));
}

/** Compares in time that depends only on the lengths, never on where bytes differ. */
function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a[i] ^ b[i];
  return difference === 0;
}

const SHA256_LENGTH = 32;

/** RFC 5869 section 2.2: PRK = HMAC-Hash(salt, IKM); an empty salt stands for HashLen
 * zero bytes (the same key to HMAC). */
function hkdfExtract(salt, ikm) {
  return hmacSha256(salt.length ? salt : new Uint8Array(SHA256_LENGTH), ikm);
}

/** RFC 5869 section 2.3: T(i) = HMAC-Hash(PRK, T(i-1) || info || i), OKM = the first
 * `length` bytes of T(1) || T(2) || ...; at most 255 * HashLen bytes (RangeError). */
function hkdfExpand(prk, info, length) {
  if (!Number.isInteger(length) || length < 0 || length > 255 * SHA256_LENGTH) {
    throw new RangeError(`HKDF-SHA256 output must be 0..${255 * SHA256_LENGTH} bytes, not ${length}`);
  }
  const okm = new Uint8Array(length);
  let T = new Uint8Array(0);
  for (let i = 1, offset = 0; offset < length; i++, offset += SHA256_LENGTH) {
    T = hmacSha256(prk, T, info, Uint8Array.of(i));
    okm.set(T.subarray(0, Math.min(SHA256_LENGTH, length - offset)), offset);
  }
  return okm;
}

function hkdf(ikm, salt, info, length) {
  return hkdfExpand(hkdfExtract(salt, ikm), info, length);
}

/* ============================================================================
 * Keccak-f[1600] and SHAKE256 (FIPS 202)
 * ========================================================================== */

// The state is 25 lanes of 64 bits, lane (x, y) at index x + 5y, each kept as two
// 32-bit halves (JS has no fast 64-bit integers): low half at 2i, high half at 2i + 1.
// Bytes enter and leave the lanes little-endian (FIPS 202 section B.1).

// Round constants of ι from the rc(t) LFSR of FIPS 202 Algorithm 5: RC[ir] has bit
// 2^j - 1 set to rc(j + 7 ir), for j = 0..6. Kept as (low, high) pairs.
const KECCAK_RC = (() => {
  const rc = (t) => {
    if (t % 255 === 0) return 1;
    let R = 0x01; // bits R[0..7] of the algorithm; R[0] is the lowest bit
    for (let i = 1; i <= t % 255; i++) {
      R <<= 1;
      const R8 = (R >>> 8) & 1;
      R ^= R8 | (R8 << 4) | (R8 << 5) | (R8 << 6);
      R &= 0xff;
    }
    return R & 1;
  };
  const constants = new Int32Array(48);
  for (let ir = 0; ir < 24; ir++) {
    for (let j = 0; j <= 6; j++) {
      const bit = (1 << j) - 1;
      if (rc(j + 7 * ir)) constants[2 * ir + (bit >= 32 ? 1 : 0)] |= 1 << (bit % 32);
    }
  }
  return constants;
})();

// Keccak-f[1600] with its 25 lanes in 50 local variables and the steps of a round
// written out lane by lane. This is the hot path of the envelope (every byte sealed or
// opened goes through it), and V8 runs it several times faster this way than as a
// rolled loop over a typed array (measured in Node 20: 105 MB/s of SHAKE256 output
// against 27 MB/s for the same rounds rolled): the lanes stay in registers and every
// rotation distance is a constant. The rotation offsets r[x, y] are FIPS 202 Table 2; the code
// was generated from the rolled definition and is guarded by every SHAKE256 vector and
// by protocol_v1.json.
function keccakF1600(s) {
  let a00l = s[0], a00h = s[1], a01l = s[2], a01h = s[3], a02l = s[4], a02h = s[5], a03l = s[6], a03h = s[7], a04l = s[8], a04h = s[9];
  let a05l = s[10], a05h = s[11], a06l = s[12], a06h = s[13], a07l = s[14], a07h = s[15], a08l = s[16], a08h = s[17], a09l = s[18], a09h = s[19];
  let a10l = s[20], a10h = s[21], a11l = s[22], a11h = s[23], a12l = s[24], a12h = s[25], a13l = s[26], a13h = s[27], a14l = s[28], a14h = s[29];
  let a15l = s[30], a15h = s[31], a16l = s[32], a16h = s[33], a17l = s[34], a17h = s[35], a18l = s[36], a18h = s[37], a19l = s[38], a19h = s[39];
  let a20l = s[40], a20h = s[41], a21l = s[42], a21h = s[43], a22l = s[44], a22h = s[45], a23l = s[46], a23h = s[47], a24l = s[48], a24h = s[49];
  for (let i = 0; i < 48; i += 2) {
    // θ: C[x] = A[x,0] ^ ... ^ A[x,4]; D[x] = C[x-1] ^ ROT(C[x+1], 1).
    const c0l = a00l ^ a05l ^ a10l ^ a15l ^ a20l;
    const c0h = a00h ^ a05h ^ a10h ^ a15h ^ a20h;
    const c1l = a01l ^ a06l ^ a11l ^ a16l ^ a21l;
    const c1h = a01h ^ a06h ^ a11h ^ a16h ^ a21h;
    const c2l = a02l ^ a07l ^ a12l ^ a17l ^ a22l;
    const c2h = a02h ^ a07h ^ a12h ^ a17h ^ a22h;
    const c3l = a03l ^ a08l ^ a13l ^ a18l ^ a23l;
    const c3h = a03h ^ a08h ^ a13h ^ a18h ^ a23h;
    const c4l = a04l ^ a09l ^ a14l ^ a19l ^ a24l;
    const c4h = a04h ^ a09h ^ a14h ^ a19h ^ a24h;
    const d0l = c4l ^ (c1l << 1 | c1h >>> 31), d0h = c4h ^ (c1h << 1 | c1l >>> 31);
    const d1l = c0l ^ (c2l << 1 | c2h >>> 31), d1h = c0h ^ (c2h << 1 | c2l >>> 31);
    const d2l = c1l ^ (c3l << 1 | c3h >>> 31), d2h = c1h ^ (c3h << 1 | c3l >>> 31);
    const d3l = c2l ^ (c4l << 1 | c4h >>> 31), d3h = c2h ^ (c4h << 1 | c4l >>> 31);
    const d4l = c3l ^ (c0l << 1 | c0h >>> 31), d4h = c3h ^ (c0h << 1 | c0l >>> 31);
    // ρ and π, with θ's D folded in: B[y, 2x+3y] = ROT(A[x,y] ^ D[x], r[x,y]).
    let l, h;
    l = a00l ^ d0l; h = a00h ^ d0h;
    const b00l = l, b00h = h;  // r[0,0] = 0
    l = a01l ^ d1l; h = a01h ^ d1h;
    const b10l = l << 1 | h >>> 31, b10h = h << 1 | l >>> 31;  // r[1,0] = 1
    l = a02l ^ d2l; h = a02h ^ d2h;
    const b20l = h << 30 | l >>> 2, b20h = l << 30 | h >>> 2;  // r[2,0] = 62
    l = a03l ^ d3l; h = a03h ^ d3h;
    const b05l = l << 28 | h >>> 4, b05h = h << 28 | l >>> 4;  // r[3,0] = 28
    l = a04l ^ d4l; h = a04h ^ d4h;
    const b15l = l << 27 | h >>> 5, b15h = h << 27 | l >>> 5;  // r[4,0] = 27
    l = a05l ^ d0l; h = a05h ^ d0h;
    const b16l = h << 4 | l >>> 28, b16h = l << 4 | h >>> 28;  // r[0,1] = 36
    l = a06l ^ d1l; h = a06h ^ d1h;
    const b01l = h << 12 | l >>> 20, b01h = l << 12 | h >>> 20;  // r[1,1] = 44
    l = a07l ^ d2l; h = a07h ^ d2h;
    const b11l = l << 6 | h >>> 26, b11h = h << 6 | l >>> 26;  // r[2,1] = 6
    l = a08l ^ d3l; h = a08h ^ d3h;
    const b21l = h << 23 | l >>> 9, b21h = l << 23 | h >>> 9;  // r[3,1] = 55
    l = a09l ^ d4l; h = a09h ^ d4h;
    const b06l = l << 20 | h >>> 12, b06h = h << 20 | l >>> 12;  // r[4,1] = 20
    l = a10l ^ d0l; h = a10h ^ d0h;
    const b07l = l << 3 | h >>> 29, b07h = h << 3 | l >>> 29;  // r[0,2] = 3
    l = a11l ^ d1l; h = a11h ^ d1h;
    const b17l = l << 10 | h >>> 22, b17h = h << 10 | l >>> 22;  // r[1,2] = 10
    l = a12l ^ d2l; h = a12h ^ d2h;
    const b02l = h << 11 | l >>> 21, b02h = l << 11 | h >>> 21;  // r[2,2] = 43
    l = a13l ^ d3l; h = a13h ^ d3h;
    const b12l = l << 25 | h >>> 7, b12h = h << 25 | l >>> 7;  // r[3,2] = 25
    l = a14l ^ d4l; h = a14h ^ d4h;
    const b22l = h << 7 | l >>> 25, b22h = l << 7 | h >>> 25;  // r[4,2] = 39
    l = a15l ^ d0l; h = a15h ^ d0h;
    const b23l = h << 9 | l >>> 23, b23h = l << 9 | h >>> 23;  // r[0,3] = 41
    l = a16l ^ d1l; h = a16h ^ d1h;
    const b08l = h << 13 | l >>> 19, b08h = l << 13 | h >>> 19;  // r[1,3] = 45
    l = a17l ^ d2l; h = a17h ^ d2h;
    const b18l = l << 15 | h >>> 17, b18h = h << 15 | l >>> 17;  // r[2,3] = 15
    l = a18l ^ d3l; h = a18h ^ d3h;
    const b03l = l << 21 | h >>> 11, b03h = h << 21 | l >>> 11;  // r[3,3] = 21
    l = a19l ^ d4l; h = a19h ^ d4h;
    const b13l = l << 8 | h >>> 24, b13h = h << 8 | l >>> 24;  // r[4,3] = 8
    l = a20l ^ d0l; h = a20h ^ d0h;
    const b14l = l << 18 | h >>> 14, b14h = h << 18 | l >>> 14;  // r[0,4] = 18
    l = a21l ^ d1l; h = a21h ^ d1h;
    const b24l = l << 2 | h >>> 30, b24h = h << 2 | l >>> 30;  // r[1,4] = 2
    l = a22l ^ d2l; h = a22h ^ d2h;
    const b09l = h << 29 | l >>> 3, b09h = l << 29 | h >>> 3;  // r[2,4] = 61
    l = a23l ^ d3l; h = a23h ^ d3h;
    const b19l = h << 24 | l >>> 8, b19h = l << 24 | h >>> 8;  // r[3,4] = 56
    l = a24l ^ d4l; h = a24h ^ d4h;
    const b04l = l << 14 | h >>> 18, b04h = h << 14 | l >>> 18;  // r[4,4] = 14
    // χ: A[x,y] = B[x,y] ^ (~B[x+1,y] & B[x+2,y]).
    a00l = b00l ^ (~b01l & b02l); a00h = b00h ^ (~b01h & b02h);
    a01l = b01l ^ (~b02l & b03l); a01h = b01h ^ (~b02h & b03h);
    a02l = b02l ^ (~b03l & b04l); a02h = b02h ^ (~b03h & b04h);
    a03l = b03l ^ (~b04l & b00l); a03h = b03h ^ (~b04h & b00h);
    a04l = b04l ^ (~b00l & b01l); a04h = b04h ^ (~b00h & b01h);
    a05l = b05l ^ (~b06l & b07l); a05h = b05h ^ (~b06h & b07h);
    a06l = b06l ^ (~b07l & b08l); a06h = b06h ^ (~b07h & b08h);
    a07l = b07l ^ (~b08l & b09l); a07h = b07h ^ (~b08h & b09h);
    a08l = b08l ^ (~b09l & b05l); a08h = b08h ^ (~b09h & b05h);
    a09l = b09l ^ (~b05l & b06l); a09h = b09h ^ (~b05h & b06h);
    a10l = b10l ^ (~b11l & b12l); a10h = b10h ^ (~b11h & b12h);
    a11l = b11l ^ (~b12l & b13l); a11h = b11h ^ (~b12h & b13h);
    a12l = b12l ^ (~b13l & b14l); a12h = b12h ^ (~b13h & b14h);
    a13l = b13l ^ (~b14l & b10l); a13h = b13h ^ (~b14h & b10h);
    a14l = b14l ^ (~b10l & b11l); a14h = b14h ^ (~b10h & b11h);
    a15l = b15l ^ (~b16l & b17l); a15h = b15h ^ (~b16h & b17h);
    a16l = b16l ^ (~b17l & b18l); a16h = b16h ^ (~b17h & b18h);
    a17l = b17l ^ (~b18l & b19l); a17h = b17h ^ (~b18h & b19h);
    a18l = b18l ^ (~b19l & b15l); a18h = b18h ^ (~b19h & b15h);
    a19l = b19l ^ (~b15l & b16l); a19h = b19h ^ (~b15h & b16h);
    a20l = b20l ^ (~b21l & b22l); a20h = b20h ^ (~b21h & b22h);
    a21l = b21l ^ (~b22l & b23l); a21h = b21h ^ (~b22h & b23h);
    a22l = b22l ^ (~b23l & b24l); a22h = b22h ^ (~b23h & b24h);
    a23l = b23l ^ (~b24l & b20l); a23h = b23h ^ (~b24h & b20h);
    a24l = b24l ^ (~b20l & b21l); a24h = b24h ^ (~b20h & b21h);
    // ι
    a00l ^= KECCAK_RC[i]; a00h ^= KECCAK_RC[i + 1];
  }
  s[0] = a00l; s[1] = a00h; s[2] = a01l; s[3] = a01h; s[4] = a02l; s[5] = a02h; s[6] = a03l; s[7] = a03h; s[8] = a04l; s[9] = a04h;
  s[10] = a05l; s[11] = a05h; s[12] = a06l; s[13] = a06h; s[14] = a07l; s[15] = a07h; s[16] = a08l; s[17] = a08h; s[18] = a09l; s[19] = a09h;
  s[20] = a10l; s[21] = a10h; s[22] = a11l; s[23] = a11h; s[24] = a12l; s[25] = a12h; s[26] = a13l; s[27] = a13h; s[28] = a14l; s[29] = a14h;
  s[30] = a15l; s[31] = a15h; s[32] = a16l; s[33] = a16h; s[34] = a17l; s[35] = a17h; s[36] = a18l; s[37] = a18h; s[38] = a19l; s[39] = a19h;
  s[40] = a20l; s[41] = a20h; s[42] = a21l; s[43] = a21h; s[44] = a22l; s[45] = a22h; s[46] = a23l; s[47] = a23h; s[48] = a24l; s[49] = a24h;
}

/** The rate of SHAKE256 in bytes: 1600 - 2 * 256 bits. */
const SHAKE256_RATE = 136;

/** SHAKE256 as a sponge: `update()` absorbs, then `squeeze()`/`squeezeXor()` read the
 * output stream (after which nothing more can be absorbed). */
class Shake256 {
  constructor() {
    this.s = new Uint32Array(50);
    this.pos = 0;
    this.squeezing = false;
  }

  update(data) {
    if (this.squeezing) throw new Error('Shake256: update() after squeezing');
    const s = this.s;
    const n = data.length;
    let pos = this.pos;
    let i = 0;
    while (i < n) {
      if (pos === 0 && n - i >= SHAKE256_RATE) {
        for (let w = 0; w < SHAKE256_RATE / 4; w++, i += 4) {
          s[w] ^= data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
        }
        keccakF1600(s);
        continue;
      }
      s[pos >> 2] ^= data[i++] << ((pos & 3) << 3);
      if (++pos === SHAKE256_RATE) {
        keccakF1600(s);
        pos = 0;
      }
    }
    this.pos = pos;
    return this;
  }

  /** pad10*1 with SHAKE's domain suffix 1111 (FIPS 202 section 6.2: M || 1111, then
   * pad10*1), which together are the byte 0x1F here and 0x80 in the last byte. */
  finish() {
    const s = this.s;
    s[this.pos >> 2] ^= 0x1f << ((this.pos & 3) << 3);
    s[(SHAKE256_RATE - 1) >> 2] ^= 0x80 << (((SHAKE256_RATE - 1) & 3) << 3);
    keccakF1600(s);
    this.pos = 0;
    this.squeezing = true;
  }

  /** Writes `input[i] ^ stream[i]` into `output` (input may be null: the bare stream),
   * for i < output.length, and advances the stream. */
  squeezeXor(input, output) {
    if (!this.squeezing) this.finish();
    const s = this.s;
    const n = output.length;
    let pos = this.pos;
    let i = 0;
    while (i < n) {
      if (pos === SHAKE256_RATE) {
        keccakF1600(s);
        pos = 0;
      }
      if (pos === 0 && n - i >= SHAKE256_RATE) {
        // A whole block: word by word, the bytes of each lane half little-endian.
        for (let w = 0; w < SHAKE256_RATE / 4; w++, i += 4) {
          const v = s[w];
          if (input) {
            output[i] = input[i] ^ v;
            output[i + 1] = input[i + 1] ^ (v >>> 8);
            output[i + 2] = input[i + 2] ^ (v >>> 16);
            output[i + 3] = input[i + 3] ^ (v >>> 24);
          } else {
            output[i] = v;
            output[i + 1] = v >>> 8;
            output[i + 2] = v >>> 16;
            output[i + 3] = v >>> 24;
          }
        }
        pos = SHAKE256_RATE;
        continue;
      }
      const byte = s[pos >> 2] >>> ((pos & 3) << 3);
      output[i] = input ? input[i] ^ byte : byte;
      i++;
      pos++;
    }
    this.pos = pos;
    return output;
  }

  squeeze(length) {
    return this.squeezeXor(null, new Uint8Array(length));
  }
}

/** SHAKE256(data, d) of FIPS 202 with d = 8 * outputLength. */
function shake256(data, outputLength) {
  return new Shake256().update(data).squeeze(outputLength);
}

/* ============================================================================
 * The envelope (PROTOCOL.md section 1), tokens and traffic keys (section 2),
 * frames (section 3)
 * ========================================================================== */

const KEY_LENGTH = 64;
const NONCE_LENGTH = 16;
const TAG_LENGTH = 32;
const SEAL_OVERHEAD = NONCE_LENGTH + TAG_LENGTH;
const STREAM_LABEL = utf8('dsn-sync/v1 stream');
const REQUEST_LABEL = utf8('dsn-sync/v1 req\n');
const RESPONSE_LABEL = utf8('dsn-sync/v1 res\n');
const FRAME_VERSION = 0x01;

function checkBytes(name, value, length) {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array, not ${Object.prototype.toString.call(value)}`);
  if (length !== undefined && value.length !== length) throw new TypeError(`${name} must be ${length} bytes, not ${value.length}`);
}

/** ct = data XOR SHAKE256("dsn-sync/v1 stream" || enc || nonce). */
function keystreamXor(key, nonce, data) {
  return new Shake256().update(STREAM_LABEL).update(key.subarray(0, 32)).update(nonce)
    .squeezeXor(data, new Uint8Array(data.length));
}

function macParts(aad, nonce, ct) {
  return [u32(aad.length), aad, nonce, ct];
}

/** The mac half of a 64-byte key (`bytes`, a copy, whose CryptoKey is imported once)
 * and its `HmacSha256Key`, made once per key object: traffic keys are fixed per token
 * and never changed in place. A WeakMap, so that the states of keys no longer used go
 * with them, however many tokens come and go. */
const macStates = new WeakMap();
function macStateOf(key) {
  let state = macStates.get(key);
  if (!state) {
    const bytes = key.slice(32, 64);
    state = { bytes, hmac: new HmacSha256Key(bytes) };
    macStates.set(key, state);
  }
  return state;
}

/** seal(key, aad, plaintext) -> nonce || ct || tag, in JS alone. `nonce` is for known
 * answer tests; leave it out and 16 fresh random bytes are used. */
function sealSync(key, aad, plaintext, nonce = randomBytes(NONCE_LENGTH)) {
  checkBytes('key', key, KEY_LENGTH);
  checkBytes('nonce', nonce, NONCE_LENGTH);
  const ct = keystreamXor(key, nonce, plaintext);
  return concatBytes(nonce, ct, macStateOf(key).hmac.mac(macParts(aad, nonce, ct)));
}

/** As `sealSync`, with the HMAC from crypto.subtle where it exists. */
async function seal(key, aad, plaintext, nonce = randomBytes(NONCE_LENGTH)) {
  checkBytes('key', key, KEY_LENGTH);
  checkBytes('nonce', nonce, NONCE_LENGTH);
  const ct = keystreamXor(key, nonce, plaintext);
  const tag = await hmacSha256Async(macStateOf(key).bytes, concatBytes(...macParts(aad, nonce, ct)));
  return concatBytes(nonce, ct, tag);
}

/** open(key, aad, blob) -> plaintext, or null when the blob is short or its tag does not
 * match; the tag is checked (in constant time) before anything is decrypted. */
function openSync(key, aad, blob) {
  checkBytes('key', key, KEY_LENGTH);
  if (blob.length < SEAL_OVERHEAD) return null;
  const nonce = blob.subarray(0, NONCE_LENGTH);
  const ct = blob.subarray(NONCE_LENGTH, blob.length - TAG_LENGTH);
  const tag = blob.subarray(blob.length - TAG_LENGTH);
  if (!equalBytes(tag, macStateOf(key).hmac.mac(macParts(aad, nonce, ct)))) return null;
  return keystreamXor(key, nonce, ct);
}

/** As `openSync`, with the tag checked by crypto.subtle.verify where it exists. */
async function open(key, aad, blob) {
  checkBytes('key', key, KEY_LENGTH);
  const subtle = subtleCrypto();
  if (!subtle) return openSync(key, aad, blob);
  if (blob.length < SEAL_OVERHEAD) return null;
  const nonce = blob.subarray(0, NONCE_LENGTH);
  const ct = blob.subarray(NONCE_LENGTH, blob.length - TAG_LENGTH);
  const tag = blob.subarray(blob.length - TAG_LENGTH);
  const cryptoKey = await subtleHmacKey(subtle, macStateOf(key).bytes);
  if (!(await subtle.verify('HMAC', cryptoKey, tag, concatBytes(...macParts(aad, nonce, ct))))) return null;
  return keystreamXor(key, nonce, ct);
}

/** Splits "dsn1.<kid>.<b64u secret>" into the kid (sent in every frame) and the 32-byte
 * token secret (never sent). Whitespace around it (a newline copied from a terminal) is
 * dropped. Throws DSNError('bad_token'). */
function parseToken(token) {
  const parts = typeof token === 'string' ? token.trim().split('.') : [];
  let secret = null;
  if (parts.length === 3 && parts[0] === 'dsn1' && parts[1]) {
    try {
      secret = b64uDecode(parts[2]);
      b64uDecode(parts[1]);
    } catch {
      secret = null;
    }
  }
  if (!secret || secret.length !== 32) {
    throw new DSNError('bad_token', 'a dsn-sync token looks like "dsn1.<kid>.<secret>" (from DSNSync.issue_token() or get_token() on the server)');
  }
  return { kid: parts[1], tokenSecret: secret };
}

const TRAFFIC_SALT = utf8('dsn-sync/v1 traffic');

/** PRK_t = HKDF-Extract("dsn-sync/v1 traffic", token_secret); c2s and s2c are 64-byte
 * HKDF-Expand outputs with info "c2s" and "s2c". */
function deriveTrafficKeys(tokenSecret) {
  checkBytes('token secret', tokenSecret, 32);
  const prk = hkdfExtract(TRAFFIC_SALT, tokenSecret);
  return { c2s: hkdfExpand(prk, utf8('c2s'), KEY_LENGTH), s2c: hkdfExpand(prk, utf8('s2c'), KEY_LENGTH) };
}

/** request = 0x01 || u16(len(kid)) || kid || seal(c2s, "dsn-sync/v1 req\n" || path, json).
 * Returns the frame and the request nonce (which the response is bound to). */
async function buildRequestFrame(c2s, kid, path, requestJson, nonce = randomBytes(NONCE_LENGTH)) {
  const kidBytes = utf8(kid);
  const sealed = await seal(c2s, concatBytes(REQUEST_LABEL, utf8(path)), utf8(requestJson), nonce);
  return { frame: concatBytes(Uint8Array.of(FRAME_VERSION), u16(kidBytes.length), kidBytes, sealed), nonce };
}

/** response = 0x01 || seal(s2c, "dsn-sync/v1 res\n" || request_nonce, json). Returns the
 * JSON text, or null for anything that does not open (wrong version, short, forged, not
 * UTF-8). */
async function openResponseFrame(s2c, requestNonce, frame) {
  if (frame.length < 1 + SEAL_OVERHEAD || frame[0] !== FRAME_VERSION) return null;
  const plaintext = await open(s2c, concatBytes(RESPONSE_LABEL, requestNonce), frame.subarray(1));
  return plaintext && decodeUtf8OrNull(plaintext);
}

/** The Content-Type of a streamed pull's answer (README "Streamed pulls"): a chunked
 * body of messages, each u32be(len(frame)) || frame. */
const STREAM_TYPE = 'application/x-dsn-stream';

/** Message `index` (0, 1, 2, ...) of a streamed pull: frame = 0x01 ||
 * seal(s2c, "dsn-sync/v1 res\n" || request_nonce || u32be(index), json). The index in
 * the associated data means no message can be dropped, reordered or replayed unnoticed:
 * a gap makes the next message fail to open. Returns the JSON text, or null. */
async function openStreamMessage(s2c, requestNonce, index, frame) {
  if (frame.length < 1 + SEAL_OVERHEAD || frame[0] !== FRAME_VERSION) return null;
  const plaintext = await open(s2c, concatBytes(RESPONSE_LABEL, requestNonce, u32(index)), frame.subarray(1));
  return plaintext && decodeUtf8OrNull(plaintext);
}

/** The server's half: message `index` of a streamed pull with its length prefix,
 * u32be(len(frame)) || frame, as it goes down the body. */
async function buildStreamMessage(s2c, requestNonce, index, responseJson, nonce = randomBytes(NONCE_LENGTH)) {
  const sealed = await seal(s2c, concatBytes(RESPONSE_LABEL, requestNonce, u32(index)), utf8(responseJson), nonce);
  return concatBytes(u32(1 + sealed.length), Uint8Array.of(FRAME_VERSION), sealed);
}

/** An answer's body, at most `limit` bytes: nothing is authenticated before it is read, so
 * whoever answers at the URL (a wrong host, a proxy, a man in the middle of plain http)
 * could otherwise send an endless body into memory. Over it: refused, and the connection
 * dropped (the caller's abort). */
async function readCapped(response, limit, path) {
  const tooBig = (size) => new DSNError('bad_response', `an answer from ${path} of ${size} bytes, over maxAnswer (${limit}): ` +
    'not read (no dsn-sync server sends one; raise maxAnswer if your records are that large)');
  const said = Number(response.headers?.get?.('content-length'));
  if (said > limit) {
    response.body?.cancel?.().catch(() => {});
    throw tooBig(said);
  }
  const source = response.body;
  if (typeof source?.getReader !== 'function') {
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (bytes.length > limit) throw tooBig(bytes.length);
    return bytes;
  }
  const reader = source.getReader();
  const parts = [];
  let size = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      reader.cancel().catch(() => {});
      throw tooBig(`more than ${limit}`);
    }
    parts.push(value);
  }
  if (parts.length === 1) return parts[0];
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.byteLength;
  }
  return bytes;
}

/** Reassembles u32be-length-prefixed messages from a body read in pieces: the HTTP
 * chunks of a stream are not preserved by fetch, proxies or sockets, so a piece may hold
 * half a length prefix, several messages, or a message's last byte. */
class StreamSplitter {
  constructor(maxMessage = DEFAULTS.maxAnswer, path = 'the server') {
    this.maxMessage = maxMessage;  // a longer length prefix is refused before its bytes are held
    this.path = path;
    this.buffer = new Uint8Array(0);
    this.start = 0;
    this.end = 0;
  }

  /** Adds `bytes`; returns the frames now complete, in order (each a copy of its own). */
  push(bytes) {
    if (this.end + bytes.length > this.buffer.length) {
      const held = this.end - this.start;
      if (held + bytes.length > this.buffer.length) {
        const grown = new Uint8Array(Math.max(4096, 2 * (held + bytes.length)));
        grown.set(this.buffer.subarray(this.start, this.end), 0);
        this.buffer = grown;
      } else {
        this.buffer.copyWithin(0, this.start, this.end);
      }
      this.start = 0;
      this.end = held;
    }
    this.buffer.set(bytes, this.end);
    this.end += bytes.length;
    const frames = [];
    const b = this.buffer;
    while (this.end - this.start >= 4) {
      const s = this.start;
      const length = ((b[s] << 24) | (b[s + 1] << 16) | (b[s + 2] << 8) | b[s + 3]) >>> 0;
      if (length > this.maxMessage) {
        throw new DSNError('bad_response', `a streamed pull from ${this.path} announced a message of ${length} bytes, ` +
          `over maxAnswer (${this.maxMessage}): not read`);
      }
      if (this.end - s - 4 < length) break;
      frames.push(b.slice(s + 4, s + 4 + length));
      this.start = s + 4 + length;
    }
    if (this.start === this.end) this.start = this.end = 0;
    return frames;
  }

  /** Bytes held that do not make a whole message yet (left over at the end: truncated). */
  get pending() {
    return this.end - this.start;
  }
}

/** The server's half, for tests and tools that stand in for a server: opens a request
 * frame into {kid, nonce, json}, or null. */
async function openRequestFrame(c2s, path, frame) {
  if (frame.length < 3 || frame[0] !== FRAME_VERSION) return null;
  const kidLength = (frame[1] << 8) | frame[2];
  if (frame.length < 3 + kidLength + SEAL_OVERHEAD) return null;
  const kid = decodeUtf8OrNull(frame.subarray(3, 3 + kidLength));
  const blob = frame.subarray(3 + kidLength);
  const plaintext = await open(c2s, concatBytes(REQUEST_LABEL, utf8(path)), blob);
  const json = plaintext && decodeUtf8OrNull(plaintext);
  return json === null || kid === null ? null : { kid, nonce: blob.slice(0, NONCE_LENGTH), json };
}

/** The server's half: seals a response JSON text into a response frame. */
async function buildResponseFrame(s2c, requestNonce, responseJson, nonce = randomBytes(NONCE_LENGTH)) {
  const sealed = await seal(s2c, concatBytes(RESPONSE_LABEL, requestNonce), utf8(responseJson), nonce);
  return concatBytes(Uint8Array.of(FRAME_VERSION), sealed);
}

function decodeUtf8OrNull(bytes) {
  try {
    return textDecoder.decode(bytes);
  } catch {
    return null;
  }
}


/* ============================================================================
 * The mirror's storage: in memory, or in IndexedDB
 * ========================================================================== */

// Both keep the same three things: the cursor ({epoch, seq, sv, tables}: where the
// mirror stands in the server's change feed, and the schema), the records of every
// table (as the server last sent them, without the optimistic writes), and the outbox
// (the writes not yet answered, in order). The client keeps a copy of all of it in
// memory and tells the storage what changed; a storage only has to make each change
// durable and atomic.
//
// In subscription mode (PROTOCOL section 7, once the app has called subscribe()) there
// is a fourth thing, the subscription set ({id: {name, params}}, under `subs` in the
// meta store), the cursor also says which of them the mirror holds (`subs: [ids]`, as
// `since.subs` on the wire), and a row is stored as `[record, ids]`: the record and the
// ids of the held subscriptions that select it (its membership), or `[record, ids,
// {epoch, seq}]` for an acknowledged write that waits for the feed to say whether any
// subscription selects it (PROTOCOL section 7, Writes). Records are JSON objects, never
// arrays, so the two forms cannot be mistaken for each other.

/** Where IndexedDB is missing: nothing survives the process, everything else holds. */
class MemoryStorage {
  constructor() {
    this.nextOutboxId = 1;
  }

  async load() {
    return { cursor: null, tables: new Map(), outbox: [], subs: null };
  }

  async ensureTables() {}

  async saveChanges() {}

  async saveReset() {}

  async saveSubs() {}

  async addOutbox() {
    return this.nextOutboxId++;
  }

  async settleOutbox() {}

  close() {}
}

const META_STORE = '#meta';
const OUTBOX_STORE = '#outbox';
/** Large resets are stored in chunks (see IndexedDBStorage.saveReset). */
const CHUNK_STORE = '#chunks';
const CHUNK_SIZE = 1000;
/** A reset of more records than this is stored in chunks; a smaller one record by record. */
const CHUNKED_RESET = 2000;
/** The mirror can always be fetched again, so its transactions may skip the flush to
 * disk (the cursor still commits atomically with the records); the outbox may not. */
const RELAXED = { durability: 'relaxed' };

function idbRequest(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function idbTransactionDone(transaction) {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error || new DOMException('transaction aborted', 'AbortError'));
  });
}

/** One database per server instance; one object store per table, named as the table
 * (records under their key, out of line), plus `#meta` (the cursor) and `#outbox`
 * ('#' is not allowed in table names, so they never collide).
 *
 * A large reset goes faster in chunks: one `put` per record costs IndexedDB about as much
 * per record as the record is small (Chromium: some 70 us each, 7 s for 100,000), so a
 * reset of more than CHUNKED_RESET records is stored as `#chunks` entries of CHUNK_SIZE
 * records ({keys, records} under [table, n]), in the same single transaction that clears
 * every table and stores the cursor, so no reader ever sees half a snapshot. A later
 * change is stored in the table's own store, which wins over the chunks; a delete then
 * leaves `null` there (a tombstone), since the chunk still holds the record. A reader
 * (load) takes the chunks, then the table stores over them. Small databases never get a
 * `#chunks` store and look as before: one record per key in its table's store. */
class IndexedDBStorage {
  constructor(factory, name, onBlocked) {
    this.factory = factory;
    this.name = name;
    this.onBlocked = onBlocked;
    this.tables = new Set();
    this.db = null;
    this.opening = null;
    this.closed = false;
    this.wantChunks = false;       // a large reset asks for the #chunks store
  }

  /** The open database, with a store for every known table. Opening without a version
   * gives the current one; if stores are missing, one versioned upgrade adds all of
   * them. Another tab may upgrade at the same moment (VersionError, or a version that
   * still lacks a store): then look again. */
  database() {
    if (this.db) return Promise.resolve(this.db);
    if (!this.opening) {
      this.opening = this.openWithStores().finally(() => {
        this.opening = null;
      });
    }
    return this.opening;
  }

  async openWithStores() {
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new DSNError('closed', 'the client was closed');
      const needed = [META_STORE, OUTBOX_STORE, ...this.tables, ...(this.wantChunks ? [CHUNK_STORE] : [])];
      let db = await this.openVersion(undefined, needed);
      if (needed.every((store) => db.objectStoreNames.contains(store))) return this.adopt(db);
      const version = db.version + 1;
      db.close();
      try {
        db = await this.openVersion(version, needed);
        return this.adopt(db);
      } catch (error) {
        if (error?.name !== 'VersionError' || attempt > 20) throw error;
      }
    }
  }

  openVersion(version, stores) {
    return new Promise((resolve, reject) => {
      const request = version === undefined ? this.factory.open(this.name) : this.factory.open(this.name, version);
      request.onupgradeneeded = () => {
        const db = request.result;
        for (const store of stores) {
          if (store === OUTBOX_STORE) {
            if (!db.objectStoreNames.contains(store)) db.createObjectStore(store, { keyPath: 'n', autoIncrement: true });
          } else if (!db.objectStoreNames.contains(store)) {
            db.createObjectStore(store);
          }
        }
      };
      // Another tab holds an older version open. Our tabs close on `versionchange`,
      // so this passes by itself; the client reports it meanwhile.
      request.onblocked = () => this.onBlocked?.();
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  /** Another tab wants a newer version (a new table): close at once so that it is not
   * blocked, and reopen (at that version) on the next use. */
  adopt(db) {
    const forget = () => {
      db.close();
      if (this.db === db) this.db = null;
    };
    db.onversionchange = forget;
    db.onclose = forget;
    if (this.closed) {
      db.close();
      throw new DSNError('closed', 'the client was closed');
    }
    this.db = db;
    return db;
  }

  /** Runs `body(transaction)` in one transaction over `stores`; `body` only issues
   * requests (no other awaits, which would let the transaction commit early), and the
   * promise settles when the transaction has committed. */
  async transaction(stores, mode, body, options = undefined) {
    for (let attempt = 0; ; attempt++) {
      const db = await this.database();
      let transaction;
      try {
        transaction = db.transaction(stores, mode, options);
      } catch (error) {
        // Closed under us by a versionchange from another tab: reopen once.
        if (error?.name === 'InvalidStateError' && attempt === 0) {
          if (this.db === db) this.db = null;
          continue;
        }
        throw error;
      }
      const done = idbTransactionDone(transaction);
      const result = body(transaction);
      await done;
      return result;
    }
  }

  async load() {
    const db = await this.database();
    const tableNames = [...db.objectStoreNames].filter((name) => !name.startsWith('#'));
    for (const name of tableNames) this.tables.add(name);
    const chunked = db.objectStoreNames.contains(CHUNK_STORE);
    const loaded = { cursor: null, tables: new Map(), outbox: [], subs: null };
    let chunks = [];
    const overrides = new Map();
    await this.transaction([META_STORE, OUTBOX_STORE, ...tableNames, ...(chunked ? [CHUNK_STORE] : [])], 'readonly', (transaction) => {
      idbRequest(transaction.objectStore(META_STORE).get('cursor')).then((cursor) => {
        loaded.cursor = cursor ?? null;
      });
      idbRequest(transaction.objectStore(META_STORE).get('subs')).then((subs) => {
        loaded.subs = subs ?? null;
      });
      idbRequest(transaction.objectStore(OUTBOX_STORE).getAll()).then((entries) => {
        loaded.outbox = entries;
      });
      if (chunked) {
        const store = transaction.objectStore(CHUNK_STORE);
        Promise.all([idbRequest(store.getAllKeys()), idbRequest(store.getAll())]).then(([keys, values]) => {
          chunks = keys.map((key, i) => [key[0], values[i]]);
        });
      }
      for (const name of tableNames) {
        const store = transaction.objectStore(name);
        Promise.all([idbRequest(store.getAllKeys()), idbRequest(store.getAll())]).then(([keys, records]) => {
          overrides.set(name, [keys, records]);
        });
      }
    });
    for (const name of tableNames) loaded.tables.set(name, new Map());
    for (const [table, { keys, records }] of chunks) {
      if (!loaded.tables.has(table)) loaded.tables.set(table, new Map());
      const rows = loaded.tables.get(table);
      for (let i = 0; i < keys.length; i++) rows.set(keys[i], records[i]);
    }
    for (const [name, [keys, records]] of overrides) {
      const rows = loaded.tables.get(name);
      for (let i = 0; i < keys.length; i++) {
        if (records[i] === null) rows.delete(keys[i]);
        else rows.set(keys[i], records[i]);
      }
    }
    return loaded;
  }

  /** Stores `record` under `key` in `store` (a table's); a delete (null) leaves a
   * tombstone where a chunk may still hold the record. */
  static putRecord(transaction, table, key, record) {
    const store = transaction.objectStore(table);
    if (record !== null) store.put(record, key);
    else if (transaction.db.objectStoreNames.contains(CHUNK_STORE)) store.put(null, key);
    else store.delete(key);
  }

  /** The outbox as stored, oldest first: what other tabs queued, for the leader tab. */
  async loadOutbox() {
    let entries = [];
    await this.transaction([OUTBOX_STORE], 'readonly', (transaction) => {
      idbRequest(transaction.objectStore(OUTBOX_STORE).getAll()).then((all) => {
        entries = all;
      });
    });
    return entries;
  }

  /** The stored cursor alone ({epoch, seq, sv, tables}, or null): cheap, to tell whether
   * the mirror in memory is the stored one. */
  async loadCursor() {
    let cursor = null;
    await this.transaction([META_STORE], 'readonly', (transaction) => {
      idbRequest(transaction.objectStore(META_STORE).get('cursor')).then((stored) => {
        cursor = stored ?? null;
      });
    });
    return cursor;
  }

  async ensureTables(names) {
    const missing = names.filter((name) => !this.tables.has(name));
    if (!missing.length) return;
    for (const name of missing) this.tables.add(name);
    const db = await this.database();
    if (missing.some((name) => !db.objectStoreNames.contains(name))) {
      db.close();
      if (this.db === db) this.db = null;
      await this.database();
    }
  }

  /** One transaction: the changed records and the cursor (null: left as stored), and
   * the subscription set when `subs` is given, so that a reload finds the mirror
   * exactly at the cursor it saved. */
  async saveChanges(cursor, changes, subs = undefined) {
    const stores = [META_STORE, ...new Set(changes.map(([table]) => table))];
    await this.transaction(stores, 'readwrite', (transaction) => {
      for (const [table, key, record] of changes) IndexedDBStorage.putRecord(transaction, table, key, record);
      if (cursor) transaction.objectStore(META_STORE).put(cursor, 'cursor');
      if (subs !== undefined) transaction.objectStore(META_STORE).put(subs, 'subs');
    }, RELAXED);
  }

  /** The subscription set alone ({id: {name, params}}). */
  async saveSubs(subs) {
    await this.saveChanges(null, [], subs);
  }

  /** One transaction: every table store (and the chunks) cleared and refilled, and the
   * cursor (and the subscription set when `subs` is given). More than CHUNKED_RESET
   * records go in as chunks (see the class comment). */
  async saveReset(cursor, tables, subs = undefined) {
    let total = 0;
    for (const records of tables.values()) total += records.size;
    const chunked = total > CHUNKED_RESET;
    if (chunked && !this.wantChunks) {
      this.wantChunks = true;
      const db = await this.database();
      if (!db.objectStoreNames.contains(CHUNK_STORE)) {
        db.close();
        if (this.db === db) this.db = null;
      }
    }
    const db = await this.database();
    const hasChunks = db.objectStoreNames.contains(CHUNK_STORE);
    const names = [...this.tables];
    await this.transaction([META_STORE, ...names, ...(hasChunks ? [CHUNK_STORE] : [])], 'readwrite', (transaction) => {
      if (hasChunks) transaction.objectStore(CHUNK_STORE).clear();
      for (const name of names) {
        const store = transaction.objectStore(name);
        store.clear();
        const records = tables.get(name);
        if (!records) continue;
        if (!chunked) {
          for (const [key, record] of records) store.put(record, key);
          continue;
        }
        const chunks = transaction.objectStore(CHUNK_STORE);
        let keys = [];
        let values = [];
        let n = 0;
        for (const [key, record] of records) {
          keys.push(key);
          values.push(record);
          if (keys.length === CHUNK_SIZE) {
            chunks.put({ keys, records: values }, [name, n++]);
            keys = [];
            values = [];
          }
        }
        if (keys.length) chunks.put({ keys, records: values }, [name, n]);
      }
      transaction.objectStore(META_STORE).put(cursor, 'cursor');
      if (subs !== undefined) transaction.objectStore(META_STORE).put(subs, 'subs');
    }, RELAXED);
  }

  async addOutbox(entry) {
    let id;
    await this.transaction([OUTBOX_STORE], 'readwrite', (transaction) => {
      const { op, table, key, data, mid } = entry;
      idbRequest(transaction.objectStore(OUTBOX_STORE).add({ op, table, key, data, mid })).then((n) => {
        id = n;
      });
    });
    return id;
  }

  /** Removes an answered write from the outbox and, in the same transaction, stores the
   * record the server acknowledged (`change` = [table, key, record], or null). */
  async settleOutbox(id, change) {
    const stores = change ? [OUTBOX_STORE, change[0]] : [OUTBOX_STORE];
    await this.transaction(stores, 'readwrite', (transaction) => {
      if (id !== undefined) transaction.objectStore(OUTBOX_STORE).delete(id);
      if (change) IndexedDBStorage.putRecord(transaction, ...change);
    });
  }

  close() {
    this.closed = true;
    this.db?.close();
    this.db = null;
  }
}

/* ============================================================================
 * Limits, defaults and small helpers of the session and the client
 * ========================================================================== */

const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,62}$/;
const MAX_KEY_LENGTH = 256;
/** Writes sent in one `batch` when several are queued (the server's own cap is larger). */
const MAX_BATCH = 100;
/** Characters of record JSON sent in one `batch`: well under the server's default max_body (2 MiB). */
const MAX_BATCH_BYTES = 1 << 20;
/** Error codes after which the same write is sent again rather than refused: the
 * server does not remember them against the mid. */
const RETRY_CODES = new Set(['clock', 'replay', 'expired']);
const WRITE_OPS = new Set(['create', 'update', 'delete']);
/** What the client says in hello; a 1.0 server ignores it, a 1.1 server answers its own. */
const PROTOCOL_VERSION = '1.1';
/** The names of the DOMExceptions with which IndexedDB refuses to open where storage is
 * not allowed or not available; the client then keeps its mirror in memory. SecurityError:
 * an opaque origin (a sandboxed frame) or storage blocked by the user. InvalidStateError:
 * Firefox's private browsing before version 115. UnknownError: Chrome's answer when
 * storage is denied (third-party frames with third-party cookies blocked) or when its
 * backing store cannot be opened. QuotaExceededError, AbortError: no room for the
 * database, or its upgrade aborted. Anything else (a TypeError from a broken factory
 * passed in options) is a bug to show, and stops the client in state 'error'. */
const NO_PERSISTENCE_ERRORS = new Set(['SecurityError', 'InvalidStateError', 'UnknownError', 'QuotaExceededError', 'AbortError']);

/** Option defaults: `wait` in seconds (the server caps it at 30); `stream` and `tabs`
 * switches; `maxAnswer` in bytes; the rest in ms. */
const DEFAULTS = {
  firstSyncTimeout: 10000,
  wait: 25,
  timeout: 15000,
  pullGrace: 10000,
  stream: false,
  retryMin: 500,
  retryMax: 30000,
  tabs: true,
  restoreGrace: 3000,
  maxAnswer: 64 * 1024 * 1024,
};

/** PROTOCOL section 7: a request names at most this many subscriptions. */
const MAX_SUBS = 64;

/** JSON with every object's keys sorted, so that equal params give equal text whatever
 * order they were written in. */
function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((name) => `${JSON.stringify(name)}:${canonicalJson(value[name])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** A subscription's id: 22 characters of b64u(SHA-256(name "\n" canonical params)), so
 * that every tab and every reload finds the same id for the same subscription, and two
 * different ones collide with a chance of 2^-132. */
function subscriptionId(name, params) {
  return b64uEncode(sha256(utf8(`${name}\n${canonicalJson(params)}`))).slice(0, 22);
}

/** What _send resolves to once a streamed pull has ended (its messages already applied). */
const STREAMED = Object.freeze({ ok: true, streamed: true });

// What Node's fetch (undici) says when a connection ends under a request it sent: a kept-alive
// connection the server had just closed. Browsers send such a request again themselves.
const DROPPED = new Set(['UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNRESET', 'EPIPE']);

function droppedConnection(error) {
  return error?.name !== 'AbortError' && DROPPED.has(error?.cause?.code);
}

/** Whether an answer is a streamed pull's (its Content-Type, parameters ignored). */
function isStreamAnswer(response) {
  const type = response.headers?.get?.('content-type');
  return typeof type === 'string' && type.split(';')[0].trim().toLowerCase() === STREAM_TYPE;
}

/** Splits ".../prefix/sync/<instance>" into what the requests need. */
function parseSyncUrl(url) {
  let parsed;
  try {
    // In a page, a path is the page's own origin's ("/dsn/sync/<instance>": get_url('/dsn') under a mount).
    const page = globalThis.location?.href;
    parsed = new URL(url, typeof page === 'string' && /^https?:/.test(page) ? page : undefined);
  } catch {
    parsed = null;
  }
  const at = parsed ? parsed.pathname.lastIndexOf('/sync/') : -1;  // a mount's prefix may hold /sync/ too
  const basePath = at < 0 ? '' : parsed.pathname.slice(at).replace(/\/+$/, '');
  const instance = basePath.slice('/sync/'.length);
  if (!parsed || !/^https?:$/.test(parsed.protocol) || !instance || instance.includes('/')) {
    throw new DSNError('bad_url', `a dsn-sync URL looks like "http://host:port/sync/<instance>", or under a mount "https://example.com/<prefix>/sync/<instance>" (from DSNSync.get_url()), not ${JSON.stringify(String(url))}`);
  }
  return { origin: parsed.origin, prefix: parsed.pathname.slice(0, at), basePath, instance };
}

/** JSON.stringify's replacer for a record: what JSON would change silently is refused, as
 * the server refuses it (NaN and Infinity would become null, a Map or a Set {}, a typed
 * array an object of indexes, a function would vanish). A Date goes as its ISO text and an
 * undefined field is left out, as JSON has them. */
function wireValue(name, value) {
  const where = name === '' ? 'the record' : Array.isArray(this) ? `item ${name}` : `field ${JSON.stringify(name)}`;
  const given = this[name]; // before its toJSON: a Date, a Buffer
  if ((typeof value === 'number' || value instanceof Number) && !Number.isFinite(Number(value))) {
    throw new Error(`${where} is ${value}, which JSON cannot carry (it would arrive as null)`);
  }
  if (given instanceof Date && Number.isNaN(given.getTime())) {
    throw new Error(`${where} is an invalid Date, which JSON cannot carry (it would arrive as null)`);
  }
  if (typeof value === 'function' || typeof value === 'symbol') {
    throw new Error(`${where} is a ${typeof value}, which JSON cannot carry (it would vanish)`);
  }
  if (value instanceof Map || value instanceof Set || value instanceof WeakMap || value instanceof WeakSet) {
    throw new Error(`${where} is a ${value.constructor.name}, which JSON cannot carry (it would arrive as {}): ` +
      'pass Object.fromEntries(map) or [...set]');
  }
  const binary = [value, given].find((v) => ArrayBuffer.isView(v) || v instanceof ArrayBuffer
    || (typeof SharedArrayBuffer === 'function' && v instanceof SharedArrayBuffer));
  if (binary) {
    throw new Error(`${where} is binary (${binary.constructor.name}), which JSON cannot carry: encode it, as base64 text say`);
  }
  return value;
}

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** A deep copy of a JSON value, every object and array in it frozen. Object.fromEntries
 * keeps a "__proto__" key an own property. */
function frozenCopy(value) {
  if (value === null || typeof value !== 'object') return value;
  const copy = Array.isArray(value) ? value.map(frozenCopy)
    : Object.fromEntries(Object.entries(value).map(([name, item]) => [name, frozenCopy(item)]));
  return Object.freeze(copy);
}

/** Whether two {key: record} views hold the same records (records compared by
 * identity, then by their JSON). */
function sameRecords(before, after) {
  if (!before) return false;
  const keys = Object.keys(after);
  if (keys.length !== Object.keys(before).length) return false;
  for (const key of keys) {
    if (!Object.hasOwn(before, key)) return false;
    if (before[key] !== after[key] && JSON.stringify(before[key]) !== JSON.stringify(after[key])) return false;
  }
  return true;
}

/** The IndexedDB factory to use: options.indexedDB (null: none), else the global one.
 * Reading `indexedDB` can itself throw where storage is blocked (as reading
 * `localStorage` does): that is a refusal ({factory: null, refused}), not a missing API. */
function indexedDBFactory(options) {
  if (options.indexedDB !== undefined) return { factory: options.indexedDB, refused: null };
  try {
    return { factory: globalThis.indexedDB, refused: null };
  } catch (error) {
    return { factory: null, refused: error };
  }
}

/** What a write does to the record it finds (undefined = absent). */
function applyWrite(record, write) {
  if (write.op === 'create') return write.data;
  if (write.op === 'update') return record === undefined ? undefined : { ...record, ...write.data };
  return undefined;
}

/* ============================================================================
 * The session: one token's conversation with the server
 * ========================================================================== */

/** Everything about talking to the server, and nothing about the mirror: the token and
 * its traffic keys, the endpoint (`ep`, rotated by the server), the clock offset, fetch,
 * hello, one request with its retries (404, `clock`, `replay`, a dead token), the frame
 * sent and its answer opened, a streamed pull read message by message.
 *
 * Methods for the client: request(op, fields, timeout, onMessage, signal), connected(),
 * forget() (say hello again before the next request), abortAll() (drop what is in
 * flight), close(error) (and refuse every later request with `error`).
 * What the client provides (`hooks`): hello(answer) once per hello, awaited before any
 * request goes on; tokenDead(code, message), when the server refuses the token and there
 * is no token function to ask again; answered(), after every answer that opened. */
class Session {
  constructor({ url, instance, origin, prefix, basePath, token, fetch, timeout, maxAnswer = DEFAULTS.maxAnswer }, hooks) {
    this.url = url;
    this.instance = instance;
    this.origin = origin;
    this.prefix = prefix;
    this.basePath = basePath;
    this.token = token;
    this.fetch = fetch;
    this.timeout = timeout;
    this.maxAnswer = maxAnswer;     // bytes of one answer (of one stream message) read before it opens
    this.hooks = hooks;
    this.keysNow = null;           // {kid, c2s, s2c} of the current token
    this.keysPromise = null;
    this.ep = null;                // next request's path; null: say hello first
    this.helloPromise = null;
    this.offset = 0;               // server clock - local clock, ms
    this.aborts = new Set();       // AbortControllers of the requests in flight
    this.closedBy = null;          // the error every request gets after close()
  }

  /** The current token's kid and traffic keys; asks the token function when needed. */
  keys() {
    if (this.keysNow) return Promise.resolve(this.keysNow);
    if (!this.keysPromise) {
      this.keysPromise = (async () => {
        const token = typeof this.token === 'function' ? await this.token() : this.token;
        const { kid, tokenSecret } = parseToken(token);
        this.keysNow = { kid, ...deriveTrafficKeys(tokenSecret) };
        return this.keysNow;
      })().finally(() => {
        this.keysPromise = null;
      });
    }
    return this.keysPromise;
  }

  /** Says hello at the base path unless a session is established. */
  connected() {
    if (this.ep) return Promise.resolve();
    if (!this.helloPromise) {
      this.helloPromise = this.hello().finally(() => {
        this.helloPromise = null;
      });
    }
    return this.helloPromise;
  }

  /** Forgets the endpoint: the next request says hello first. */
  forget() {
    this.ep = null;
  }

  /** Why hello found no instance at the URL: whether dsn-sync answers at its prefix at all
   * (it serves dsn_client.js there) tells a stale URL from a wrong prefix. */
  async wrongUrl() {
    const said = `no dsn-sync instance at ${this.url} (HTTP 404 on hello)`;
    let served;
    const controller = new AbortController();  // bounded as any request is, and cut by close()
    const timer = setTimeout(() => controller.abort(), this.timeout);
    this.aborts.add(controller);
    try {
      served = (await this.fetch(`${this.origin}${this.prefix}/dsn_client.js`, { method: 'HEAD', signal: controller.signal })).ok;
    } catch {
      return `${said}: is the URL right?`;
    } finally {
      clearTimeout(timer);
      this.aborts.delete(controller);
    }
    return served
      ? `${said}: dsn-sync answers at ${this.origin}${this.prefix}, but this instance is not there: the server has ` +
        'a new URL (a server without a fixed secret gets one at every start); ask the backend for the current one'
      : `${said}, and no dsn-sync answers at ${this.origin}${this.prefix || '/'}: if dsn-sync is mounted in an app, ` +
        'the URL must include the mount\'s prefix, as the backend\'s get_url(\'https://host/prefix\') gives it';
  }

  async hello() {
    let answer;
    for (let attempt = 0; ; attempt++) {
      try {
        answer = await this.send(this.basePath, { op: 'hello', pv: PROTOCOL_VERSION }, this.timeout);
      } catch (error) {
        if (error.status === 404) throw new DSNError('wrong_url', await this.wrongUrl());
        throw error.status === 401 ? this.tokenDead('unauthorized') : error;
      }
      if (answer.ok || attempt > 2) break;
      if (answer.error?.code === 'expired') throw this.tokenDead('expired');
      if (!RETRY_CODES.has(answer.error?.code)) break;
    }
    if (!answer.ok) throw new DSNError(answer.error?.code ?? 'bad_response', answer.error?.message ?? 'hello refused');
    if (answer.instance !== undefined && answer.instance !== this.instance) {
      throw new DSNError('wrong_url', `the server at ${this.url} is instance ${answer.instance}`);
    }
    await this.hooks.hello(answer);
  }

  /** One protocol call after the hello: 404 says hello again, `clock` and `replay` send
   * a new frame (the offset already corrected), a dead token asks for a fresh one.
   * Throws for what the caller backs off from; answers {ok: false} for a refusal. */
  async request(op, fields, timeout = this.timeout, onMessage = undefined, signal = undefined) {
    for (let attempt = 0; ; attempt++) {
      await this.connected();
      let answer;
      try {
        answer = await this.send(this.ep, { op, ...fields }, timeout, onMessage, signal);
      } catch (error) {
        if (error.status === 404 && attempt < 3) {
          this.ep = null;
          continue;
        }
        throw error.status === 401 ? this.tokenDead('unauthorized') : error;
      }
      const code = answer.ok ? null : answer.error?.code;
      if (code === 'expired') throw this.tokenDead('expired');
      if (RETRY_CODES.has(code) && attempt < 3) continue;
      return answer;
    }
  }

  /** A token the server no longer takes: forget it, so that the token function is asked
   * for a fresh one when the caller retries after its backoff; without a function, the
   * client is told (it stops, keeping the outbox). Returns the error to throw. */
  tokenDead(code) {
    const message = code === 'expired' ? 'the token has expired' : 'the server refused the token (HTTP 401)';
    this.keysNow = null;
    this.ep = null;
    if (typeof this.token !== 'function') this.hooks.tokenDead(code, message);
    return new DSNError(code, message);
  }

  /** POSTs one frame and opens the answer. Throws a DSNError with `.status` for an
   * HTTP answer other than 200, `offline` when the server cannot be reached, and
   * `bad_response` for an answer that does not open.
   *
   * With `onMessage` (a streamed pull), an answer of Content-Type STREAM_TYPE is read
   * message by message as it arrives, each message opened with its index and handed to
   * `onMessage` (awaited before the next is read); it then resolves to STREAMED once
   * the server ends the stream. A message that does not open (forged, reordered, one
   * missing before it), a stream cut inside a message, or a stream without messages
   * is `bad_response`: the connection is dropped and the caller pulls again from its
   * cursor. The `timeout` starts again when the stream's head arrives, so a stream that
   * runs its full `wait` is never cut by the client. An aborted `signal` drops the
   * request as a timeout would (the client's subscriptions use it to cut a long poll
   * that asks for an outdated set). */
  async send(path, request, timeout, onMessage, signal) {
    const keys = await this.keys();
    let sentAt = Date.now();
    const seal = () => buildRequestFrame(keys.c2s, keys.kid, path, JSON.stringify({ ...request, t: Math.round(sentAt + this.offset) }));
    let { frame, nonce } = await seal();
    // close() may have come while the frame was being sealed: no request after it.
    if (this.closedBy) throw this.closedBy;
    const controller = new AbortController();
    let timer = setTimeout(() => controller.abort(), timeout);
    this.aborts.add(controller);
    if (signal?.aborted) controller.abort();
    else signal?.addEventListener('abort', () => controller.abort(), { once: true });
    let bytes;
    let status;
    try {
      let response;
      try {
        const post = () => this.fetch(this.origin + this.prefix + path, {
          method: 'POST',
          headers: { 'Content-Type': 'text/plain' },
          body: frame,
          signal: controller.signal,
        });
        try {
          response = await post();
        } catch (error) {
          if (!droppedConnection(error) || controller.signal.aborted || this.closedBy) throw error;
          // A kept-alive connection that the server closed while it was idle (gunicorn closes
          // them after 2 s, about when a polling client comes back) fails the request that
          // reused it. Once, at once, as a new frame on a new connection: a write is kept
          // from applying twice by its mid, and a pull or hello may be asked again.
          sentAt = Date.now();
          ({ frame, nonce } = await seal());
          if (this.closedBy) throw this.closedBy;
          response = await post();
        }
        status = response.status;
        if (!(status === 200 && onMessage && isStreamAnswer(response))) bytes = await readCapped(response, this.maxAnswer, path);
      } catch (error) {
        throw this.unreachable(error);
      }
      if (bytes === undefined) {
        clearTimeout(timer);
        timer = setTimeout(() => controller.abort(), timeout);
        return await this.readStream(response, keys, nonce, path, onMessage, controller);
      }
    } finally {
      clearTimeout(timer);
      this.aborts.delete(controller);
    }
    if (status !== 200) {
      const failure = new DSNError(status === 401 ? 'unauthorized' : 'http', `HTTP ${status} from ${path}`);
      failure.status = status;
      throw failure;
    }
    return this.accept(keys, path, await openResponseFrame(keys.s2c, nonce, bytes), sentAt, true);
  }

  /** The error for a request that failed on the way (network, abort, a body cut off). */
  unreachable(error) {
    if (this.closedBy) return this.closedBy;
    if (error instanceof DSNError) return error;  // said already (readCapped)
    const why = error?.cause?.code ?? error?.message ?? error;
    let message = `${this.origin} cannot be reached: ${why}`;
    // TLS spoken to a plain-http server fails as a reset or a TLS record error in Node
    // and as a bare "Failed to fetch" in browsers; a refused connection is another story.
    if (this.origin.startsWith('https:') && !/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|abort/i.test(`${why} ${error?.name}`)) {
      message += ` (the URL says https: if the server speaks plain http, as DSNSync does unless it is given TLS ` +
        `or put behind a TLS proxy, use ${this.origin.replace(/^https:/, 'http:')} instead)`;
    }
    const failure = new DSNError('offline', message);
    failure.cause = error;
    return failure;
  }

  /** Reads a streamed pull's body (see _send). Where the fetch in use gives no streaming
   * body (no response.body.getReader, nor an async-iterable body as node-fetch has), the
   * whole body is read when the stream ends and split then: correct, only late. */
  async readStream(response, keys, nonce, path, onMessage, controller) {
    const splitter = new StreamSplitter(this.maxAnswer, path);
    let index = 0;
    const take = async (chunk) => {
      const bytes = chunk instanceof Uint8Array ? chunk
        : ArrayBuffer.isView(chunk) ? new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength) : new Uint8Array(chunk);
      for (const frame of splitter.push(bytes)) {
        const json = await openStreamMessage(keys.s2c, nonce, index, frame);
        if (json === null) {
          throw new DSNError('bad_response', `message ${index} of a streamed pull from ${path} did not open with its index (forged, reordered, or one is missing)`);
        }
        // Every message carries the ep of the request; only the first may move it (a later
        // one would undo a rotation that a write made meanwhile).
        const answer = this.accept(keys, path, json, null, index === 0);
        index++;
        await onMessage(answer);
      }
    };
    const received = async (promise) => {
      try {
        return await promise;
      } catch (error) {
        throw this.unreachable(error);
      }
    };
    const source = response.body;
    try {
      if (typeof source?.getReader === 'function') {
        const reader = source.getReader();
        try {
          for (;;) {
            const { value, done } = await received(reader.read());
            if (done) break;
            await take(value);
          }
        } catch (error) {
          reader.cancel(error).catch(() => {});
          throw error;
        }
      } else if (source && typeof source[Symbol.asyncIterator] === 'function') {
        const chunks = source[Symbol.asyncIterator]();
        for (;;) {
          const { value, done } = await received(chunks.next());
          if (done) break;
          await take(value);
        }
      } else {
        await take(await received(readCapped(response, this.maxAnswer, path)));
      }
      if (splitter.pending) throw new DSNError('bad_response', `a streamed pull from ${path} ended inside a message`);
      if (index === 0) throw new DSNError('bad_response', `a streamed pull from ${path} ended without a message`);
    } catch (error) {
      controller.abort(); // drop the connection: what follows in it cannot be trusted
      throw error;
    }
    return STREAMED;
  }

  /** An opened answer (JSON text, or null when it did not open): checked, then the clock
   * offset, the next path and the status follow it. `sentAt` null: a stream message,
   * sealed just before it was sent, so its arrival is the best guess for `now`. */
  accept(keys, path, json, sentAt, moveEp) {
    let answer = null;
    try {
      answer = json === null ? null : JSON.parse(json);
    } catch {
      answer = null;
    }
    if (!isPlainObject(answer) || typeof answer.ep !== 'string' || !answer.ep.startsWith('/sync/')) {
      throw new DSNError('bad_response', `an answer from ${path} did not open with this token's keys, or is not a v1 response`);
    }
    const receivedAt = Date.now();
    if (Number.isFinite(answer.now)) {
      // The server read its clock somewhere between sending and receiving; the midpoint
      // is the best guess for a quick answer, the arrival for a long poll.
      const local = sentAt !== null && receivedAt - sentAt < 2000 ? (sentAt + receivedAt) / 2 : receivedAt;
      this.offset = answer.now - local;
    }
    if (moveEp && this.keysNow === keys) this.ep = answer.ep;
    this.hooks.answered();
    return answer;
  }

  /** Drops every request in flight (they fail as unreachable, or with the close error). */
  abortAll() {
    for (const controller of this.aborts) controller.abort();
  }

  /** Refuses every later request with `error`, and drops those in flight. */
  close(error) {
    this.closedBy = error;
    this.abortAll();
  }
}



/* ============================================================================
 * The client: the mirror, the outbox, the feed and the sender, many tabs
 * ========================================================================== */

/** Starts a client and returns it at once; it connects in the background.
 *
 *   url      "http(s)://host:port[/prefix]/sync/<instance>", as DSNSync.get_url() gives it
 *   token    "dsn1.<kid>.<secret>", or a function (sync or async) that returns one; it is
 *            called again when the server says the token is dead (401 or `expired`)
 *   options  indexedDB  an IndexedDB factory (default globalThis.indexedDB; null: memory;
 *                       one that refuses to open: memory, with a 'no_persistence' status)
 *            name       the IndexedDB database name (default "dsn-sync/<instance>"; give
 *                       each user of a shared browser their own)
 *            fetch      (default globalThis.fetch)
 *            wait       long-poll seconds (default 25)
 *            stream     streamed pulls (default false): a long poll that finds nothing
 *                       new stays open after the first change, and the server writes
 *                       one sealed message per change down the same answer until
 *                       `wait` runs out, so a busy feed costs one request per `wait`
 *                       instead of one per change. Off by default because a proxy or
 *                       CDN that buffers answers (nginx's proxy_buffering, some
 *                       corporate proxies, compressing middleboxes) would hold the
 *                       messages back until the stream ends, up to `wait` seconds
 *                       late; turn it on where the path to the server passes each
 *                       chunk on at once (direct, or nginx with proxy_buffering off
 *                       or an X-Accel-Buffering: no header). Plain answers keep working
 *                       either way
 *            timeout    ms for a request other than a long poll (default 15000); a long
 *                       poll (streamed or not) may take `wait` seconds plus pullGrace
 *                       (default 10000 ms) before the client gives up on it
 *            retryMin, retryMax  backoff bounds in ms (default 500, 30000)
 *            firstSyncTimeout  ms (default 10000) after connectDSN for which getAll and
 *                       get, on a first visit (no mirror stored yet), wait for the first
 *                       sync; after it they answer from the mirror as it stands (empty),
 *                       and onStatus says why (state 'offline' or 'error' with the
 *                       failure, or 'connecting' with code 'first_sync_timeout' when the
 *                       server took the connection but has not answered). With a stored
 *                       mirror they answer at once. onDataChange's first call waits for
 *                       the first sync, however long: never an empty table before it
 *            tabs       (default true) where Web Locks, BroadcastChannel and IndexedDB
 *                       are all there, the tabs of one browser profile on one sync URL
 *                       and database elect one to hold the connection; the others follow
 *                       it and send their writes through it (see "one connection for
 *                       many tabs" below). false: every tab connects on its own
 */
export function connectDSN(url, token, options = {}) {
  return new DSNClient(url, token, options);
}

class DSNClient {
  constructor(url, token, options = {}) {
    if (typeof token !== 'string' && typeof token !== 'function') {
      throw new DSNError('bad_token', 'connectDSN(url, token): token must be a string or a function that returns one');
    }
    if (typeof token === 'string') parseToken(token);
    const { origin, prefix, basePath, instance } = parseSyncUrl(url);
    this.url = url;
    this.instance = instance;
    this._options = { ...DEFAULTS, ...options };
    if (!(this._options.wait >= 0 && this._options.wait <= 30)) {
      throw new RangeError(`options.wait is long-poll seconds from 0 to 30 (the protocol's limit), not ${options.wait}`);
    }
    const fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    if (typeof fetch !== 'function') throw new DSNError('no_fetch', 'no fetch() here: pass connectDSN(url, token, { fetch })');
    this._session = new Session({ url, instance, origin, prefix, basePath, token, fetch, timeout: this._options.timeout, maxAnswer: this._options.maxAnswer }, {
      hello: (answer) => this._hello(answer),
      tokenDead: (code, message) => this._tokenDead(code, message),
      answered: () => this._answered(),
    });

    const { factory, refused } = indexedDBFactory(options);
    this._storageRefused = refused; // why IndexedDB could not be used, to report once loaded
    this._storage = factory
      ? new IndexedDBStorage(factory, options.name ?? `dsn-sync/${instance}`, () => this._setStatus({ state: this._status.state, blocked: true }))
      : new MemoryStorage();

    this._cursor = null;           // {epoch, seq, sv}, frozen: where the mirror stands in the feed
    this._schema = Object.freeze({}); // {table: {key, fields}}, frozen (frozenCopy)
    this._tables = new Map();      // table -> Map(key -> record): the server's state as last seen
    this._outbox = [];             // writes not yet answered, in order: {op, table, key, data, mid, id}
    this._acked = new Map();       // "table\0key" -> {epoch, seq} of our last acknowledged write to it
    this._waiters = new Map();     // mid -> {resolve, reject} of the write's promise
    this._listeners = new Map();   // table -> Set of callbacks
    this._delivered = new Map();   // table -> the {key: record} its listeners last got
    this._statusListeners = new Set();
    this._status = { state: 'connecting' };
    this._syncListeners = new Set();

    this._fresh = true;            // (re)connected: the next pull does not wait
    this._stopped = false;
    this._sleepers = new Set();
    this._wakeSender = null;
    this._mutex = Promise.resolve();

    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {}); // an unobserved failure must not crash a Node process

    // The first sync: the mirror holds the server's data once, from a stored cursor (a
    // reload) or from the first pull answer applied. Until then (a first visit), getAll
    // and get wait for it, at most until firstSyncTimeout ms after connectDSN.
    this._synced = false;
    this._firstSync = new Promise((resolve) => {
      this._resolveFirstSync = resolve;
    });
    this._firstSyncDeadline = Date.now() + this._options.firstSyncTimeout;
    // No instance at the URL (404 on hello): the first sync will not come, so reads stop waiting.
    this._noInstance = new Promise((resolve) => {
      this._resolveNoInstance = resolve;
    });
    this._warnedNoInstance = false;
    this._epoch = null;            // the server's epoch as last heard (hello, pull, write answers)
    this._serverVersion = null;    // the protocol version the server said in hello ("1.0" when it said none)
    this._stopError = null;        // why the client stopped: what writes queued before reject with
    this._writeRefusal = null;     // what writes made after a dead token stopped it reject with (else _stopError)

    this._isLoaded = false;
    this._loaded = this._load();
    this._loaded.catch(() => {});
    this._onOnline = () => this._wakeAll();
    globalThis.addEventListener?.('online', this._onOnline);
    // The browser lost its network: a long-poll in flight may hang until its timeout (25 s and
    // more) before the status says so. Cut it: the next pull fails at once, and says offline.
    this._onOffline = () => this._pullAbort?.abort();
    globalThis.addEventListener?.('offline', this._onOffline);

    this._term = 0;                // counts leaderships; a loop of an earlier one ends
    this._leading = false;         // this tab holds the connection (always so without tabs)
    this._channel = null;          // BroadcastChannel to the other tabs, when shared
    this._lockName = null;         // the Web Lock the tabs of this database and URL compete for
    this._campaigning = null;      // AbortController of this tab's pending lock request
    this._release = null;          // ends the current lead (lets the lock go)

    // Subscriptions (PROTOCOL section 7; see "subscriptions" below).
    this._subMode = false;         // the mirror is the union of subscriptions (stored)
    this._subs = new Map();        // id -> {name, params}: the set the feed asks for (stored)
    this._held = new Set();        // ids whose rows the mirror holds as of the cursor (stored in it)
    this._members = new Map();     // table -> Map(key -> [ids]): which held subscriptions select a row
    this._probation = new Map();   // "table\0key" -> {epoch, seq}: an acked row no subscription has claimed yet
    this._mine = new Map();        // id -> {name, params, count, waiters}: this tab's subscribe() handles
    this._tabSubs = new Map();     // leader: other tab id -> {id: {name, params}} that tab holds
    this._tabWatch = new Map();    // leader: other tab id -> AbortController of the wait for its end
    this._restored = new Set();    // leader: stored subscriptions no subscribe() has adopted yet
    this._restoreTimer = null;
    this._serverSubs = undefined;  // whether hello said "subs": true
    this._pullAbort = null;        // AbortController of the pull in flight
    this._tabId = b64uEncode(randomBytes(9));
    this._start();
  }

  /* ---------------- public API ---------------- */

  /** {epoch, seq, sv}: how far the mirror has followed the server's change feed (its
   * epoch, the last seq applied, the schema version); null until it has synced once.
   * Frozen; replaced, never changed in place. */
  get cursor() {
    return this._cursor;
  }

  /** {table: {key, fields}}: the tables this token may read, as the server last
   * described them (`fields` null for a table without a field list); {} before the
   * first answer. Frozen throughout; replaced, never changed in place. */
  get schema() {
    return this._schema;
  }

  /** All records of `table`, as {key: record} (records without their key field, as
   * the server stores them); the optimistic writes included. Answers from the mirror,
   * so also offline. Treat the records as read-only. */
  async getAll(table) {
    await this._untilFirstSync();
    return this._view(table);
  }

  /** The record of `key` in `table`, or undefined. Waits as getAll does. */
  async get(table, key) {
    await this._untilFirstSync();
    let record = this._tables.get(table)?.get(key);
    for (const write of this._outbox) {
      if (write.table === table && write.key === key) record = applyWrite(record, write);
    }
    return record;
  }

  /** Resolves true once the backend has accepted the write; rejects with a DSNError
   * whose `.code` is the server's answer (`exists`, `rejected`, `invalid`, ...), after
   * the optimistic change has been rolled back. Made offline, it waits in the outbox
   * (in IndexedDB) and is sent when the server is back. */
  create(table, key, data) {
    return this._write('create', table, key, data);
  }

  /** A partial update: the fields given replace those of the record. */
  update(table, key, data) {
    return this._write('update', table, key, data);
  }

  delete(table, key) {
    return this._write('delete', table, key);
  }

  /** Calls `callback(all)` with the whole table ({key: record}) once the mirror holds
   * the server's data (at once from a stored mirror; on a first visit, after the first
   * sync, never with an empty table before it), then after every change (never in the
   * middle of one). Returns a function that unsubscribes. */
  onDataChange(table, callback) {
    if (typeof callback !== 'function') throw new TypeError('onDataChange(table, callback): callback must be a function');
    if (!this._listeners.has(table)) this._listeners.set(table, new Set());
    const subscription = (all) => callback(all);
    subscription.started = false; // _notify passes it by until its first call
    this._listeners.get(table).add(subscription);
    this._firstSync.then(() => {
      if (!this._listeners.get(table)?.has(subscription) || !this._synced) return;
      const all = this._view(table);
      if (!this._delivered.has(table)) this._delivered.set(table, all);
      subscription.started = true;
      this._deliver(subscription, all);
    });
    return () => {
      const listeners = this._listeners.get(table);
      listeners?.delete(subscription);
      if (!listeners?.size) this._delivered.delete(table);
    };
  }

  /** Calls `callback(status)` now (soon) and on every change of the connection's state:
   * {state: 'connecting' | 'online' | 'offline' | 'error', code?, message?, retryIn?,
   * reset?: {pages, records: {table: count}, done}}. Returns an unsubscribe function.
   * One status is a notice rather than a state: {state (unchanged, 'connecting' in
   * practice), code: 'no_persistence', message}, once, when IndexedDB refused to open
   * and the mirror is kept in memory instead. */
  onStatus(callback) {
    let called = false;
    const subscription = (status) => {
      called = true;
      callback(status);
    };
    this._statusListeners.add(subscription);
    // A change in between has already brought the current status: not twice.
    Promise.resolve().then(() => {
      if (!called && this._statusListeners.has(subscription)) this._deliver(subscription, this._status);
    });
    return () => this._statusListeners.delete(subscription);
  }

  /** Calls `callback({cursor, pending})` once soon (when the mirror is loaded), then
   * after every pull answer applied (also one that brought no change: the mirror is then
   * known to be current up to `cursor`), every write queued and every write answered
   * (accepted or refused). `cursor` is as the getter gives it; `pending` is the number
   * of queued writes (pending() lists them). Returns an unsubscribe function. */
  onSync(callback) {
    if (typeof callback !== 'function') throw new TypeError('onSync(callback): callback must be a function');
    let called = false;
    const subscription = (progress) => {
      called = true;
      callback(progress);
    };
    this._syncListeners.add(subscription);
    this._loaded.then(() => {
      if (!called && this._syncListeners.has(subscription)) this._deliver(subscription, this._progress());
    }, () => {});
    return () => this._syncListeners.delete(subscription);
  }

  /** The queued writes, oldest first: [{op, table, key, data, mid}]. */
  pending() {
    return this._outbox.map(({ op, table, key, data, mid }) => (op === 'delete' ? { op, table, key, mid } : { op, table, key, data, mid }));
  }

  /** Subscribes to the backend's subscription `name` with `params` (a JSON object that
   * the backend's function checks) and returns a handle at once:
   *
   *     const lobby = client.subscribe('room', { room: 'lobby' });
   *     await lobby.ready;   // its rows are in the mirror
   *     lobby.close();       // rows no other subscription selects leave the mirror
   *
   * The first subscribe() puts the client in subscription mode (PROTOCOL section 7), for
   * good (it is stored with the mirror): the mirror then holds only the rows its
   * subscriptions select, their union, and getAll, get and onDataChange see that union.
   * Until then the client mirrors whole readable tables, as always.
   *
   * The handle is {id, name, params, ready, close()}. `id` is derived from name and
   * params, so subscribe() calls with equal ones (in this tab or others, now or after a
   * reload) share one subscription, which is released when the last handle is closed.
   * `ready` resolves once the subscription's rows are in the mirror (at once if they
   * already are, e.g. stored from an earlier visit, also offline); it rejects with a
   * DSNError whose `.code` is `forbidden` or `invalid` when the backend refuses the
   * subscription (which is then dropped, its rows with it, and the feed goes on without
   * it), `unsupported` when the server does not implement subscriptions, or `closed`
   * when the handle or the client is closed first. close() may be called more than once.
   *
   * A reload keeps the set and its rows (readable offline). A stored subscription that
   * the page does not subscribe() to again within `restoreGrace` ms (default 3000) is
   * released at the first successful sync after that. */
  subscribe(name, params = {}) {
    if (typeof name !== 'string' || !name) {
      throw new TypeError(`subscribe(name, params): name must be a non-empty string, not ${JSON.stringify(name)}`);
    }
    if (!isPlainObject(params)) throw new TypeError(`subscribe(name, params): params must be an object, not ${JSON.stringify(params)}`);
    let copy;
    try {
      copy = JSON.parse(JSON.stringify(params));
    } catch (error) {
      throw new TypeError(`subscribe(name, params): params must be JSON: ${error.message}`);
    }
    const id = subscriptionId(name, copy);
    let waiter;
    const ready = new Promise((resolve, reject) => {
      waiter = { resolve, reject };
    });
    ready.catch(() => {}); // an unobserved refusal must not crash a Node process
    let mine = this._mine.get(id);
    let closed = false;
    const handle = Object.freeze({
      id, name, params: frozenCopy(copy), ready,
      close: () => {
        if (closed) return;
        closed = true;
        this._unsubscribe(id, mine, waiter);
      },
    });
    if (this._stopped) {
      closed = true;
      waiter.reject(this._stopError);
      return handle;
    }
    if (!mine) {
      if (this._mine.size >= MAX_SUBS) {
        closed = true;
        waiter.reject(new DSNError('invalid', `at most ${MAX_SUBS} subscriptions at once (PROTOCOL section 7): close one before subscribing to ${name}`));
        return handle;
      }
      mine = { name, params: copy, count: 0, waiters: new Set() };
      this._mine.set(id, mine);
    }
    mine.count++;
    mine.waiters.add(waiter);
    if (mine.count === 1) this._subsChanged();
    this._settleHandles();
    return handle;
  }

  /** Stops the feed and the sender, closes the database. Queued writes stay in the
   * outbox (in IndexedDB) for the next connectDSN; their promises reject with `closed`. */
  close() {
    if (!this._stopped) this._stop(new DSNError('closed', 'the client was closed'));
    // A write made just before is still being stored: the database closes once it is.
    const storing = this._outbox.filter((e) => e.id === undefined && e.saved).map((e) => e.saved.catch(() => {}));
    const storage = this._storage;
    if (storing.length) Promise.all(storing).then(() => storage.close());
    else storage.close();
  }

  /* ---------------- the mirror ---------------- */

  /** Loads the stored mirror; where IndexedDB refuses (NO_PERSISTENCE_ERRORS), carries
   * on in memory and reports it once. */
  async _load() {
    let loaded;
    try {
      if (this._storageRefused) throw this._storageRefused;
      loaded = await this._storage.load();
    } catch (error) {
      const refused = error === this._storageRefused || NO_PERSISTENCE_ERRORS.has(error?.name);
      if (this._stopped || !refused) throw error;
      this._storage.close();
      this._storage = new MemoryStorage();
      this._setStatus({
        state: this._status.state,
        code: 'no_persistence',
        message: `IndexedDB refused to open (${error?.name}: ${error?.message}), so the mirror and the queued writes ` +
          'are kept in memory: everything works, but nothing survives a reload',
      });
      loaded = await this._storage.load();
    }
    if (loaded.cursor) {
      const { epoch, seq, sv, tables } = loaded.cursor;
      this._cursor = Object.freeze({ epoch, seq, sv });
      this._schema = frozenCopy(tables ?? {});
    }
    this._tables = this._adoptStored(loaded);
    // Writes loaded from an earlier session go first, in their order.
    this._outbox = loaded.outbox.map((entry) => ({ ...entry, id: entry.n, saved: Promise.resolve() }));
    this._isLoaded = true;
    if (this._cursor) this._markSynced();
    this._settleHandles();
  }

  /** The mirror holds the server's data: waiting reads and listeners go. */
  _markSynced() {
    if (this._synced) return;
    this._synced = true;
    this._resolveFirstSync();
  }

  /** What getAll and get wait for: the stored mirror loaded, and on a first visit the
   * first sync, for at most firstSyncTimeout ms after connectDSN (then they answer from
   * the mirror as it stands, and the status says why). A stopped client answers at once. */
  async _untilFirstSync() {
    await this._loaded;
    if (this._synced || this._stopped) return;
    const left = this._firstSyncDeadline - Date.now();
    if (left > 0) {
      let timer;
      const late = new Promise((resolve) => {
        timer = setTimeout(resolve, left);
      });
      await Promise.race([this._firstSync, late, this._noInstance]);
      clearTimeout(timer);
    }
    if (this._synced || this._stopped) return;
    // Offline and error statuses already carry the failure; a server that took the
    // connection but has not answered leaves the state at 'connecting': say so.
    if (this._status.state === 'connecting' && this._status.code !== 'first_sync_timeout') {
      this._setStatus({
        state: 'connecting',
        code: 'first_sync_timeout',
        message: `no first sync from ${this._session.origin} within ${this._options.firstSyncTimeout} ms (options.firstSyncTimeout): ` +
          'getAll and get answer from the mirror as it stands (empty on a first visit) until it comes',
      });
    }
  }

  /** {key: record} of `table`: the server's state with the queued writes applied.
   * Built through a Map and Object.fromEntries, so that a key such as "__proto__" is
   * an own property like any other and never an object's prototype. */
  _view(table) {
    const all = new Map(this._tables.get(table));
    for (const write of this._outbox) {
      if (write.table !== table) continue;
      const record = applyWrite(all.get(write.key), write);
      if (record === undefined) all.delete(write.key);
      else all.set(write.key, record);
    }
    return Object.fromEntries(all);
  }

  /** Runs `body` with the mirror to itself: a pull being applied and an ack being
   * settled never interleave across their awaits. */
  _exclusive(body) {
    const run = this._mutex.then(body);
    this._mutex = run.catch(() => {});
    return run;
  }

  /** Calls the listeners of each table whose content differs from what they last got
   * (an ack that confirms an optimistic write changes nothing they can see). */
  _notify(tables) {
    for (const table of tables) {
      const listeners = [...(this._listeners.get(table) ?? [])].filter((listener) => listener.started);
      if (!listeners.length) continue;
      const all = this._view(table);
      if (sameRecords(this._delivered.get(table), all)) continue;
      this._delivered.set(table, all);
      for (const listener of listeners) this._deliver(listener, all);
    }
  }

  /** A callback that throws must not stop the others, nor the feed. */
  _deliver(callback, value) {
    try {
      callback(value);
    } catch (error) {
      console.error('dsn-sync: a callback threw', error);
    }
  }

  /** What onSync listeners get: frozen, as one object is shared by all of them. */
  _progress() {
    return Object.freeze({ cursor: this._cursor, pending: this._outbox.length });
  }

  /** Tells the onSync listeners that the cursor or the outbox may have moved. */
  _notifySync() {
    if (!this._syncListeners.size) return;
    const progress = this._progress();
    for (const listener of [...this._syncListeners]) this._deliver(listener, progress);
  }

  _setStatus(status) {
    const before = this._status;
    this._status = status;
    if (before.code === 'wrong_url' && status.code !== 'wrong_url') {
      // Past it (hello answered after all): a first visit's reads wait for the first sync again.
      this._noInstance = new Promise((resolve) => {
        this._resolveNoInstance = resolve;
      });
    }
    if (status.state === 'error' && status.code === 'wrong_url' && !this._synced) {
      // A first visit's reads answer now (the status says why), and a page that listens to
      // no status still learns it: the URL is stale, or lacks the mount's prefix.
      this._resolveNoInstance();
      if (!this._statusListeners.size && !this._warnedNoInstance) {
        this._warnedNoInstance = true;
        console.warn(`dsn-sync: ${status.message} (onStatus reports this and every later status)`);
      }
    }
    if (this._leading) this._post({ type: 'status', status });
    if (before.state === status.state && before.code === status.code && !status.reset && !before.reset && !status.blocked) return;
    for (const listener of [...this._statusListeners]) this._deliver(listener, status);
  }

  /* ---------------- writes and the outbox ---------------- */

  /** What a write made after the client stopped rejects with. */
  _notQueued() {
    return this._writeRefusal ?? this._stopError;
  }

  /** Checks the write, then (as soon as the mirror is loaded, at once after that) puts
   * it in the outbox and the mirror. Resolves true on the ack; rejects on refusal. */
  _write(op, table, key, data) {
    if (this._stopped) return Promise.reject(this._notQueued());
    if (typeof table !== 'string' || !TABLE_NAME.test(table)) {
      return Promise.reject(new DSNError('invalid', `a table name matches [A-Za-z_][A-Za-z0-9_-]{0,62}, not ${JSON.stringify(table)}`));
    }
    if (typeof key !== 'string' || !key || key.length > MAX_KEY_LENGTH) {
      return Promise.reject(new DSNError('invalid', `a key is a non-empty string of at most ${MAX_KEY_LENGTH} characters, not ${JSON.stringify(key)}`));
    }
    const entry = { op, table, key, mid: b64uEncode(randomBytes(12)) };
    if (op !== 'delete') {
      if (!isPlainObject(data)) return Promise.reject(new DSNError('invalid', `${op}(table, key, data): data must be an object, not ${JSON.stringify(data)}`));
      try {
        // JSON now, so that a value the wire cannot carry fails here and not in the sender.
        entry.data = JSON.parse(JSON.stringify(data, wireValue));
      } catch (error) {
        return Promise.reject(new DSNError('invalid', `${op}(table, key, data): data is not JSON: ${error.message}`));
      }
    }
    return this._isLoaded ? this._enqueue(entry) : this._loaded.then(() => this._enqueue(entry));
  }

  _enqueue(entry) {
    if (this._stopped) return Promise.reject(this._notQueued());
    const keyField = this._schema[entry.table]?.key;
    if (entry.data && keyField !== undefined && keyField in entry.data) {
      if (entry.data[keyField] !== entry.key) {
        return Promise.reject(new DSNError('invalid', `data.${keyField} is ${JSON.stringify(entry.data[keyField])} but the key is ${JSON.stringify(entry.key)}`));
      }
      delete entry.data[keyField];
    }
    const settled = new Promise((resolve, reject) => this._waiters.set(entry.mid, { resolve, reject }));
    this._outbox.push(entry);
    this._notify([entry.table]);
    this._notifySync();
    entry.saved = this._storage.addOutbox(entry).then((id) => {
      entry.id = id;
      this._wakeSender?.();
      if (!this._leading) this._post({ type: 'outbox' });
    }, (error) => {
      // Not durable, so not sent: take it back and say why (a DOMException, by name).
      this._outbox.splice(this._outbox.indexOf(entry), 1);
      this._notify([entry.table]);
      this._notifySync();
      this._waiters.get(entry.mid)?.reject(error);
      this._waiters.delete(entry.mid);
      throw error;
    });
    entry.saved.catch(() => {});
    return settled;
  }

  /** The sender's step: waits for a write to be queued, or sends the oldest. */
  async _sendStep() {
    if (!this._outbox.length) {
      await new Promise((resolve) => {
        this._wakeSender = resolve;
      });
      this._wakeSender = null;
      return;
    }
    await this._flush();
  }

  /** Sends the oldest queued writes (one, or several as a `batch`) and settles them. */
  async _flush() {
    // At most MAX_BATCH writes and about MAX_BATCH_BYTES of data in one request (the server
    // refuses a body over its max_body, 2 MiB by default), but always at least one write.
    let bytes = 0;
    const entries = this._outbox.slice(0, MAX_BATCH).filter((entry, i) => {
      bytes += entry.data === undefined ? 64 : JSON.stringify(entry.data).length + 64;
      return i === 0 || bytes <= MAX_BATCH_BYTES;
    });
    await Promise.all(entries.map((entry) => entry.saved));
    const mutation = ({ op, table, key, data, mid }) => (op === 'delete' ? { op, table, key, mid } : { op, table, key, data, mid });
    let results;
    if (entries.length === 1) {
      const { op, ...fields } = mutation(entries[0]);
      results = [await this._session.request(op, fields)];
    } else {
      const answer = await this._session.request('batch', { mutations: entries.map(mutation) });
      if (answer.ok && (!Array.isArray(answer.results) || answer.results.length !== entries.length)) {
        throw new DSNError('bad_response', `a batch of ${entries.length} writes was answered with ${answer.results?.length} results`);
      }
      results = answer.ok ? answer.results : entries.map(() => answer);
    }
    // A 1.0 server's acks carry no epoch: the best guess is the epoch as last heard now.
    const heard = this._epoch;
    await this._exclusive(() => this._settle(entries, results, heard));
    if (results.some((result) => !result.ok && RETRY_CODES.has(result.error?.code))) {
      throw new DSNError(results.find((result) => !result.ok).error.code, 'write to be sent again');
    }
  }

  /** Applies the answers of `entries`: acks to the mirror, refusals rolled back (their
   * optimistic change disappears with them from the outbox). */
  async _settle(entries, results, heard) {
    const touched = new Set();
    const done = [];
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i];
      const result = results[i];
      if (!result.ok && RETRY_CODES.has(result.error?.code)) continue;
      let change = null;
      let stored = null;
      if (result.ok && !this._ackIsStale(result, heard)) {
        change = [entry.table, entry.key, result.record ?? null];
        stored = change;
        const at = `${entry.table}\0${entry.key}`;
        if (Number.isInteger(result.seq)) this._acked.set(at, { epoch: result.epoch ?? heard, seq: result.seq });
        if (this._subMode && change[2] !== null && Number.isInteger(result.seq)) {
          // PROTOCOL section 7, Writes: kept until the feed passes the ack's seq, then
          // gone unless a subscription has claimed it by then (_applyChanges).
          this._probation.set(at, { epoch: result.epoch ?? heard, seq: result.seq });
          stored = [entry.table, entry.key, this._storedRow(entry.table, entry.key, change[2])];
        }
      }
      await this._storage.settleOutbox(entry.id, stored);
      if (change) this._setRecord(...change);
      this._outbox.splice(this._outbox.indexOf(entry), 1);
      touched.add(entry.table);
      done.push([entry, result, change]);
    }
    this._notify(touched);
    if (done.length) this._notifySync();
    // A long poll in flight would not wake for a write no subscription selects: cut it,
    // and the next pull (wait 0) takes the cursor past the ack (PROTOCOL section 7, Writes).
    if (this._probation.size) this._pullAbort?.abort();
    if (done.length && this._channel) {
      this._post({ type: 'settled', results: done.map(([entry, result, change]) => ({ mid: entry.mid, ok: !!result.ok, error: result.ok ? null : result.error ?? null, change })) });
    }
    for (const [entry, result] of done) {
      const waiter = this._waiters.get(entry.mid);
      this._waiters.delete(entry.mid);
      if (!waiter) continue;
      if (result.ok) waiter.resolve(true);
      else waiter.reject(new DSNError(result.error?.code ?? 'bad_response', result.error?.message ?? 'the server refused the write'));
    }
  }

  /** Whether the feed has already brought this ack's state or a newer one, so that the
   * ack must not touch the mirror. Its seq means something only in its epoch: protocol
   * 1.1 says which (`epoch` in every write answer); with a 1.0 server, `heard` (the
   * epoch as last heard when the answer came) is the guess. In the cursor's epoch, a
   * cursor at or past the seq has it. In another epoch (the server restarted and the
   * feed has not reset yet), the ack is newer than the mirror, so it goes in and is
   * guarded until that epoch's reset passes it; unless the feed has heard of yet another
   * epoch since the answer came, whose reset then brings the truth. */
  _ackIsStale(result, heard) {
    if (!Number.isInteger(result.seq) || !this._cursor) return false;
    const epoch = typeof result.epoch === 'string' ? result.epoch : heard;
    if (epoch === this._cursor.epoch) return this._cursor.seq >= result.seq;
    return this._epoch !== heard && this._epoch !== epoch;
  }

  /** One row of the mirror in memory; in subscription mode with its membership `ids`
   * (undefined: unchanged). A row that goes loses its membership and its probation. */
  _setRecord(table, key, record, ids = undefined) {
    if (!this._tables.has(table)) this._tables.set(table, new Map());
    if (record === null) {
      this._tables.get(table).delete(key);
      this._members.get(table)?.delete(key);
      this._probation.delete(`${table}\0${key}`);
      return;
    }
    this._tables.get(table).set(key, record);
    if (ids === undefined) return;
    if (!this._members.has(table)) this._members.set(table, new Map());
    this._members.get(table).set(key, ids);
  }

  /* ---------------- the feed ---------------- */

  /** Runs `step` again and again while this tab leads: after a failure it backs off
   * (exponential, reported), after a success it goes at once. The sender and the feed
   * are two of these. */
  async _loop(step) {
    const term = this._term;
    let failures = 0;
    while (!this._stopped && this._term === term) {
      try {
        await step();
        failures = 0;
      } catch (error) {
        if (this._stopped || this._term !== term) break;
        failures++;
        await this._backOff(error, failures);
      }
    }
  }

  async _pull() {
    await this._session.connected();
    // Subscription mode: the set goes with every pull, and `since` says which of it the
    // mirror holds (PROTOCOL section 7).
    let subs;
    if (this._subMode) {
      if (!this._serverSubs) {
        const error = new DSNError('unsupported', `the server at ${this.url} does not implement subscriptions (its hello ` +
          'lacks "subs": true; PROTOCOL section 7): update dsn_sync.py there, or do not call subscribe()');
        for (const mine of this._mine.values()) for (const waiter of mine.waiters) waiter.reject(error);
        for (const mine of this._mine.values()) mine.waiters.clear();
        throw error;
      }
      subs = Object.fromEntries([...this._subs].map(([id, { name, params }]) => [id, { name, params }]));
    }
    // A subscription the mirror does not hold yet comes as a partial reset, at once; and
    // an acked write waiting for the feed's word would wake no long poll if no held
    // subscription selects it, so the cursor must be taken past it without waiting
    // (PROTOCOL section 7, Writes).
    const catchingUp = subs && (this._probation.size > 0 || [...this._subs.keys()].some((id) => !this._held.has(id)));
    // A server mounted in a WSGI app holds a pull briefly (hello's `wait`) and may answer at
    // once when its threads are taken; it then asks for a pause (hello's `poll`) between pulls.
    const wait = this._fresh || catchingUp ? 0 : Math.min(this._options.wait, this._serverWait ?? Infinity);
    const began = Date.now();
    const since = this._cursor && { epoch: this._cursor.epoch, seq: this._cursor.seq, sv: this._cursor.sv };
    if (since && subs) since.subs = [...this._held];
    // A streamed pull (option `stream`): its messages are applied as they arrive, each as
    // an ordinary answer; when the stream ends (its `wait` ran out) the loop pulls again.
    const stream = this._options.stream && wait > 0;
    const fields = { since, wait };
    if (subs) fields.subs = subs;
    if (stream) fields.stream = true;
    // subscribe() cuts a long poll that asks for an older set (_reconcileSubs).
    const abort = (this._pullAbort = new AbortController());
    let answer;
    try {
      answer = await this._session.request('pull', fields, wait * 1000 + this._options.pullGrace,
        stream ? (message) => this._applyPull(message, fields) : undefined, abort.signal);
    } catch (error) {
      if (abort.signal.aborted && !this._stopped) return;
      throw error;
    } finally {
      if (this._pullAbort === abort) this._pullAbort = null;
    }
    if (answer === STREAMED) return;
    await this._applyPull(answer, fields);
    // Answered at once with nothing, its cursor where it was: the server asks for pacing. (A
    // cursor that moved is catching up past changes this token may not read: pull on.)
    const moved = Boolean(since) && answer.seq !== since.seq;
    if (this._serverPoll && !answer.reset && !answer.changes?.length && !moved && (wait === 0 || Date.now() - began < wait * 500)) {
      await this._sleep(this._serverPoll * 1000);
    }
  }

  /** One pull answer, or one message of a streamed pull: applied, then said. `request`
   * is the pull's fields, which its reset pages repeat. */
  async _applyPull(answer, request) {
    if (!answer.ok) {
      // A subscription refused by its function (or unknown): dropped, and the loop pulls
      // again at once without it (PROTOCOL section 7, Refusals).
      if (request?.subs && typeof answer.error?.sub === 'string') {
        await this._exclusive(() => this._refuse(answer.error));
        return;
      }
      throw new DSNError(answer.error?.code ?? 'bad_response', answer.error?.message ?? 'pull refused');
    }
    this._fresh = false;
    if (typeof answer.epoch === 'string') this._epoch = answer.epoch;
    if (answer.reset && answer.partial) {
      if (!await this._loadPartial(answer, request)) return;
    } else if (answer.reset) {
      if (!await this._loadReset(answer, request)) return;
    } else {
      await this._exclusive(() => this._applyChanges(answer));
    }
    this._setStatus({ state: 'online', epoch: this._cursor.epoch, seq: this._cursor.seq });
    this._notifySync();
    this._markSynced();
    this._resolveReady();
    if (this._restored.size && Date.now() >= this._restoreDue) await this._exclusive(() => this._releaseRestored());
  }

  /** A changes answer: every change applied in one step, then the cursor moves. In
   * subscription mode each entry carries the row's membership, an entry without one
   * takes the row out, and acknowledged writes the feed has now passed without a
   * subscription claiming them leave (PROTOCOL section 7, Writes). */
  async _applyChanges(answer) {
    if (!Array.isArray(answer.changes) || !Number.isInteger(answer.seq)) throw new DSNError('bad_response', 'a pull answer without changes or seq');
    const sv = answer.sv ?? this._cursor?.sv;
    const schema = answer.tables ? frozenCopy(answer.tables) : this._schema;
    // An ack at a higher seq than this answer is newer than what the answer says of
    // that key (the order note of PROTOCOL.md section 4).
    const epoch = answer.epoch ?? this._cursor?.epoch;
    let changes = answer.changes.filter(([table, key]) => {
      const acked = this._acked.get(`${table}\0${key}`);
      return !(acked && acked.epoch === epoch && acked.seq > answer.seq);
    });
    if (this._subMode) changes = this._withMembership(changes, epoch, answer.seq);
    const touched = new Set(changes.map(([table]) => table));
    await this._storage.ensureTables([...new Set([...Object.keys(schema), ...touched])]);
    const cursor = Object.freeze({ epoch, seq: answer.seq, sv });
    const stored = this._subMode ? changes.map(([table, key, record, ids]) => [table, key, this._storedRow(table, key, record, ids)]) : changes;
    await this._storage.saveChanges(this._storedCursor(cursor, schema), stored);
    for (const [table, key, record, ids] of changes) {
      this._probation.delete(`${table}\0${key}`);
      this._setRecord(table, key, record, ids);
    }
    this._post({ type: 'changes', from: this._cursor, cursor, schema, changes });
    this._cursor = cursor;
    this._schema = schema;
    for (const table of Object.keys(schema)) if (!this._tables.has(table)) this._tables.set(table, new Map());
    this._forgetAcks();
    this._notify(touched);
  }

  /** Subscription mode: the entries of a changes answer as [table, key, record, ids],
   * `ids` cut to the held subscriptions (one closed while the answer travelled no longer
   * counts) and a row that none selects going as [table, key, null, []]; then one entry
   * for each acknowledged write whose seq the answer covers: gone if no subscription has
   * claimed it, kept (its probation over) if one has. */
  _withMembership(changes, epoch, seq) {
    const out = changes.map(([table, key, record, ids]) => {
      const held = Array.isArray(ids) ? ids.filter((id) => this._held.has(id)) : [];
      return record === null || !held.length ? [table, key, null, []] : [table, key, record, held];
    });
    const named = new Set(out.map(([table, key]) => `${table}\0${key}`));
    for (const [at, due] of this._probation) {
      if (named.has(at) || (due.epoch === epoch && due.seq > seq)) continue;
      const [table, key] = at.split('\0');
      const record = this._tables.get(table)?.get(key);
      const ids = this._members.get(table)?.get(key) ?? [];
      out.push(record === undefined || !ids.length || due.epoch !== epoch ? [table, key, null, []] : [table, key, record, ids]);
    }
    return out;
  }

  /** A reset: pages gathered until `more` is false, then applied at once, replacing
   * every table (a table absent from the records is empty). In subscription mode each
   * page holds the rows of one subscription (`sub`), which become their membership.
   * Answers false when a page was a refusal (handled; the loop pulls again). */
  async _loadReset(first, request) {
    let page = first;
    let records = new Map(); // table -> Map(key -> record)
    let members = new Map(); // table -> Map(key -> Set of ids), in subscription mode
    let seen = new Set();    // the subscriptions the pages came for
    let pages = 0;
    for (;;) {
      if (!isPlainObject(page.records) || !Number.isInteger(page.seq)) throw new DSNError('bad_response', 'a reset page without records or seq');
      pages++;
      const sub = request?.subs && typeof page.sub === 'string' ? page.sub : null;
      if (sub) seen.add(sub);
      for (const [table, rows] of Object.entries(page.records)) {
        if (!records.has(table)) records.set(table, new Map());
        const stored = records.get(table);
        for (const [key, record] of Object.entries(rows)) stored.set(key, record);
        if (!sub) continue;
        if (!members.has(table)) members.set(table, new Map());
        const ids = members.get(table);
        for (const key of Object.keys(rows)) {
          if (!ids.has(key)) ids.set(key, new Set());
          ids.get(key).add(sub);
        }
      }
      const counts = Object.fromEntries([...records].map(([table, rows]) => [table, rows.size]));
      // Talking to the server, so no longer offline; online only once the data is in.
      const state = this._status.state === 'online' ? 'online' : 'connecting';
      this._setStatus({ state, reset: { pages, records: counts, done: !page.more } });
      if (!page.more) break;
      const fields = { since: null, next: page.next, wait: 0 };
      if (request?.subs) fields.subs = request.subs;
      const next = await this._session.request('pull', fields);
      if (!next.ok && request?.subs && typeof next.error?.sub === 'string') {
        await this._exclusive(() => this._refuse(next.error));
        return false;
      }
      if (!next.ok) throw new DSNError(next.error?.code ?? 'bad_response', next.error?.message ?? 'reset page refused');
      if (!next.reset || next.partial) throw new DSNError('bad_response', 'asked for the next page of a reset, got changes');
      if (next.epoch !== page.epoch || next.seq !== page.seq) {
        records = new Map(); // the server forgot `next` and started a fresh reset
        members = new Map();
        seen = new Set();
        pages = 0;
      }
      page = next;
    }
    return this._exclusive(() => this._applyReset(page, records, request?.subs ? { members, seen } : null));
  }

  /** Answers false, changing nothing, for a reset of whole tables that arrives after
   * the first subscribe() (it was asked for before): the loop pulls again. */
  async _applyReset(page, records, subscribed = null) {
    if (this._subMode && !subscribed) return false;
    // Acks of another epoch than the snapshot's say nothing about it.
    for (const [id, acked] of this._acked) if (acked.epoch !== page.epoch) this._acked.delete(id);
    const schema = frozenCopy(page.tables ?? {});
    const tables = new Map();
    for (const name of new Set([...Object.keys(schema), ...records.keys()])) {
      tables.set(name, records.get(name) ?? new Map());
    }
    // Subscription mode: the mirror holds exactly the subscriptions the pages came for
    // (less any closed meanwhile), each row with the ids of those that selected it.
    const held = subscribed ? new Set([...subscribed.seen].filter((id) => this._subs.has(id))) : this._held;
    const members = new Map();
    const probation = new Map();
    if (subscribed) {
      for (const [name, rows] of tables) {
        const ids = new Map();
        for (const key of [...rows.keys()]) {
          const selected = [...(subscribed.members.get(name)?.get(key) ?? [])].filter((id) => held.has(id));
          if (selected.length) ids.set(key, selected);
          else rows.delete(key);
        }
        members.set(name, ids);
      }
    }
    for (const [id, { seq }] of this._acked) {
      if (seq <= page.seq) continue;
      const [table, key] = id.split('\0');
      const record = this._tables.get(table)?.get(key);
      if (!tables.has(table)) tables.set(table, new Map());
      if (record === undefined) tables.get(table).delete(key);
      else tables.get(table).set(key, record);
      if (!subscribed || record === undefined) continue;
      if (!members.has(table)) members.set(table, new Map());
      members.get(table).set(key, (this._members.get(table)?.get(key) ?? []).filter((sub) => held.has(sub)));
      if (this._probation.has(id)) probation.set(id, this._probation.get(id));
    }
    const touched = new Set([...this._tables.keys(), ...tables.keys()]);
    for (const name of touched) if (!tables.has(name)) tables.set(name, new Map());
    await this._storage.ensureTables([...tables.keys()]);
    const cursor = Object.freeze({ epoch: page.epoch, seq: page.seq, sv: page.sv });
    let stored = tables;
    if (subscribed) {
      stored = new Map();
      for (const [name, rows] of tables) {
        const values = new Map();
        for (const [key, record] of rows) {
          const due = probation.get(`${name}\0${key}`);
          const ids = members.get(name)?.get(key) ?? [];
          values.set(key, due ? [record, ids, due] : [record, ids]);
        }
        stored.set(name, values);
      }
    }
    await this._storage.saveReset(this._storedCursor(cursor, schema, held), stored);
    this._post({ type: 'reset' });
    this._tables = tables;
    if (subscribed) {
      this._members = members;
      this._probation = probation;
      this._held = held;
    }
    this._cursor = cursor;
    this._schema = schema;
    this._forgetAcks();
    this._notify(touched);
    this._settleHandles();
    return true;
  }

  /** A partial reset (PROTOCOL section 7): the pages of one new subscription, gathered
   * (the pull's `since` and `subs` repeated with each `next`), then added to the mirror
   * without moving the cursor. Answers false when the reset could not be finished here
   * (a refusal, handled, or the server started over with something else): the loop
   * pulls again. */
  async _loadPartial(first, request) {
    const sub = first.sub;
    let page = first;
    let records = new Map();
    for (;;) {
      if (!isPlainObject(page.records) || !Number.isInteger(page.seq) || typeof sub !== 'string') {
        throw new DSNError('bad_response', 'a partial reset page without records, seq or sub');
      }
      for (const [table, rows] of Object.entries(page.records)) {
        if (!records.has(table)) records.set(table, new Map());
        const stored = records.get(table);
        for (const [key, record] of Object.entries(rows)) stored.set(key, record);
      }
      if (!page.more) break;
      const next = await this._session.request('pull', { since: request.since, subs: request.subs, next: page.next, wait: 0 });
      if (!next.ok && typeof next.error?.sub === 'string') {
        await this._exclusive(() => this._refuse(next.error));
        return false;
      }
      if (!next.ok) throw new DSNError(next.error?.code ?? 'bad_response', next.error?.message ?? 'partial reset page refused');
      // The server forgot `next`: a fresh reset of the same subscription starts over; any
      // other answer is for a set or cursor that has moved on, so pull again.
      if (!next.reset || !next.partial || next.sub !== sub) return false;
      if (next.seq !== page.seq || next.epoch !== page.epoch) records = new Map();
      page = next;
    }
    await this._exclusive(() => this._applyPartial(sub, page, records));
    return true;
  }

  async _applyPartial(sub, page, records) {
    // Closed while its pages came, or the feed has moved to another epoch: drop it.
    if (!this._subs.has(sub) || this._held.has(sub) || page.epoch !== this._cursor?.epoch) return;
    const changes = [];
    for (const [table, rows] of records) {
      for (const [key, record] of rows) {
        const acked = this._acked.get(`${table}\0${key}`);
        const newer = acked && acked.epoch === page.epoch && acked.seq > page.seq && this._tables.get(table)?.has(key);
        const ids = [...(this._members.get(table)?.get(key) ?? []).filter((id) => id !== sub), sub];
        changes.push([table, key, newer ? this._tables.get(table).get(key) : record, ids]);
      }
    }
    const touched = new Set(changes.map(([table]) => table));
    await this._storage.ensureTables([...touched]);
    const held = new Set([...this._held, sub]);
    await this._storage.saveChanges(this._storedCursor(this._cursor, this._schema, held),
      changes.map(([table, key, record, ids]) => [table, key, this._storedRow(table, key, record, ids)]));
    for (const [table, key, record, ids] of changes) this._setRecord(table, key, record, ids);
    this._held = held;
    this._post({ type: 'reset' });
    this._notify(touched);
    this._settleHandles();
  }

  /** Acks the cursor has passed need no more guarding. */
  _forgetAcks() {
    for (const [id, { epoch, seq }] of this._acked) {
      if (epoch === this._cursor.epoch && seq <= this._cursor.seq) this._acked.delete(id);
    }
  }

  /* ---------------- subscriptions (PROTOCOL section 7) ---------------- */

  // Each tab counts its own subscribe() handles per subscription id (`_mine`). The tab
  // that leads (the only one without tabs) owns the set the feed asks for (`_subs`,
  // stored): the union of its own ids and of those each other tab says it holds
  // ({type: 'subs'} messages, whole sets, so a lost or repeated one does no harm), plus
  // the stored ones not yet adopted after a reload (`_restored`). _reconcileSubs brings
  // `_subs` to that union: an id added is asked for at once (the long poll in flight is
  // cut, and the next pull gets its partial reset); an id gone leaves `_held`, and the
  // rows no other held subscription selects leave the mirror, without asking the
  // server. A tab holds a Web Lock of its own while it lives; the leader queues for
  // that lock, so it is granted exactly when the tab is closed, discarded or stopped,
  // and that tab's subscriptions are released then.
  //
  // Restored subscriptions (stored ones that no subscribe() has asked for since this
  // tab took the lead) are held, and readable offline, until `restoreGrace` ms have
  // passed and a pull has succeeded: then those still not adopted are released. So a
  // page that subscribes again as it starts keeps its rows across the reload without a
  // partial reset, and one that moved on (another room) does not keep the old rows.

  /** Takes the stored mirror: the subscription set and membership in subscription mode
   * (rows as [record, ids] or [record, ids, probation]). Answers table -> Map(key -> record). */
  _adoptStored(loaded) {
    this._subMode = isPlainObject(loaded.subs);
    this._subs = new Map(this._subMode ? Object.entries(loaded.subs) : []);
    this._held = new Set((loaded.cursor?.subs ?? []).filter((id) => this._subs.has(id)));
    this._members = new Map();
    this._probation = new Map();
    if (!this._subMode) return loaded.tables;
    const tables = new Map();
    for (const [name, rows] of loaded.tables) {
      const records = new Map();
      const members = new Map();
      for (const [key, row] of rows) {
        if (!Array.isArray(row)) continue; // stored before subscription mode: not the union's
        records.set(key, row[0]);
        members.set(key, row[1]);
        if (row[2]) this._probation.set(`${name}\0${key}`, row[2]);
      }
      tables.set(name, records);
      this._members.set(name, members);
    }
    return tables;
  }

  /** What the storage keeps for a row: the record, or in subscription mode
   * [record, ids] (with its probation, [record, ids, {epoch, seq}]); null: gone. */
  _storedRow(table, key, record, ids = undefined, due = this._probation.get(`${table}\0${key}`)) {
    if (record === null) return null;
    if (!this._subMode) return record;
    const members = ids ?? this._members.get(table)?.get(key) ?? [];
    return due ? [record, members, due] : [record, members];
  }

  /** The stored cursor: where the mirror stands, the schema, and in subscription mode
   * the held subscriptions (`since.subs`); null without a cursor. */
  _storedCursor(cursor, schema = this._schema, held = this._held) {
    if (!cursor) return null;
    const stored = { epoch: cursor.epoch, seq: cursor.seq, sv: cursor.sv, tables: schema };
    if (this._subMode) stored.subs = [...held];
    return stored;
  }

  /** Resolves the ready of every handle whose subscription the mirror now holds. */
  _settleHandles() {
    if (!this._isLoaded) return;
    for (const [id, mine] of this._mine) {
      if (!mine.waiters.size || !this._held.has(id)) continue;
      for (const waiter of mine.waiters) waiter.resolve();
      mine.waiters.clear();
    }
  }

  /** A handle closed: one use fewer of `mine` (unless it has been refused meanwhile). */
  _unsubscribe(id, mine, waiter) {
    if (mine.waiters.delete(waiter)) waiter.reject(new DSNError('closed', `the subscription ${mine.name} ${JSON.stringify(mine.params)} was closed before its rows came`));
    if (this._mine.get(id) !== mine) return;
    if (--mine.count > 0) return;
    this._mine.delete(id);
    this._subsChanged();
  }

  /** This tab's set changed: the leader reconciles; a follower tells the leader. */
  _subsChanged() {
    if (!this._isLoaded || this._stopped) return;
    if (this._leading) this._exclusive(() => this._reconcileSubs()).catch((error) => console.error('dsn-sync: changing the subscriptions failed', error));
    else this._post({ type: 'subs', tab: this._tabId, subs: this._mineDefs() });
  }

  /** This tab's subscriptions as {id: {name, params}}. */
  _mineDefs() {
    return Object.fromEntries([...this._mine].map(([id, { name, params }]) => [id, { name, params }]));
  }

  /** The union the feed should ask for: this tab's and every other live tab's. */
  _wanted() {
    const wanted = new Map(Object.entries(this._mineDefs()));
    for (const subs of this._tabSubs.values()) {
      for (const [id, def] of Object.entries(subs)) {
        if (!wanted.has(id) && isPlainObject(def) && typeof def.name === 'string' && isPlainObject(def.params)) wanted.set(id, def);
      }
    }
    return wanted;
  }

  /** The leader brings the set to what the tabs want (see the section's comment): one
   * stored step, set and rows together; the followers reload; a long poll in flight is
   * cut when a subscription was added. */
  async _reconcileSubs() {
    if (!this._leading || this._stopped) return;
    const wanted = this._wanted();
    for (const id of this._restored) if (wanted.has(id) || !this._subs.has(id)) this._restored.delete(id);
    const added = [...wanted.keys()].filter((id) => !this._subs.has(id));
    const dropped = [...this._subs.keys()].filter((id) => !wanted.has(id) && !this._restored.has(id));
    if (!added.length && !dropped.length) return;
    const over = added.splice(Math.max(0, MAX_SUBS - (this._subs.size - dropped.length)));
    for (const id of over) {
      this._refuseEverywhere(id, 'invalid', `at most ${MAX_SUBS} subscriptions at once among this app's tabs (PROTOCOL section 7): close one first`);
    }
    const entering = !this._subMode;
    const subs = new Map(this._subs);
    for (const id of added) subs.set(id, { name: wanted.get(id).name, params: wanted.get(id).params });
    for (const id of dropped) subs.delete(id);
    const held = new Set([...this._held].filter((id) => subs.has(id)));
    // Entering subscription mode, the whole tables go: the union of no subscription
    // yet is empty. Otherwise the rows of the dropped subscriptions lose them, and those
    // left with none (and no write waiting for the feed's word) go.
    const changes = [];
    for (const [table, rows] of this._tables) {
      for (const key of rows.keys()) {
        if (entering) {
          changes.push([table, key, null, []]);
          continue;
        }
        const ids = this._members.get(table)?.get(key) ?? [];
        if (!ids.some((id) => !held.has(id))) continue;
        const left = ids.filter((id) => held.has(id));
        const waiting = this._probation.has(`${table}\0${key}`);
        changes.push(left.length || waiting ? [table, key, rows.get(key), left] : [table, key, null, []]);
      }
    }
    this._subMode = true;
    const stored = changes.map(([table, key, record, ids]) => [table, key, this._storedRow(table, key, record, ids)]);
    await this._storage.saveChanges(this._storedCursor(this._cursor, this._schema, held), stored,
      Object.fromEntries([...subs].map(([id, def]) => [id, def])));
    if (entering) this._probation.clear();
    for (const [table, key, record, ids] of changes) this._setRecord(table, key, record, ids);
    this._subs = subs;
    this._held = held;
    this._post({ type: 'reset' });
    this._notify(new Set(changes.map(([table]) => table)));
    this._settleHandles();
    if (added.length) this._pullAbort?.abort();
  }

  /** A pull refused one subscription (`error.sub`): it is dropped everywhere, its rows
   * with it, and the feed goes on without it. An id not in the set is a real failure. */
  async _refuse(error) {
    const id = error.sub;
    if (!this._subs.has(id)) throw new DSNError(error.code ?? 'bad_response', error.message ?? 'pull refused');
    this._refuseEverywhere(id, error.code ?? 'invalid', error.message ?? `the server refused subscription ${id}`);
    this._restored.delete(id);
    await this._reconcileSubs();
  }

  /** Every tab that wants `id` is told that it is refused: out of their sets, their
   * handles' ready rejected. */
  _refuseEverywhere(id, code, message) {
    for (const subs of this._tabSubs.values()) delete subs[id];
    this._post({ type: 'refused', id, code, message });
    this._subRefused(id, code, message);
  }

  /** This tab's handles of `id` refused: ready rejects, and later close() does nothing. */
  _subRefused(id, code, message) {
    const mine = this._mine.get(id);
    if (!mine) return;
    this._mine.delete(id);
    const error = new DSNError(code, message);
    error.sub = id;
    for (const waiter of mine.waiters) waiter.reject(error);
    mine.waiters.clear();
  }

  /** On taking the lead: the stored subscriptions are restored ones until adopted. */
  _beginRestore() {
    clearTimeout(this._restoreTimer);
    this._restored = new Set(this._subs.keys());
    this._restoreDue = Date.now() + this._options.restoreGrace;
    if (!this._restored.size) return;
    this._restoreTimer = setTimeout(() => {
      // Online: release now. Otherwise the first successful pull will (_applyPull).
      if (this._leading && this._status.state === 'online') {
        this._exclusive(() => this._releaseRestored()).catch((error) => console.error('dsn-sync: releasing restored subscriptions failed', error));
      }
    }, this._options.restoreGrace);
  }

  /** Restored subscriptions that no subscribe() adopted in time are released. */
  async _releaseRestored() {
    if (!this._restored.size) return;
    this._restored.clear();
    await this._reconcileSubs();
  }

  /** The leader waits for another tab's own lock, which it gets when that tab is gone:
   * then that tab's subscriptions are released. */
  _watchTab(tab) {
    if (this._tabWatch.has(tab) || !this._lockName) return;
    const watch = new AbortController();
    this._tabWatch.set(tab, watch);
    globalThis.navigator.locks.request(`${this._lockName} tab ${tab}`, { signal: watch.signal }, () => {
      if (this._tabWatch.get(tab) !== watch) return;
      this._tabWatch.delete(tab);
      this._tabSubs.delete(tab);
      if (this._leading) this._exclusive(() => this._reconcileSubs()).catch((error) => console.error('dsn-sync: releasing a closed tab\'s subscriptions failed', error));
    }).catch((error) => {
      if (error?.name !== 'AbortError') console.error('dsn-sync: watching a tab failed', error);
    });
  }

  /** Stops watching the other tabs (the lead is given away or the client stops). */
  _forgetTabs() {
    for (const watch of this._tabWatch.values()) watch.abort();
    this._tabWatch.clear();
    this._tabSubs.clear();
    clearTimeout(this._restoreTimer);
  }

  /* ---------------- one connection for many tabs ---------------- */

  // A browser gives a host about six HTTP/1.1 connections, and every tab's long poll
  // holds one: the seventh tab of an app would get nothing. So the tabs of one profile
  // that share a database and a sync URL elect one leader with the Web Locks API; only
  // it pulls and sends. It tells the others through a BroadcastChannel what it applied
  // (changes, resets, answered writes, its status); they apply the same to their mirror
  // in memory, while IndexedDB holds the truth for all. A follower's write goes into the
  // shared outbox (IndexedDB, with its stable mid) and the leader is told to send it; a
  // leader that closes, freezes or is discarded lets the lock go, the next tab in line
  // takes it, loads the outbox and sends what is unanswered, and the server's mid ledger
  // applies a write that the old leader had already sent only once.
  //
  //     leader -> all:  {type: 'changes', from, cursor, schema, changes} | {type: 'reset'}
  //                     | {type: 'settled', results: [{mid, ok, error, change}]}
  //                     | {type: 'status', status} | {type: 'leader', live, cursor, status}
  //                       (on taking the lead, and in answer to a hello)
  //                     | {type: 'refused', id, code, message} (a subscription refused)
  //     tab -> leader:  {type: 'outbox'} (a write queued) | {type: 'hello'} (a tab started)
  //                     | {type: 'subs', tab, subs} (the subscriptions that tab holds now)

  /** Loads the stored mirror, then leads: alone, or when elected among the tabs. */
  async _start() {
    try {
      await this._loaded;
    } catch (error) {
      this._setStatus({ state: 'error', code: error?.name ?? 'storage', message: `the mirror could not be opened: ${error?.message}` });
      this._stop(error);
      return;
    }
    if (this._stopped) return;
    const locks = globalThis.navigator?.locks;
    const shared = this._options.tabs && this._storage instanceof IndexedDBStorage
      && typeof locks?.request === 'function' && typeof globalThis.BroadcastChannel === 'function';
    if (!shared) {
      this._lead();
      return;
    }
    const { origin, prefix, basePath } = this._session;
    const name = `dsn-sync ${this._storage.name} ${origin}${prefix}${basePath}`;
    // This tab's own lock, held while it lives: the leader queues for it to learn when
    // the tab is gone (_watchTab). Held before the tab says anything.
    await new Promise((held) => {
      locks.request(`${name} tab ${this._tabId}`, () => {
        held();
        return new Promise((release) => {
          this._releaseTab = release;
        });
      }).catch((error) => {
        held();
        console.error('dsn-sync: the tab\'s own lock failed', error);
      });
    });
    if (this._stopped) {
      this._releaseTab?.();
      return;
    }
    this._channel = new BroadcastChannel(name);
    this._channel.onmessage = (event) => {
      this._exclusive(() => this._onTabMessage(event.data)).catch((error) => console.error('dsn-sync: a message from another tab failed', error));
    };
    this._lockName = name;
    this._post({ type: 'hello' });
    this._campaign();
    // A frozen or cached page keeps its locks: give the lead away, ask again on return.
    this._onFreeze = (event) => {
      if (event.type === 'freeze' || event.persisted) this._stepDown();
    };
    this._onResume = (event) => {
      if (event.type === 'resume' || event.persisted) this._campaign();
    };
    globalThis.document?.addEventListener?.('freeze', this._onFreeze);
    globalThis.addEventListener?.('pagehide', this._onFreeze);
    globalThis.document?.addEventListener?.('resume', this._onResume);
    globalThis.addEventListener?.('pageshow', this._onResume);
  }

  /** Asks for the lead; the lock is held (the callback's promise pending) while leading. */
  _campaign() {
    if (this._stopped || this._leading || this._campaigning) return;
    const campaign = (this._campaigning = new AbortController());
    globalThis.navigator.locks.request(this._lockName, { signal: campaign.signal }, () => this._lead())
      .catch((error) => {
        if (error?.name !== 'AbortError') console.error('dsn-sync: the tabs\' lock failed', error);
      })
      .finally(() => {
        if (this._campaigning === campaign) this._campaigning = null;
      });
  }

  /** Runs the feed and the sender until the lead is given away or the client stops;
   * resolves then (which lets the lock go). */
  async _lead() {
    if (this._stopped) return;
    const term = ++this._term;
    this._leading = true;
    const over = new Promise((resolve) => {
      this._release = resolve;
    });
    if (this._channel) {
      try {
        // Catch up with what the last leader stored, then take its unanswered writes.
        const stored = await this._storage.loadCursor();
        if (stored && (stored.epoch !== this._cursor?.epoch || stored.seq !== this._cursor?.seq)) {
          await this._exclusive(() => this._reloadMirror());
        }
        await this._adoptOutbox();
      } catch (error) {
        console.error('dsn-sync: taking over from another tab', error);
      }
      this._post({ type: 'leader', live: false });
      if (this._term !== term) return;
      this._session.forget();
      this._fresh = true;
    }
    // The stored subscriptions are held until this tab's and the others' (who answer
    // the 'leader' message with theirs) adopt them, or restoreGrace passes.
    this._beginRestore();
    await this._exclusive(() => this._reconcileSubs()).catch((error) => console.error('dsn-sync: restoring the subscriptions failed', error));
    if (this._term !== term) return;
    this._loop(() => this._pull());
    this._loop(() => this._sendStep());
    await over;
  }

  /** Gives the lead away (a frozen or hidden page): stops the loops, lets the lock go;
   * or, not leading, stops waiting for it. `resume` or `pageshow` asks again. */
  _stepDown() {
    // Waiting in line: leave it, so that a frozen tab is never handed the lock.
    this._campaigning?.abort();
    this._campaigning = null;
    if (!this._leading) return;
    this._leading = false;
    this._forgetTabs();
    this._term++;
    this._session.abortAll();
    this._wakeAll();
    this._wakeSender?.();
    this._release?.();
  }

  _post(message) {
    try {
      this._channel?.postMessage(message);
    } catch (error) {
      console.error('dsn-sync: telling the other tabs failed', error);
    }
  }

  /** Adds to the outbox what other tabs queued in IndexedDB and this tab does not hold. */
  async _adoptOutbox() {
    const stored = await this._storage.loadOutbox();
    const known = new Set(this._outbox.map((entry) => entry.mid));
    let added = false;
    for (const { n, op, table, key, data, mid } of stored) {
      if (known.has(mid)) continue;
      const entry = op === 'delete' ? { op, table, key, mid } : { op, table, key, data, mid };
      this._outbox.push({ ...entry, id: n, saved: Promise.resolve() });
      added = true;
    }
    if (added) {
      this._notify(new Set(stored.map((entry) => entry.table)));
      this._notifySync();
      this._wakeSender?.();
    }
  }

  /** The mirror in memory replaced by the stored one (a follower after a reset, or one
   * that fell behind). The outbox in memory stays. */
  async _reloadMirror() {
    const loaded = await this._storage.load();
    const touched = new Set([...this._tables.keys(), ...loaded.tables.keys()]);
    this._tables = this._adoptStored(loaded);
    if (loaded.cursor) {
      const { epoch, seq, sv, tables } = loaded.cursor;
      this._cursor = Object.freeze({ epoch, seq, sv });
      this._schema = frozenCopy(tables ?? {});
    }
    this._notify(touched);
    this._notifySync();
    this._settleHandles();
  }

  /** What the leader says, applied by a follower; and what a follower asks of the leader. */
  async _onTabMessage(message) {
    if (this._stopped || !isPlainObject(message)) return;
    if (this._leading) {
      if (message.type === 'outbox') await this._adoptOutbox();
      else if (message.type === 'hello') this._post({ type: 'leader', live: !this._fresh, cursor: this._cursor, status: this._status });
      else if (message.type === 'subs' && typeof message.tab === 'string' && isPlainObject(message.subs)) {
        this._tabSubs.set(message.tab, message.subs);
        this._watchTab(message.tab);
        await this._reconcileSubs();
      }
      return;
    }
    if (message.type === 'changes') {
      await this._followChanges(message);
    } else if (message.type === 'reset') {
      await this._reloadMirror();
      this._followed();
    } else if (message.type === 'settled') {
      this._followSettled(message.results);
    } else if (message.type === 'status') {
      this._setStatus(message.status);
    } else if (message.type === 'refused') {
      this._subRefused(message.id, message.code, message.message);
      this._subsChanged();
    } else if (message.type === 'leader') {
      // A new leader knows no tab's subscriptions yet: tell it this one's.
      if (this._mine.size) this._subsChanged();
      await this._recoverOutbox();
      if (!message.live) return;
      const { cursor } = message;
      if (cursor && (cursor.epoch !== this._cursor?.epoch || cursor.seq !== this._cursor?.seq)) await this._reloadMirror();
      this._setStatus(message.status);
      this._followed();
    }
  }

  /** A leader that stored a write's answer and died before saying so leaves the write's
   * promise waiting in the tab that made it: the write is gone from the shared outbox,
   * and no 'settled' comes. So when a leader appears, this tab puts such writes back
   * (same mid) for it to send again; the server's mid ledger answers with the answer it
   * gave the first time, and that one settles the promise. */
  async _recoverOutbox() {
    const mine = this._outbox.filter((entry) => entry.id !== undefined && this._waiters.has(entry.mid));
    if (!mine.length) return;
    const stored = new Set((await this._storage.loadOutbox()).map((entry) => entry.mid));
    const lost = mine.filter((entry) => !stored.has(entry.mid) && this._waiters.has(entry.mid));
    for (const entry of lost) entry.id = await this._storage.addOutbox(entry);
    if (lost.length) this._post({ type: 'outbox' });
  }

  /** The leader applied a changes answer: the same here if this mirror stood where the
   * leader's did; nothing if it is already there (loaded after the leader stored it);
   * else (a message missed) the stored mirror is loaded. */
  async _followChanges({ from, cursor, schema, changes }) {
    const here = this._cursor;
    const current = here && here.epoch === cursor.epoch && here.seq >= cursor.seq && here.sv === cursor.sv;
    if (!current && here && from && here.epoch === from.epoch && here.seq === from.seq) {
      for (const [table, key, record, ids] of changes) this._setRecord(table, key, record, ids);
      this._cursor = Object.freeze({ ...cursor });
      this._schema = frozenCopy(schema);
      this._notify(new Set(changes.map(([table]) => table)));
      this._notifySync();
    } else if (!current) {
      await this._reloadMirror();
    }
    this._followed();
  }

  /** The leader had writes answered: their records to the mirror, this tab's own writes
   * out of its outbox, their promises settled. */
  _followSettled(results) {
    const touched = new Set();
    for (const { mid, ok, error, change } of results) {
      if (change) {
        this._setRecord(...change);
        touched.add(change[0]);
      }
      const at = this._outbox.findIndex((entry) => entry.mid === mid);
      if (at >= 0) {
        touched.add(this._outbox[at].table);
        this._outbox.splice(at, 1);
      }
      const waiter = this._waiters.get(mid);
      this._waiters.delete(mid);
      if (!waiter) continue;
      if (ok) waiter.resolve(true);
      else waiter.reject(new DSNError(error?.code ?? 'bad_response', error?.message ?? 'the server refused the write'));
    }
    this._notify(touched);
    this._notifySync();
  }


  /** A follower's mirror has followed a leader's pull: it counts as this tab's sync
   * (ready resolves, waiting reads go) once there is a cursor. */
  _followed() {
    if (!this._cursor) return;
    this._markSynced();
    this._resolveReady();
  }

  /* ---------------- the session's hooks ---------------- */

  /** A hello answered: the schema, the epoch and the server's protocol version noted,
   * a store for every table; the next pull does not wait. */
  async _hello(answer) {
    if (answer.tables) this._schema = frozenCopy(answer.tables);
    if (typeof answer.epoch === 'string') this._epoch = answer.epoch;
    this._serverVersion = typeof answer.pv === 'string' ? answer.pv : '1.0';
    this._serverSubs = answer.subs === true;
    this._serverWait = Number.isFinite(answer.wait) && answer.wait >= 0 ? answer.wait : undefined;
    this._serverPoll = Number.isFinite(answer.poll) && answer.poll > 0 ? Math.min(answer.poll, 60) : 0;
    await this._storage.ensureTables(Object.keys(this._schema));
    this._fresh = true;
  }

  /** A string token the server refused (`code`: `unauthorized` for a 401, `expired`): stop,
   * keeping the outbox for a fresh token. */
  _tokenDead(code, message) {
    this._setStatus({ state: 'error', code, message: `${message}; queued writes are kept for a fresh token` });
    this._writeRefusal = new DSNError(code, `${message}: the client has stopped, so this write was not queued; `
      + 'connect again with a fresh token (or give connectDSN a token function)');
    this._stop(new DSNError(code, `${message}: the client has stopped; writes queued before are kept for a client `
      + 'with a fresh token (or give connectDSN a token function)'));
  }

  /** An answer opened: the server is back, so whichever loop is still sleeping off the
   * outage goes now, and the status says online once the feed is current. */
  _answered() {
    if (this._status.state === 'offline') this._wakeAll();
    if (this._status.state !== 'online' && this._cursor && !this._fresh) {
      this._setStatus({ state: 'online', epoch: this._cursor.epoch, seq: this._cursor.seq });
    }
  }

  /** The endpoint and the clock offset, for tests and tools (the session owns them). */
  get _ep() {
    return this._session.ep;
  }

  set _ep(path) {
    this._session.ep = path;
  }

  get _offset() {
    return this._session.offset;
  }

  set _offset(ms) {
    this._session.offset = ms;
  }

  /* ---------------- failures, backoff, stop ---------------- */

  /** Reports the failure, then sleeps: exponential from retryMin to retryMax, with
   * jitter so that many clients do not return at the same instant. */
  async _backOff(error, failures) {
    if (this._stopped) return;
    const base = Math.min(this._options.retryMax, this._options.retryMin * 2 ** (failures - 1));
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    const transport = error?.code === 'offline' || (error?.status && error.status !== 401 && error.status !== 404);
    this._fresh = true;
    if (transport) {
      this._setStatus({ state: 'offline', code: error.status ? `http_${error.status}` : 'offline', message: error.message, retryIn: delay });
    } else if (error instanceof DSNError) {
      this._setStatus({ state: 'error', code: error.code, message: error.message, retryIn: delay });
    } else {
      this._setStatus({ state: 'error', code: error?.name ?? 'error', message: String(error?.message ?? error), retryIn: delay });
    }
    await this._sleep(delay);
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this._sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this._sleepers.add(wake);
    });
  }

  _wakeAll() {
    for (const wake of [...this._sleepers]) wake();
  }

  _stop(error) {
    if (this._stopped) return;
    this._stopped = true;
    this._stopError = error;
    globalThis.removeEventListener?.('online', this._onOnline);
    globalThis.removeEventListener?.('offline', this._onOffline);
    this._release?.();
    this._campaigning?.abort();
    // This tab's subscriptions go with it (the leader also learns it from the tab's lock).
    if (!this._leading && this._mine.size) this._post({ type: 'subs', tab: this._tabId, subs: {} });
    this._forgetTabs();
    this._releaseTab?.();
    this._channel?.close();
    if (this._onFreeze) {
      globalThis.document?.removeEventListener?.('freeze', this._onFreeze);
      globalThis.removeEventListener?.('pagehide', this._onFreeze);
      globalThis.document?.removeEventListener?.('resume', this._onResume);
      globalThis.removeEventListener?.('pageshow', this._onResume);
    }
    this._session.close(error);
    this._wakeAll();
    this._wakeSender?.();
    this._rejectReady(error);
    this._resolveFirstSync();
    // The writes still waiting for their answers stay in the outbox: each promise says so,
    // so a page does not show as failed a write that the next connectDSN will send. One still
    // being stored says so once it is (close() keeps the database open until then).
    const inMemory = this._storage instanceof MemoryStorage;
    for (const [mid, waiter] of this._waiters) {
      this._waiters.delete(mid);
      const say = (queued, why) => {
        const failure = new DSNError(error.code, `${error.message}; ${why}`);
        if (error.status !== undefined) failure.status = error.status;
        failure.queued = queued;
        waiter.reject(failure);
      };
      const kept = () => say(true, 'this write stays queued in IndexedDB, and the next connectDSN with this database sends it');
      const entry = this._outbox.find((e) => e.mid === mid);
      if (inMemory) say(false, 'this write was not answered, and goes with the in-memory outbox');
      else if (entry?.id === undefined && entry?.saved) {
        entry.saved.then(kept, (e) => say(false, `this write could not be stored (${e?.name}: ${e?.message}), so it is not queued`));
      } else kept();
    }
    for (const mine of this._mine.values()) {
      for (const waiter of mine.waiters) waiter.reject(error);
      mine.waiters.clear();
    }
  }
}

/** The layers below the client, named in the protocol's words, for tests and tools
 * (a stand-in server, a benchmark); not part of the stable API. */
export const _internals = {
  sha256, SHA256, HmacSha256Key, hmacSha256, hmacSha256Async, hkdfExtract, hkdfExpand, hkdf, keccakF1600, KECCAK_RC, Shake256, shake256,
  randomBytes, seal, sealSync, open, openSync, parseToken, deriveTrafficKeys,
  buildRequestFrame, openResponseFrame, openRequestFrame, buildResponseFrame,
  STREAM_TYPE, openStreamMessage, buildStreamMessage, StreamSplitter,
  utf8, concatBytes, toHex, fromHex, b64uEncode, b64uDecode, equalBytes,
  parseSyncUrl, Session, MemoryStorage, IndexedDBStorage, canonicalJson, subscriptionId,
};
