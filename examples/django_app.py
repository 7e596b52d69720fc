"""dsn-sync mounted in a (one-file) Django project, in this folder:

    uvicorn django_app:application                  # ASGI
    gunicorn -k gthread --threads 16 django_app:wsgi  # WSGI (or waitress-serve --threads 16 django_app:wsgi)

then open http://127.0.0.1:8000 (waitress: http://127.0.0.1:8080) and log in as
alice/wonderland or bob/builder.  Paths
under /dsn go to dsn-sync, the rest to Django: in a full project, wrap the
``application`` of asgi.py or wsgi.py the same way.
"""

import json
import os
import sys

import django
from django.conf import settings

settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["127.0.0.1", "localhost"], SECRET_KEY="change me")
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402  (after settings, as Django asks)
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a fresh clone: dsn_sync.py is one folder up
import dsn_sync  # noqa: E402

# In memory by default: one process.  Several worker processes (uvicorn --workers 2, gunicorn -w 2)
# share one store: DSN_SYNC_DB=postgresql://... (README, "Several workers").
sync = dsn_sync.DSNSync(db_connection_string=os.environ.get("DSN_SYNC_DB"))
sync.define_table("notes", {"key": "id", "fields": ["owner", "text"]})
if sync.get("notes", "hello-alice") is None:  # a stored database keeps it (and what Alice made of it)
    sync.sync("notes", "hello-alice", {"owner": "alice", "text": "Welcome, Alice"})
USERS = {"alice": "wonderland", "bob": "builder"}  # a toy login: use django.contrib.auth
MOUNT = "/dsn"  # where dsn-sync answers: the login's URL and both wrappers below name it


@sync.can_read("notes")
def own_notes(note, ctx):
    return note.get("owner") == ctx.sub


@sync.on_create("notes")
def new_note(note, ctx):
    return dict(note, owner=ctx.sub)  # whatever the page said, the note is the token's user's


@csrf_exempt  # a JSON login for the toy; a real one is Django's, with its CSRF token
def login(request):
    form = json.loads(request.body or b"{}")
    if request.method != "POST" or USERS.get(form.get("user")) is None or USERS[form["user"]] != form.get("password"):
        return HttpResponse(status=401)
    return JsonResponse({"url": sync.get_url(request.build_absolute_uri(MOUNT)),
                         "token": sync.issue_token(sub=form["user"], read=["notes"], write=["notes"])})


def page(request):
    # Cached like the client file, so the page opens from the browser cache (with its IndexedDB mirror) while
    # the app is down: in a new tab, or with the address entered again (a reload asks the app first, and fails).
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mounted.html"), "rb") as f:
        return HttpResponse(f.read(), content_type="text/html; charset=utf-8", headers={"Cache-Control": "max-age=600"})


urlpatterns = [path("", page), path("login", login)]

django_asgi, dsn_asgi = get_asgi_application(), sync.asgi_app()
django_wsgi, dsn_wsgi = get_wsgi_application(), sync.wsgi_app(max_wait=10, max_held=8)


async def application(scope, receive, send):
    """ASGI: /dsn/... to dsn-sync, and the lifespan too (it starts and stops the engine); the rest to Django."""
    if scope["type"] == "lifespan":
        return await dsn_asgi(scope, receive, send)
    if scope["type"] == "http" and (scope["path"] + "/").startswith(MOUNT + "/"):
        return await dsn_asgi(dict(scope, root_path=scope.get("root_path", "") + MOUNT), receive, send)
    return await django_asgi(scope, receive, send)


def wsgi(environ, start_response):
    """WSGI: /dsn/... to dsn-sync (SCRIPT_NAME gains the prefix), the rest to Django."""
    path_info = environ.get("PATH_INFO", "")
    if (path_info + "/").startswith(MOUNT + "/"):
        environ = dict(environ, SCRIPT_NAME=environ.get("SCRIPT_NAME", "") + MOUNT, PATH_INFO=path_info[len(MOUNT):])
        return dsn_wsgi(environ, start_response)
    return django_wsgi(environ, start_response)
