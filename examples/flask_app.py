"""dsn-sync mounted in a Flask app: ``waitress-serve --threads 16 flask_app:app`` (or
``gunicorn -k gthread --threads 16 flask_app:app``) in this folder, then open
http://127.0.0.1:8080 (gunicorn: http://127.0.0.1:8000) and log in as alice/wonderland
or bob/builder.

One origin, one port: Flask's routes, and dsn-sync under /dsn, put in front of
``app.wsgi_app`` by werkzeug's dispatcher.  Under WSGI a waiting pull holds a
thread: give the server threads.  (gunicorn's one-thread sync workers work too, but
are never held: clients then poll every few seconds.)
"""

import os
import sys

from flask import Flask, abort, request, send_file
from werkzeug.middleware.dispatcher import DispatcherMiddleware

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


app = Flask(__name__)
# Pulls wait at most 10 s here, at most 8 at once; clients are told to pace themselves past that.
app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/dsn": sync.wsgi_app(max_wait=10, max_held=8)})


@app.post("/login")
def login():
    form = request.get_json()
    if USERS.get(form.get("user")) is None or USERS[form["user"]] != form.get("password"):
        abort(401)
    return {"url": sync.get_url(request.host_url + "dsn"),
            "token": sync.issue_token(sub=form["user"], read=["notes"], write=["notes"])}


@app.get("/")
def page():
    # Cached like the client file, so the page opens from the browser cache (with its IndexedDB mirror) while
    # the app is down: in a new tab, or with the address entered again (a reload asks the app first, and fails).
    response = send_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mounted.html"))
    response.headers["Cache-Control"] = "max-age=600"
    return response
