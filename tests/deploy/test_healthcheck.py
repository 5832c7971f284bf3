"""The healthcheck commands of the Dockerfile and docker-compose.yml, run for real against a server on loopback
(a fake analyzer stands in for the model): exit 1 while /readyz is 503, exit 0 once it is 200, exit 1 when nothing
listens. Also: the CLI checker used by the static tests rejects what does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.serverproc import free_port
from tests.deploy import deployfiles as df
from tests.service.helpers import serving


class FakeAnalyzer:
    model_id = "fake"
    threshold = 1.0


def healthchecks() -> dict[str, list[str]]:
    d = df.dockerfile()
    _, cmd = d.final.all("HEALTHCHECK")[0].args.split("CMD", 1)
    dockerfile_argv = df.Instruction("CMD", cmd.strip(), 0).exec_form
    compose_test = df.compose_service()["healthcheck"]["test"]
    assert dockerfile_argv and compose_test[0] == "CMD"
    return {"Dockerfile": dockerfile_argv, "docker-compose.yml": list(compose_test[1:])}


def run_check(argv: list[str], port: int) -> int:
    assert argv[0] == "python"
    env = {**os.environ, "FACEREC_PORT": str(port)}
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False).returncode


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, threading.Event]]:
    from service.app import create_app
    from service.config import Settings

    release = threading.Event()

    def analyzer_factory(_: Settings) -> Any:
        release.wait(20)
        return FakeAnalyzer()

    port = free_port()
    app = create_app(Settings(data=tmp_path / "data", port=port), analyzer_factory=analyzer_factory)
    with serving(app, port):
        try:
            yield port, release
        finally:
            release.set()


def test_healthchecks_follow_readiness(server: tuple[int, threading.Event]) -> None:
    port, release = server
    checks = healthchecks()
    for name, argv in checks.items():
        assert run_check(argv, port) == 1, f"{name}: healthy while the model is still loading"
    release.set()
    deadline = time.monotonic() + 10
    while run_check(checks["Dockerfile"], port) != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    for name, argv in checks.items():
        assert run_check(argv, port) == 0, f"{name}: unhealthy although /readyz is 200"


def test_healthchecks_fail_when_nothing_listens() -> None:
    port = free_port()
    for name, argv in healthchecks().items():
        assert run_check(argv, port) == 1, name


def test_cli_checker_rejects_what_does_not_exist() -> None:
    with pytest.raises(AssertionError):
        df.resolve_cli(["weights", "nope"])
    with pytest.raises(AssertionError):
        df.resolve_cli(["keys"])  # a group, not a command
    command, params = df.resolve_cli(["keys", "create", "--scope", "admin", "--bogus"])
    with pytest.raises(Exception, match="bogus"):
        command.make_context("facerec", params)
    assert df.facerec_invocations(["groupadd facerec && useradd --gid facerec x"]) == []
