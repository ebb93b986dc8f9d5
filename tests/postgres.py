"""A real PostgreSQL server for the tests and the soak script: initdb into a temporary
folder, started with pg_ctl on a private unix socket and a free 127.0.0.1 port, stopped and
removed after. As root (CI), the server runs as the user 'nobody' (initdb refuses root).

Passwords are checked on 127.0.0.1 (scram-sha-256); the administrator (the superuser
ADMIN) connects through the private socket without one."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

ADMIN = "admin"
NOBODY = 65534


def find_bin(name: str) -> str:
    """A PostgreSQL program from PATH, else from Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                        None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="inspector-pg-"))
        self.data, self.socket_dir = self.root / "data", self.root / "socket"
        self.socket_dir.mkdir()
        self.port = _free_port()
        self._as = {}
        if os.geteuid() == 0:
            for path in (self.root, self.socket_dir):
                os.chown(path, NOBODY, NOBODY)
            self._as = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
        self._run(find_bin("initdb"), "-D", str(self.data), "-U", ADMIN, "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.socket_dir}'\nfsync = on\nmax_connections = 60\n"
                    "shared_buffers = 128MB\n")
        self.start()

    def _run(self, *cmd: str) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root, **self._as)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        self._run(find_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                  "-t", "120", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(find_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "120", "stop")

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def admin_url(self, dbname: str = "postgres") -> str:
        """The administrator, through the private socket (no password)."""
        return f"postgresql://{ADMIN}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def url(self, user: str, dbname: str = "plant") -> str:
        """A user over TCP on 127.0.0.1 (the password comes from PGPASSWORD or a password file)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def sql(self, statement: str, dbname: str = "plant") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.admin_url(dbname), autocommit=True) as con:
            cur = con.execute(statement)
            return cur.fetchall() if cur.description else []
