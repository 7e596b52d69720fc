// Control peer: adapters/dsnsync.mjs with node:crypto's SHAKE256 and HMAC (as dsnsync_native)
// and, for every call but a streamed pull, a minimal HTTP/1.1 keep-alive client on node:net in
// place of node:http (DSN_BENCH_HTTP=raw; see dsnsync.mjs). What it measures is the server with
// a load generator that spends less of the shared CPU per request.
import { makeAdapter } from './dsnsync.mjs';

export const name = 'dsnsync_lean';
export const { connect, produce } = makeAdapter({ crypto: 'native', transport: 'raw' });
