"""A real PostgreSQL server for the tests: Debian's binaries, a fresh cluster in a temp dir.

PostgreSQL refuses to run as root, and CI runs as root: then `initdb` and `pg_ctl` run as the
`postgres` system user that Debian's postgresql package creates (through `runuser`), in a
directory handed to that user. As any other user they run as that user. The server listens on
a free loopback port only, trusts local connections, and is stopped by its own pg_ctl.
`IOTGW_TEST_POSTGRES=postgresql://user@host:port/db` uses a running server instead (the user
needs CREATEDB: every test gets a database of its own).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.brokers import free_port

ENV = "IOTGW_TEST_POSTGRES"
SUPERUSER = "iotgw"


def find_bindir() -> Path | None:
    """The newest PostgreSQL 15+ bin directory from Debian's packages, or None."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        version = Path(initdb).parent.parent.name
        if version.isdigit() and int(version) >= 15:
            found.append((int(version), Path(initdb).parent))
    return max(found)[1] if found else None


class PostgresServer:
    """Start, stop (fast or immediate) and restart one cluster on a fixed port."""

    def __init__(self, *, durable: bool = False) -> None:
        """`durable`: fsync on, as in production (benchmarks); tests run without it."""
        self.durable = durable
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL 15+ not found: run scripts/test, which installs it")
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="iotgw-postgres-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        # As root, the cluster belongs to the postgres user (PostgreSQL will not run as root).
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=60)

    def init(self) -> PostgresServer:
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
            "--no-sync", "--locale=C",
        )  # fmt: skip
        return self.start()

    def start(self) -> PostgresServer:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        result = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start",
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"postgres did not start: {result.stderr} {self.read_log()[-2000:]}")
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean shutdown; `immediate`: as if the server died."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def database_dsn(server_dsn: str, name: str) -> str:
    """The DSN of database `name` on the server of `server_dsn`."""
    parts = urlsplit(server_dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def new_database_name() -> str:
    return f"iotgw_test_{secrets.token_hex(4)}"
