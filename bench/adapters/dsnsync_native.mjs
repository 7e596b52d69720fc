// Control peer: adapters/dsnsync.mjs with node:crypto's SHAKE256 and HMAC in place of
// dsn_client.js's JS ones, so the difference between the two shows how much of a dsn-sync
// result is the client's crypto rather than the server. Streamed pulls as in dsnsync.mjs:
// on by default, DSN_STREAM=0 for plain long polls.
import { makeAdapter } from './dsnsync.mjs';

export const name = 'dsnsync_native';
export const { connect, produce } = makeAdapter({ crypto: 'native' });
