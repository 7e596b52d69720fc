// React recipe: a table of the backend's mirror as React state, through
// useSyncExternalStore over onDataChange. Bundle it as any React app is bundled:
//
//     npx esbuild examples/react_app.jsx --bundle --format=esm --jsx=automatic \
//       --define:process.env.NODE_ENV='"production"' --outfile=examples/react_app.js
//
// then open examples/react_app.html#url=<sync URL>&token=<token> (test/recipes_browser.test.mjs
// does exactly this in Chromium). React and react-dom are the app's dependencies, not
// dsn-sync's: the client itself has none.
import { StrictMode, useMemo, useSyncExternalStore } from 'react';
import { createRoot } from 'react-dom/client';
import { connectDSN } from 'dsn-sync-client';

/** The records of `table` as {key: record}, or null until the first sync; re-renders on
 * every change. onDataChange hands over a new object per change, which is the stable
 * snapshot useSyncExternalStore needs. */
export function useTable(client, table) {
  const store = useMemo(() => {
    let all = null;
    return {
      subscribe: (changed) => client.onDataChange(table, (next) => {
        all = next;
        changed();
      }),
      snapshot: () => all,
    };
  }, [client, table]);
  return useSyncExternalStore(store.subscribe, store.snapshot);
}

function Users({ client }) {
  const users = useTable(client, 'users');
  if (!users) return <p>Loading…</p>;
  return (
    <ul id="users">
      {Object.entries(users).map(([id, user]) => (
        <li key={id} data-id={id}>{user.name}</li>
      ))}
    </ul>
  );
}

const params = new URLSearchParams(location.hash.slice(1));
const client = connectDSN(params.get('url'), params.get('token'));
createRoot(document.getElementById('root')).render(<StrictMode><Users client={client} /></StrictMode>);
