// What the JavaScript tests share: one wait, and a live dsn_sync.py fixture.
//
//     import { startFixture, waitFor } from './helpers.mjs';
//     const fixture = await startFixture();                 // test/fixture_server.py
//     const other = await startFixture('browser_fixture.py');
//     await fixture.cmd({ cmd: 'sync', table: 'users', key: 'u1', data: { name: 'Ada' } });
//     await waitFor(() => seen.length === 1, 'the first call');
//
// A fixture is a child process that prints one JSON line ({url, token, port, secret,
// epoch}) and answers one JSON line per command (test/fixture_server.py lists them). Every
// fixture is killed when the test file ends; one given a test context `t` is killed when
// that test ends.
import { after } from 'node:test';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { startJsonLinesProcess, waitFor } from './browser/harness.mjs';

/** Polls `condition` (sync or async) until it returns something truthy, and returns it;
 * throws "timed out after <timeout> ms waiting for <what>" otherwise. Defined in the
 * browser harness, which browser scripts import on their own. */
export { waitFor };

const here = path.dirname(fileURLToPath(import.meta.url));
const started = new Set();
after(() => Promise.all([...started].map((fixture) => fixture.kill())));

/** Starts test/<script> (default fixture_server.py) with `args` under $PYTHON or python3;
 * answers the first line's fields plus cmd(command) and kill(). */
export async function startFixture(script = 'fixture_server.py', args = [], { t } = {}) {
  const fixture = await startJsonLinesProcess(process.env.PYTHON || 'python3', [path.join(here, script), ...args.map(String)]);
  started.add(fixture);
  if (t) t.after(() => fixture.kill());
  return fixture;
}
