"""The machine's PostgreSQL for fault tests: scratch databases, and a real stop and start of the cluster.

The cluster is the one DATABASE_URL points at (found by its port among Debian's clusters, so a scratch
cluster on another port can stand in for the machine's own); it is restarted with Debian's pg_ctlcluster,
so these tests need PostgreSQL on this machine and the right to run pg_ctlcluster (root or the postgres
user).
"""
from __future__ import annotations

import contextlib
import functools
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from django.conf import settings
from django.db import connections
from psycopg import sql

from tests.services import require_ci_service

CONFIG_DIR = Path("/etc/postgresql")
READY_TIMEOUT = 60.0


class Postgres:
    """The cluster behind the test settings' database: scratch databases, and stop and start."""

    def __init__(self) -> None:
        database = settings.DATABASES["default"]
        if database["ENGINE"] != "django.db.backends.postgresql":
            require_ci_service("DATABASE_URL is not PostgreSQL; the PostgreSQL restart tests need it")
        self.host = str(database.get("HOST") or "127.0.0.1")
        self.port = int(database.get("PORT") or 5432)
        self.user = str(database.get("USER") or "postgres")
        self.password = str(database.get("PASSWORD") or "")

    @functools.cached_property
    def cluster(self) -> tuple[str, str]:
        """The cluster's major version and name, needed (and checked) only to stop and start it."""
        return _cluster(self.port)

    def url(self, name: str) -> str:
        credentials = f"{self.user}:{self.password}@" if self.password else f"{self.user}@"
        return f"postgres://{credentials}{self.host}:{self.port}/{name}"

    def connect(self, name: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password or None,
                               dbname=name, autocommit=True, connect_timeout=5)

    def accepts_connections(self) -> bool:
        try:
            with self.connect() as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    @contextlib.contextmanager
    def scratch_database(self) -> Iterator[str]:
        """A new empty database for the block (its URL), dropped after it, whoever is still connected."""
        name = f"faults_pg_{secrets.token_hex(4)}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield name
        finally:
            self.wait_until_ready()
            with self.connect() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """A fast shutdown: every session is cut, in-flight transactions roll back."""
        self._ctl("stop", "-m", "fast")

    def start(self) -> None:
        self._ctl("start")
        self.wait_until_ready()

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.accepts_connections():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL {'/'.join(self.cluster)} did not accept connections again")
            time.sleep(0.1)

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """PostgreSQL is down for the block and always up again after it (also when the block fails)."""
        self.stop()
        try:
            yield
        finally:
            self.start()
            # This process's own connections died with the server; the next query opens fresh ones.
            connections.close_all()

    def _ctl(self, action: str, *options: str) -> None:
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", *self.cluster, action, *options]
        subprocess.run(command, check=True, capture_output=True, timeout=60)


def _cluster(port: int) -> tuple[str, str]:
    """The installed cluster (version, name) listening on port, after checking this process may restart it."""
    if shutil.which("pg_ctlcluster") is None:
        require_ci_service("pg_ctlcluster is not installed (Debian's postgresql-common)")
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != "postgres":
        require_ci_service("restarting PostgreSQL needs root or the postgres user")
    confs = sorted(CONFIG_DIR.glob("*/*/postgresql.conf"))
    clusters = [(c.parent.parent.name, c.parent.name) for c in confs if _configured_port(c) == port]
    if not clusters:
        require_ci_service(f"no local PostgreSQL cluster under {CONFIG_DIR} listens on port {port}")
    return clusters[0]


def _configured_port(conf: Path) -> int:
    for line in conf.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "port":
            return int(value.split("#")[0].strip())
    return 5432
