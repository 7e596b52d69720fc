// dsn_client.d.ts under the real TypeScript compiler (a devDependency that `npm ci`
// installs, run as node_modules/typescript/bin/tsc): the typed example compiles with
// --strict; a file of deliberate mistakes fails with exactly the errors expected, one per
// marked line, so the test fails if the types become too loose as well as too strict;
// the declarations need neither the DOM library nor @types/node; and the package that
// `npm pack` makes carries them where an app's tsc finds them through its "exports".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TSC = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const run = promisify(execFile);

if (!existsSync(TSC)) {
  throw new Error(`no TypeScript compiler at ${TSC}: run \`npm ci\` in ${root} (typescript is a devDependency)`);
}

/** Runs tsc with `args` in `cwd`; answers {code, errors: [{file, line, code, message}], output}. */
async function tsc(args, cwd = root) {
  let stdout;
  let code = 0;
  try {
    ({ stdout } = await run(process.execPath, [TSC, '--pretty', 'false', ...args], { cwd, maxBuffer: 16 << 20 }));
  } catch (error) {
    if (typeof error.code !== 'number') throw error;
    ({ stdout, code } = error);
  }
  const errors = [];
  for (const line of stdout.split('\n')) {
    const match = /^(.+)\((\d+),\d+\): error (TS\d+): (.*)$/.exec(line);
    if (match) errors.push({ file: match[1], line: Number(match[2]), code: match[3], message: match[4] });
    else if (line.startsWith('  ') && errors.length) errors.at(-1).message += '\n' + line.trim();
  }
  return { code, errors, output: stdout };
}

test('the typed example compiles with tsc --strict', { timeout: 120000 }, async () => {
  const result = await tsc(['-p', path.join('examples', 'typed')]);
  assert.equal(result.code, 0, `tsc -p examples/typed failed:\n${result.output}`);
  assert.deepEqual(result.errors, []);
});

// What each marked line of test/types_mistakes.ts must fail with: the error code (or
// codes) and a piece of its message that shows the types caught the mistake for the
// right reason.
const MISTAKES = {
  'internals-are-private': ['TS2305', /has no exported member '_internals'/],
  'misspelt-table': ['TS2345', /'"user"' is not assignable to parameter of type '("messages" \| "users"|"users" \| "messages")'/],
  'misspelt-table-listener': ['TS2345', /'"mesages"' is not assignable to parameter of type '("messages" \| "users"|"users" \| "messages")'/],
  'wrong-field-type': ['TS2322', /Type 'number' is not assignable to type 'string'/],
  'missing-field': [['TS2741', 'TS2345'], /Property 'email' is missing/], // 2345 before TypeScript 7
  'unknown-field': ['TS2353', /'nmae' does not exist in type 'Partial<User>'/],
  'wrong-literal': ['TS2322', /'"gone"' is not assignable to type '"active" \| "away" \| undefined'/],
  'record-type': ['TS2322', /Type 'string' is not assignable to type 'number'/],
  'get-may-be-undefined': ['TS18048', /'one' is possibly 'undefined'/],
  'listener-record-type': ['TS2322', /'Record<string, Message>' is not assignable to type 'Record<string, User>'/],
  'wrong-error-code': ['TS2367', /types 'DSNErrorCode' and '"rejcted"' have no overlap/],
  'wrong-state': ['TS2367', /types 'DSNState' and '"onlin"' have no overlap/],
  'misspelt-option': [['TS2561', 'TS2353'], /'firstSyncTimout' does not exist in type 'DSNOptions'/],
  'subscribe-params-not-object': ['TS2345', /'string' is not assignable to parameter of type 'DSNSubscriptionParams'/],
};

test('tsc --strict refuses each deliberate mistake, with the expected error, and nothing else', { timeout: 120000 }, async () => {
  const file = path.join('test', 'types_mistakes.ts');
  const marked = new Map(); // line -> mistake name
  readFileSync(path.join(root, file), 'utf8').split('\n').forEach((text, index) => {
    const match = /\/\/ mistake: ([\w-]+)\s*$/.exec(text);
    if (match) marked.set(index + 1, match[1]);
  });
  assert.deepEqual([...marked.values()].sort(), Object.keys(MISTAKES).sort(), 'every mistake in the table is marked once in the file, and no other');

  const result = await tsc(['--strict', '--noEmit', '--target', 'es2022', '--module', 'nodenext', '--lib', 'es2022,dom', '--types', '', file]);
  assert.notEqual(result.code, 0, 'the mistakes compiled');
  const byLine = new Map();
  for (const error of result.errors) {
    assert.equal(path.normalize(error.file), file, `an error outside the mistakes file:\n${result.output}`);
    assert.ok(marked.has(error.line), `an error on line ${error.line}, which is not a marked mistake: ${error.code} ${error.message}`);
    assert.ok(!byLine.has(error.line), `two errors on line ${error.line}:\n${result.output}`);
    byLine.set(error.line, error);
  }
  for (const [line, name] of marked) {
    const error = byLine.get(line);
    assert.ok(error, `mistake ${name} (line ${line}) compiled: the types let it through`);
    const [code, message] = MISTAKES[name];
    assert.ok([code].flat().includes(error.code), `mistake ${name}: ${error.code} ${error.message}`);
    assert.match(error.message, message, `mistake ${name}`);
  }
});

test('the declarations compile alone, without the DOM library or @types/node', { timeout: 120000 }, async () => {
  const result = await tsc(['--strict', '--noEmit', '--target', 'es2022', '--module', 'nodenext', '--lib', 'es2022', '--types', '', 'dsn_client.d.ts']);
  assert.equal(result.code, 0, result.output);
});

test('the packed package carries the declarations, found through "exports" by nodenext and bundler resolution', { timeout: 180000 }, async (t) => {
  const work = mkdtempSync(path.join(os.tmpdir(), 'dsn-types-'));
  t.after(() => rmSync(work, { recursive: true, force: true }));
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: root });
  const [packed] = JSON.parse(stdout);
  assert.deepEqual(packed.files.map((entry) => entry.path).sort(), ['LICENSE', 'README.md', 'dsn_client.d.ts', 'dsn_client.js', 'package.json'].filter((name) => name !== 'LICENSE' || existsSync(path.join(root, 'LICENSE'))).sort());

  const app = path.join(work, 'app');
  cpSync(path.join(root, 'examples', 'typed', 'app.ts'), path.join(app, 'app.ts'));
  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'typed-app', private: true, type: 'module', dependencies: { 'dsn-sync-client': `file:../${packed.filename}` } }));
  await run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: app });
  assert.ok(existsSync(path.join(app, 'node_modules', 'dsn-sync-client', 'dsn_client.d.ts')));

  for (const resolution of [['--module', 'nodenext'], ['--module', 'esnext', '--moduleResolution', 'bundler']]) {
    const result = await tsc(['--strict', '--noEmit', '--target', 'es2022', ...resolution, '--lib', 'es2022,dom', '--types', '', 'app.ts'], app);
    assert.equal(result.code, 0, `${resolution.join(' ')}:\n${result.output}`);
  }
});

/** The string literals of a union type declared in dsn_client.d.ts as `export type NAME = 'a' | 'b' ...;`. */
function declaredUnion(declarations, name) {
  const match = new RegExp(`export type ${name} =([^]*?)\\n\\n`).exec(declarations);
  assert.ok(match, `dsn_client.d.ts declares no type ${name}`);
  const body = match[1].replace(/\/\/.*$/gm, '');
  return new Set([...body.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]));
}

test('the declarations follow dsn_client.js: its exports, every DSNError code it makes, every status code it reports', async () => {
  const declarations = readFileSync(path.join(root, 'dsn_client.d.ts'), 'utf8');
  const source = readFileSync(path.join(root, 'dsn_client.js'), 'utf8');

  const declared = [...declarations.matchAll(/^export declare (?:function|class|const) (\w+)/gm)].map((m) => m[1]).sort();
  const exported = Object.keys(await import('../dsn_client.js')).filter((name) => name !== '_internals').sort();
  for (const name of exported) assert.ok(declared.includes(name), `dsn_client.js exports ${name}, which dsn_client.d.ts does not declare`);
  for (const name of declared) assert.ok(exported.includes(name), `dsn_client.d.ts declares ${name}, which dsn_client.js does not export`);
  assert.doesNotMatch(declarations, /_internals/, '_internals is not public');

  const codes = new Set([...declaredUnion(declarations, 'DSNProtocolErrorCode'), ...declaredUnion(declarations, 'DSNClientErrorCode')]);
  const thrown = new Set();
  for (const [, first, second] of source.matchAll(/new DSNError\(\s*(?:[^,'()]*\?\s*)?'([a-z_]+)'(?:\s*:\s*'([a-z_]+)')?/g)) {
    thrown.add(first);
    if (second) thrown.add(second);
  }
  assert.ok(thrown.size >= 8, `found only ${[...thrown]} in dsn_client.js: has the way it makes errors changed?`);
  for (const code of thrown) assert.ok(codes.has(code), `dsn_client.js makes DSNError('${code}'), which DSNErrorCode lacks`);

  // Status notices: a literal `code: '...'` in a _setStatus call is a notice or a client code.
  const notices = new Set(['no_persistence', 'first_sync_timeout'].filter((code) => declarations.includes(`code: '${code}'`)));
  for (const [, code] of source.matchAll(/_setStatus\(\{[^}]*?code: '([a-z_]+)'/gs)) {
    assert.ok(codes.has(code) || notices.has(code), `dsn_client.js reports status code '${code}', which no DSNStatus shape declares`);
  }
});
