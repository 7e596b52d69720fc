/*
 * Types of dsn_client.js, the browser and Node client of dsn-sync (wire protocol v1).
 *
 * Generic over the app's tables: name each table and the type of its records, and the
 * client checks table names, record fields and the records it hands back.
 *
 *     import { connectDSN, DSNError } from 'dsn-sync-client';
 *
 *     interface User { name: string; email: string; status?: 'active' | 'away' }
 *     type Tables = { users: User };
 *
 *     const client = connectDSN<Tables>(url, token);
 *     const users = await client.getAll('users');   // Record<string, User>
 *     await client.update('users', 'user_004', { status: 'active' });
 *
 * A record is its fields without the table's key field (the key is the map's key), as
 * the server stores it: leave the key field out of the record type.
 *
 * Self-contained: it needs neither the DOM library nor @types/node, so it compiles
 * for a browser app and for a Node script alike.
 */

/* ============================================================================
 * Errors
 * ========================================================================== */

/** The error codes of the protocol (PROTOCOL.md section 4), as the server answers a
 * request or a write. */
export type DSNProtocolErrorCode =
  | 'clock'          // the request's time was more than 60 s from the server's
  | 'replay'         // the request's nonce was seen already
  | 'expired'        // the token has expired (with no token function the client stops, as for 'unauthorized')
  | 'forbidden'      // the token may not read or write this table
  | 'unknown_table'  // no such table on the server
  | 'invalid'        // a table name, key or record the server (or the client) refuses
  | 'exists'         // create of a key that exists
  | 'not_found'      // update or delete of a key that does not exist
  | 'no_handler'     // the backend has no handler for this write
  | 'rejected'       // a handler said no
  | 'handler_error'  // a handler raised (the message says nothing of its internals)
  | 'bad_request';   // the server could not read the request

/** The client's own error codes. */
export type DSNClientErrorCode =
  | 'closed'         // close() was called; queued writes stay in the outbox
  | 'unauthorized'   // the server refused the token (HTTP 401: revoked, or not this server's)
  | 'offline'        // the server could not be reached (network, refused, timed out)
  | 'http'           // an HTTP status other than 200, 401 and 404; `.status` says which
  | 'wrong_url'      // no dsn-sync instance at the URL (404 on hello), or another instance
  | 'bad_url'        // connectDSN's url is not "http(s)://host:port[/prefix]/sync/<instance>"
  | 'bad_token'      // the token is not "dsn1.<kid>.<secret>"
  | 'bad_response'   // an answer that does not open with the token's keys, or is malformed
  | 'no_fetch'       // no fetch() here: pass options.fetch
  | 'unsupported'    // subscribe() with a server that does not implement subscriptions
  | 'no_random';     // no crypto.getRandomValues here (Node 18 needs --experimental-global-webcrypto)

/** Every `.code` a DSNError may carry. */
export type DSNErrorCode = DSNProtocolErrorCode | DSNClientErrorCode;

/** Every refusal and failure the client reports: a write's promise rejects with one
 * when the backend refuses it (after the optimistic change has been rolled back). */
export declare class DSNError extends Error {
  constructor(code: DSNErrorCode, message?: string);
  name: 'DSNError';
  /** The protocol's error code, or one of the client's own. */
  code: DSNErrorCode;
  /** The HTTP status, on `http` and on `unauthorized` from a 401. */
  status?: number;
  /** On a subscription's refusal (`forbidden`, `invalid`): the subscription's id. */
  sub?: string;
  /** On a write whose client stopped (close(), a dead token) before the backend answered:
   * true when the write stays in the IndexedDB outbox, which the next connectDSN with the
   * same database sends; false when the mirror was in memory and the write is gone. */
  queued?: boolean;
}

/* ============================================================================
 * What the client reports
 * ========================================================================== */

/** How far the mirror has followed the server's change feed: its epoch, the last seq
 * applied and the schema version. Frozen; replaced, never changed in place. */
export interface DSNCursor {
  readonly epoch: string;
  readonly seq: number;
  readonly sv: number;
}

/** The schema as the server last described it: per table, its key field and its field
 * list (`null` for a table that takes any fields). Frozen. */
export type DSNSchema = {
  readonly [table: string]: { readonly key: string; readonly fields: readonly string[] | null };
};

/** The connection's state. */
export type DSNState = 'connecting' | 'online' | 'offline' | 'error';

/** What onStatus reports: a state change, or a notice (reset progress, a blocked
 * database upgrade, no persistence, a late first sync) that carries the state
 * unchanged. Tell the notices apart with `'reset' in status`, `'blocked' in status`,
 * `status.code === 'no_persistence'` and `status.code === 'first_sync_timeout'`; what
 * is left narrows on `state`. */
export type DSNStatus =
  | DSNConnecting
  | DSNOnline
  | DSNOffline
  | DSNFailed
  | DSNResetProgress
  | DSNBlocked
  | DSNNoPersistence
  | DSNFirstSyncTimeout;

/** Not synced yet since connectDSN, or reconnecting. */
export interface DSNConnecting {
  state: 'connecting';
  code?: undefined;
}

/** A pull answer has been applied: the mirror is current up to `seq`. */
export interface DSNOnline {
  state: 'online';
  epoch: string;
  seq: number;
  code?: undefined;
}

/** The server cannot be reached, or answered with an HTTP error; the client retries in
 * `retryIn` ms (sooner when the browser says it is online again). */
export interface DSNOffline {
  state: 'offline';
  /** `offline` (no answer), or `http_<status>` (e.g. `http_502`). */
  code: 'offline' | `http_${number}`;
  message: string;
  retryIn: number;
}

/** A failure the client cannot get past by waiting alone (a refused token, a wrong URL,
 * a malformed answer, a storage failure). `retryIn` is there when it tries again;
 * absent after `unauthorized` and `expired` (final for that token) and when the mirror
 * could not be opened. */
export interface DSNFailed {
  state: 'error';
  /** A DSNError's code, or for a failure outside the protocol the exception's name: a
   * DOMException from IndexedDB (`QuotaExceededError`, ...) or `storage`. */
  code: DSNErrorCode | (string & {});
  message: string;
  retryIn?: number;
}

/** A reset (a full snapshot) is coming in, page by page; the mirror is replaced only
 * when the last page is in (`done`). `records` counts the records per table so far. */
export interface DSNResetProgress {
  state: 'connecting' | 'online';
  reset: { pages: number; records: { [table: string]: number }; done: boolean };
  code?: undefined;
}

/** Another tab holds the database open at an older version; the upgrade waits for it. */
export interface DSNBlocked {
  state: DSNState;
  blocked: true;
  code?: undefined;
}

/** A notice, once, while the mirror loads (so before the first request): IndexedDB
 * refused to open, so the mirror and the queued writes are kept in memory. Everything
 * works; nothing survives a reload. */
export interface DSNNoPersistence {
  state: 'connecting';
  code: 'no_persistence';
  message: string;
}

/** A notice, once: on a first visit, no first sync came within `firstSyncTimeout` ms
 * of connectDSN while the server took the connection without answering (an
 * unreachable server reports `offline` instead). getAll and get stop waiting and answer
 * from the mirror as it stands (empty on a first visit) until the sync comes. */
export interface DSNFirstSyncTimeout {
  state: 'connecting';
  code: 'first_sync_timeout';
  message: string;
}

/** What onSync reports: where the mirror stands and how many writes are queued. */
export interface DSNSyncProgress {
  cursor: DSNCursor | null;
  pending: number;
}

/** A queued write, as pending() lists it. */
export type DSNPendingWrite<T extends DSNTables<T> = DSNAnyTables> = {
  [K in TableName<T>]:
    | { op: 'create'; table: K; key: string; data: T[K]; mid: string }
    | { op: 'update'; table: K; key: string; data: Partial<T[K]>; mid: string }
    | { op: 'delete'; table: K; key: string; mid: string };
}[TableName<T>];

/* ============================================================================
 * Tables
 * ========================================================================== */

/** A record when the tables are not typed: any JSON object. */
export type DSNRecord = { [field: string]: any };

/** The tables of an app: table name -> record type. An interface or a type literal. */
export type DSNTables<T> = { [K in keyof T]: object };

/** Untyped tables: any table name, any JSON record. */
export type DSNAnyTables = { [table: string]: DSNRecord };

/** A table's name in `T`. */
export type TableName<T> = keyof T & string;

/* ============================================================================
 * connectDSN and the client
 * ========================================================================== */

/** The part of fetch() the client uses: `fetch(url, {method: 'POST', headers, body,
 * signal})`, then `status`, `headers.get()`, `arrayBuffer()`, and for streamed pulls
 * `body.getReader()` (or an async-iterable body, as node-fetch gives). The platform's
 * fetch fits. `body` is a Uint8Array and `signal` an AbortSignal; both are typed
 * `any` here so that a fetch typed by the DOM library, by @types/node or by a library
 * fits without a cast. */
export type DSNFetch = (url: string, init: DSNFetchInit) => Promise<DSNFetchResponse>;
export type DSNFetchInit = {
  method: 'POST';
  headers: { 'Content-Type': string };
  body: any;
  signal: any;
};
export interface DSNFetchResponse {
  status: number;
  headers: { get(name: string): string | null };
  arrayBuffer(): Promise<ArrayBuffer>;
  body?: unknown;
}

/** The part of an IndexedDB factory the client needs (globalThis.indexedDB, or
 * fake-indexeddb's in Node). */
export interface DSNIndexedDBFactory {
  open(name: string, version?: number): unknown;
}

/** The token, or a function (sync or async) that returns one; it is called again when
 * the server says the token is dead (401 or `expired`). Surrounding white space is
 * ignored. */
export type DSNToken = string | (() => string | Promise<string>);

export interface DSNOptions {
  /** An IndexedDB factory. Default: globalThis.indexedDB. `null`: keep the mirror in
   * memory. One that refuses to open: memory too, with a `no_persistence` status. */
  indexedDB?: DSNIndexedDBFactory | null;
  /** The IndexedDB database name. Default `"dsn-sync/<instance>"`; give each user of a
   * shared browser their own. */
  name?: string;
  /** The fetch to use. Default globalThis.fetch. */
  fetch?: DSNFetch;
  /** Long-poll seconds, 0 to 30 (the protocol's limit). Default 25. */
  wait?: number;
  /** Streamed pulls. Default false. When true, a long poll that finds nothing new stays
   * open after the first change, and the server writes one sealed message per change down
   * the same answer until `wait` runs out. Turn it on only where nothing between browser and
   * server buffers answers (direct, or nginx with proxy_buffering off); a buffering
   * proxy would hold the changes back until the stream ends. */
  stream?: boolean;
  /** On a first visit (no stored cursor), how long getAll and get wait for the first
   * sync, in ms from connectDSN, before they answer from the mirror as it stands (empty)
   * and the status says why. Default 10000. */
  firstSyncTimeout?: number;
  /** Share one connection among the tabs of this browser profile that use the same sync
   * URL and database: one tab (elected with Web Locks) pulls and sends for all, the others
   * follow through a BroadcastChannel and the shared IndexedDB. Default true; false (or a
   * browser without Web Locks or BroadcastChannel) gives every tab its own connection. */
  tabs?: boolean;
  /** Ms for a request other than a long poll. Default 15000. */
  timeout?: number;
  /** Bytes of one answer (or one message of a streamed pull) the client reads before it
   * opens it; a longer one is refused unread (`bad_response`). Default 64 MiB. */
  maxAnswer?: number;
  /** Ms a long poll may take beyond `wait` seconds before the client gives up on it.
   * Default 10000. */
  pullGrace?: number;
  /** Smallest backoff after a failure, in ms. Default 500. */
  retryMin?: number;
  /** Largest backoff, in ms. Default 30000. */
  retryMax?: number;
  /** After a reload (or when this tab takes over from another), the stored
   * subscriptions that no subscribe() asks for again within this many ms are released
   * at the first successful sync after it; until then their rows stay readable, also
   * offline. Default 3000. */
  restoreGrace?: number;
}

/** The params of a subscription: a JSON object, checked by the backend's function. */
export type DSNSubscriptionParams = { [name: string]: any };

/** What subscribe() returns: one use of a subscription (PROTOCOL section 7). */
export interface DSNSubscription<P extends DSNSubscriptionParams = DSNSubscriptionParams> {
  /** Derived from name and params (a SHA-256 of the canonical JSON): equal ones share
   * one subscription, in every tab and across reloads. */
  readonly id: string;
  readonly name: string;
  /** A frozen copy of the params given. */
  readonly params: Readonly<P>;
  /** Resolves once the subscription's rows are in the mirror (at once when they
   * already are). Rejects with a DSNError: `forbidden` or `invalid` when the backend
   * refuses it (it is then dropped, with its rows), `unsupported` when the server does
   * not implement subscriptions, `closed` when the handle or the client is closed first. */
  readonly ready: Promise<void>;
  /** Releases this use; the subscription goes when its last use does, and with it the
   * rows no other subscription selects. A second call does nothing. */
  close(): void;
}

/** A client of one dsn-sync instance, typed by the app's tables `T`. */
export interface DSNClient<T extends DSNTables<T> = DSNAnyTables> {
  /** The sync URL given to connectDSN. */
  readonly url: string;
  /** The server instance id, from the URL. */
  readonly instance: string;

  /** Resolves once the first sync is done. Rejects only if the token is refused and
   * there is no token function, or on close(). */
  readonly ready: Promise<void>;

  /** How far the mirror has followed the server's change feed; null until it has synced
   * once (after a reload, the stored cursor, even with the server down). */
  readonly cursor: DSNCursor | null;

  /** The tables this token may read, as the server last described them; {} before the
   * first answer. */
  readonly schema: DSNSchema;

  /** All records of `table` as {key: record}, the optimistic writes included. On a
   * first visit (no stored cursor) it waits for the first sync, then answers from the
   * mirror; at most `firstSyncTimeout` ms after connectDSN (default 10 s), after which it
   * answers from the mirror as it stands and the status says why. With a stored mirror
   * (a reload, a later visit) it answers at once, also offline. Treat the records as
   * read-only. */
  getAll<K extends keyof T & string>(table: K): Promise<Record<string, T[K]>>;

  /** The record of `key` in `table`, or undefined. Waits for the first sync on a first
   * visit, as getAll does. */
  get<K extends keyof T & string>(table: K, key: string): Promise<T[K] | undefined>;

  /** Applied to the mirror at once; resolves true once the backend has accepted it.
   * Rejects with a DSNError whose `.code` is the server's answer (`exists`,
   * `rejected`, `invalid`, ...) after the optimistic change has been rolled back. Made
   * offline, it waits in the outbox (in IndexedDB) and is sent when the server is back. */
  create<K extends keyof T & string>(table: K, key: string, data: T[K]): Promise<true>;

  /** A partial update: the fields given replace those of the record. As create. */
  update<K extends keyof T & string>(table: K, key: string, data: Partial<T[K]>): Promise<true>;

  /** Deletes the record of `key`. As create. */
  delete<K extends keyof T & string>(table: K, key: string): Promise<true>;

  /** Calls `callback(all)` with the whole table ({key: record}) once soon, then after
   * every change (never in the middle of one; changes that land together come as one
   * call). On a first visit the first call comes with the first sync, never with an
   * empty table before it. Returns a function that unsubscribes. */
  onDataChange<K extends keyof T & string>(table: K, callback: (all: Record<string, T[K]>) => void): () => void;

  /** Calls `callback(status)` soon with the current status, then on every change of
   * the connection's state and with each notice. Returns a function that unsubscribes. */
  onStatus(callback: (status: DSNStatus) => void): () => void;

  /** Calls `callback({cursor, pending})` once soon (when the mirror is loaded), then
   * after every pull answer applied, every write queued and every write answered.
   * Returns a function that unsubscribes. */
  onSync(callback: (progress: DSNSyncProgress) => void): () => void;

  /** The queued writes, oldest first. */
  pending(): DSNPendingWrite<T>[];

  /** Subscribes to the backend's `@sync.subscription(name)` with `params`. The first
   * call puts the client in subscription mode for good (stored with the mirror): the
   * mirror then holds only the union of the rows its subscriptions select, and getAll,
   * get and onDataChange see that union. Without a call, whole readable tables, as
   * before. Throws TypeError for a name that is not a non-empty string or params that
   * are not a JSON object. */
  subscribe<P extends DSNSubscriptionParams>(name: string, params?: P): DSNSubscription<P>;

  /** Stops the feed and the sender and closes the database at once. Queued writes stay
   * in the outbox (in IndexedDB) for the next connectDSN; their promises reject with
   * `closed`. */
  close(): void;
}

/** Starts a client and returns it at once; it connects in the background.
 *
 * @param url "http(s)://host:port[/prefix]/sync/<instance>", as DSNSync.get_url() gives it; in a page,
 *   also a path ("/prefix/sync/<instance>"), taken as the page's origin's
 * @param token "dsn1.<kid>.<secret>" from the backend, or a function that returns one
 * @throws DSNError `bad_url`, `bad_token`, `no_fetch`; RangeError for a `wait` outside 0..30
 */
export declare function connectDSN<T extends DSNTables<T> = DSNAnyTables>(
  url: string,
  token: DSNToken,
  options?: DSNOptions,
): DSNClient<T>;

/** A fresh random id for a record key: URL-safe base64 of random bytes from
 * crypto.getRandomValues, so it also works on a plain-http page where
 * crypto.randomUUID is missing. */
export declare function newId(): string;
