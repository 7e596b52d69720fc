"""dsn-sync mounted in a FastAPI app: ``uvicorn fastapi_app:app`` in this folder, then open
http://127.0.0.1:8000 and log in as alice/wonderland or bob/builder.

One origin, one port: the app's own routes, and dsn-sync under /dsn (its client at
/dsn/dsn_client.js, its sync URL under /dsn/sync/...).  The login hands out a token
that speaks for that user; each user reads and writes only their own notes.
"""

import contextlib
import os
import pathlib
import sys

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a fresh clone: dsn_sync.py is one folder up
import dsn_sync  # noqa: E402

# In memory by default: one process.  Several worker processes (uvicorn --workers 2, gunicorn -w 2)
# share one store: DSN_SYNC_DB=postgresql://... (README, "Several workers").
sync = dsn_sync.DSNSync(db_connection_string=os.environ.get("DSN_SYNC_DB"))
sync.define_table("notes", {"key": "id", "fields": ["owner", "text"]})
if sync.get("notes", "hello-alice") is None:  # a stored database keeps it (and what Alice made of it)
    sync.sync("notes", "hello-alice", {"owner": "alice", "text": "Welcome, Alice"})
USERS = {"alice": "wonderland", "bob": "builder"}  # a toy login: use your own


@sync.can_read("notes")
def own_notes(note, ctx):
    return note.get("owner") == ctx.sub


@sync.on_create("notes")
def new_note(note, ctx):
    return dict(note, owner=ctx.sub)  # whatever the page said, the note is the token's user's


@contextlib.asynccontextmanager
async def lifespan(app):
    sync.start(listen=False)  # the engine alone: no port of its own
    yield
    sync.stop()


app = FastAPI(lifespan=lifespan)
app.mount("/dsn", sync.asgi_app())


@app.post("/login")
def login(form: dict, request: Request):
    user = form.get("user")
    if USERS.get(user) is None or USERS[user] != form.get("password"):
        raise HTTPException(401, "wrong user or password")
    return {"url": sync.get_url(str(request.base_url) + "dsn"),
            "token": sync.issue_token(sub=user, read=["notes"], write=["notes"])}


@app.get("/")
def page():
    # Cached like the client file, so the page opens from the browser cache (with its IndexedDB mirror) while
    # the app is down: in a new tab, or with the address entered again (a reload asks the app first, and fails).
    return FileResponse(pathlib.Path(__file__).with_name("mounted.html"), headers={"Cache-Control": "max-age=600"})
