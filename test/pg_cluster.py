"""A throwaway PostgreSQL cluster for the tests: initdb in a temp folder, 127.0.0.1 on a free port.

    cluster = PgCluster.find()          # None if no PostgreSQL binaries are installed
    cluster.start()
    url = cluster.create_database()     # a fresh database per test
    cluster.restart()                   # pg_ctl restart (immediate: a crash, then WAL recovery)
    cluster.stop()                      # stops the server and removes the folder

The binaries come from PATH (initdb, pg_ctl), else the newest /usr/lib/postgresql/*/bin
(Debian's `postgresql` package), else $PG_BIN.  PostgreSQL refuses to run as root, so
as root every server command runs as the `postgres` user (which that package creates)
through runuser, and the folder is handed to that user.  fsync is off for speed: a
restart of the server loses nothing (the OS keeps what was written), a power cut
would.  Nothing here is part of dsn-sync; it only sets the stage for test_postgres.py.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def find_bin_dir():
    """The folder holding initdb and pg_ctl, or None."""
    given = os.environ.get("PG_BIN")
    candidates = [given] if given else []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2])
                         if p.split("/")[-2].isdigit() else 0, reverse=True)
    for folder in candidates:
        if folder and all(os.access(os.path.join(folder, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


class PgCluster:
    user = "postgres"  # the database superuser's name (initdb -U), and the OS user when run as root

    def __init__(self, bin_dir):
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.root = tempfile.mkdtemp(prefix="dsn-pg-")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.running = False
        self._as = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise RuntimeError("running as root needs runuser (util-linux) to start PostgreSQL as %s" % self.user)
            try:
                import pwd
                pw = pwd.getpwnam(self.user)
            except KeyError:
                raise RuntimeError("running as root, PostgreSQL needs an unprivileged OS user %r "
                                   "(Debian's postgresql package creates it)" % self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = [runuser, "-u", self.user, "--"]

    @classmethod
    def find(cls):
        folder = find_bin_dir()
        return cls(folder) if folder else None

    def _run(self, *args, check=True, timeout=120):
        cmd = self._as + [os.path.join(self.bin_dir, args[0])] + list(args[1:])
        # cwd: the postgres user may not be allowed into the caller's folder (a root-owned checkout).
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, cwd=self.root)
        if check and done.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), done.returncode,
                               done.stdout.decode(errors="replace"), self.server_log()))
        return done

    def server_log(self, tail=4000):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-tail:]
        except OSError:
            return ""

    def start(self):
        if not os.path.isdir(self.data):
            self._run("initdb", "-D", self.data, "-U", self.user, "--auth=trust", "-E", "UTF8",
                      "--no-sync", "--locale=C")
        options = ("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c full_page_writes=off "
                   "-c max_connections=300 -c shared_buffers=64MB" % (self.port, self.root))
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "60", "start")
        self.running = True
        return self

    def restart(self, mode="immediate"):
        """Stop (immediate: like a crash) and start again on the same port; every connection is cut."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")
        self.running = False
        self.start()

    def stop_server(self, mode="fast"):
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)
        self.running = False

    def stop(self):
        """Stop the server and delete the folder."""
        if self.running:
            self.stop_server("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname="postgres"):
        return "postgresql://%s@127.0.0.1:%d/%s" % (self.user, self.port, dbname)

    def create_database(self, name=None):
        """A fresh empty database; returns its URL."""
        import psycopg
        name = name or "t_" + uuid.uuid4().hex[:12]
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
                    conn.execute('CREATE DATABASE "%s"' % name)
                return self.url(name)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
