"""What every example shares: the command line, a tiny web server for its page, and
the addresses it prints.  Nothing here is part of dsn-sync; a real app has its own web
framework and login, and does the same three things:

1. runs a ``DSNSync`` beside it (here on a free port),
2. serves its page,
3. hands the page a token for the user who is logged in: ``GET /config?user=alice``
   answers ``{"url": <sync URL>, "token": <a token for alice>, "user": "alice"}``.
   (Here "logged in" is the ``user`` parameter: a demo has no passwords.  Never put
   the token itself in a URL.)
"""

import argparse
import http.server
import json
import os
import sys
import threading
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `python examples/chat.py` on a fresh clone: dsn_sync.py is one folder up

import dsn_sync  # noqa: E402


def _port(text):
    """A port number from the command line: argparse's usage line for anything else, not a traceback."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is a number from 0 to 65535 (0: any free one), got %r" % text)
    return port


def options(description, port, **extra):
    """Parses ``--port`` (the page; 0 picks a free one), ``--sync-port`` (default: any free
    one) and the example's own ``extra`` options ({name: (default, help)})."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=_port, default=port, help="port of the page (default %d; 0: any free one)" % port)
    parser.add_argument("--sync-port", type=_port, default=0, help="port of the sync server (default: any free one)")
    for name, (default, text) in extra.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, help=text)
    return parser.parse_args()


def serve(sync, page, token_for, port, users, title):
    """Starts ``sync``, serves ``page`` (a file beside this one) at ``/`` and the page's
    config at ``/config?user=NAME`` (``token_for(name)`` gives the token; an unknown
    user gets 403), prints the addresses, and runs until Ctrl-C."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), page), "rb") as f:
        html = f.read()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/":
                return self.reply(200, html, "text/html; charset=utf-8")
            if url.path == "/config":
                user = urllib.parse.parse_qs(url.query).get("user", [users[0]])[0]
                if user not in users:
                    return self.reply(403, b'{"error": "no such user"}', "application/json")
                body = {"url": sync.get_url(), "token": token_for(user), "user": user, "users": users}
                return self.reply(200, json.dumps(body).encode(), "application/json")
            self.reply(404, b"not found", "text/plain")

        def reply(self, status, body, content_type):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet: the backend's own prints are the story
            pass

    # One line, not a traceback: the usual cause is another copy of the example still running.
    try:
        web = http.server.ThreadingHTTPServer(("127.0.0.1", port), Page)
    except OSError as e:
        sys.exit("%s: cannot serve the page on port %d (%s); stop what uses it, or pass --port 0 for any "
                 "free port" % (title, port, os.strerror(e.errno) if e.errno else e))
    try:
        sync.start()
    except OSError as e:
        web.server_close()
        sys.exit("%s: dsn-sync cannot listen on port %d (%s); stop what uses it, or pass --sync-port 0 for "
                 "any free port" % (title, sync.port, os.strerror(e.errno) if e.errno else e))
    origin = "http://127.0.0.1:%d" % web.server_address[1]
    print("%s: open %s" % (title, "these, side by side:" if len(users) > 1 else "this:"))
    for user in users:
        print("  %s/?user=%s" % (origin, user))
    print("Inspector: %s" % sync.inspector_url())
    print("  (the app's token, to paste there: %s)" % sync.get_token())
    print("Ctrl-C stops.", flush=True)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        web.shutdown()
        sync.stop()


__all__ = ["dsn_sync", "options", "serve"]
