"""The first second of a ``facerec`` process, in real processes: ``serve`` refuses an address it cannot listen on
before it opens the data dir or loads the model, and Ctrl-C while the CLI still imports exits 130 quietly."""

from __future__ import annotations

import importlib.abc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from bench.serverproc import free_port
from service.commands.serve import listen_problem
from tests.service.server import REPO, make_keys

PROBE = Path(__file__).parent / "modules_probe"
"""Its ``sitecustomize`` writes the names in ``sys.modules`` at exit to ``$FACEREC_TEST_MODULES_OUT``."""


def facerec(*args: str) -> list[str]:
    """The command line of the ``facerec`` console script's entry point, ``service.entry:main``."""
    return [sys.executable, "-m", "service.entry", *args]


def clean_env(modules: Path | None = None) -> dict[str, str]:
    """This environment without FACEREC_* settings (a developer's FACEREC_DATABASE_URL...), with the repo (and
    the modules probe when ``modules`` is given) on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEREC_")}
    env["PYTHONPATH"] = str(REPO) if modules is None else f"{REPO}{os.pathsep}{PROBE}"
    if modules is not None:
        env["FACEREC_TEST_MODULES_OUT"] = str(modules)
    return env


def serve(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float, list[str]]:
    """``facerec serve ARGS``: the finished process, its seconds, and the modules it had loaded at exit."""
    out = tmp_path / "modules.json"
    started = time.monotonic()
    proc = subprocess.run(
        facerec("serve", *args), cwd=REPO, env=clean_env(out), capture_output=True, text=True, timeout=300
    )
    return proc, time.monotonic() - started, json.loads(out.read_text())


def assert_refused_early(proc: subprocess.CompletedProcess[str], modules: Sequence[str], says: str) -> None:
    """Exit 2 with one ``error:`` line, before uvicorn started and before the model runtime (OpenVINO) loaded."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: cannot listen on ") and says in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not {"openvino", "uvicorn.server", "service.app"} & set(modules)


def test_serve_refuses_a_host_that_does_not_resolve_before_loading_the_model(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_keys(data, admin="admin")  # off loopback with a key: it used to load the model, then fail to bind (3)
    proc, seconds, modules = serve(tmp_path, "--host", "no-such-host.invalid", "--data", str(data))
    assert_refused_early(proc, modules, "no-such-host.invalid:8000: 'no-such-host.invalid' does not resolve")
    assert seconds < 60  # the real bound is the modules: the model's runtime never loaded


def test_serve_refuses_a_port_in_use_before_creating_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, _, modules = serve(tmp_path, "--host", "127.0.0.1", "--port", str(port), "--data", str(data))
    assert_refused_early(proc, modules, f"127.0.0.1:{port}: address already in use")
    assert not data.exists()


def test_serve_refuses_a_webhook_url_without_its_secret_in_one_line(tmp_path: Path) -> None:
    """It used to start uvicorn and fail in the app's startup: a 60-line traceback, exit 3."""
    env = {**clean_env(), "FACEREC_WEBHOOK_URL": "https://hooks.example/facerec"}
    args = ["serve", "--port", str(free_port()), "--data", str(tmp_path / "data")]
    proc = subprocess.run(facerec(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: FACEREC_WEBHOOK_URL is set but FACEREC_WEBHOOK_SECRET is empty"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and not (tmp_path / "data").exists()


def test_uvicorn_factory_reports_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    """``uvicorn --factory service.app:create_app`` (docs/API.md) printed pydantic's traceback for a bad value."""
    env = {**clean_env(), "FACEREC_RATE_LIMIT_BURST": "0", "FACEREC_DATA": str(tmp_path / "data")}
    args = ["-m", "uvicorn", "--factory", "service.app:create_app", "--port", str(free_port())]
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "error: FACEREC_RATE_LIMIT_BURST: Input should be greater than or equal to 1\n"


def test_listen_check_binds_like_uvicorn_and_leaves_the_port_free() -> None:
    assert listen_problem("no-such-host.invalid", 8000) is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert listen_problem("127.0.0.1", port) is None
    assert listen_problem("localhost", port) is None  # 127.0.0.1 and ::1 (where it has IPv6) held at once
    with socket.socket() as again:  # released at once: plain bind, no SO_REUSEADDR
        again.bind(("127.0.0.1", port))
        again.listen()
        assert "address already in use" in str(listen_problem("127.0.0.1", port))
        assert "address already in use" in str(listen_problem("", port))  # the wildcard covers 127.0.0.1 too


def test_a_port_whose_old_connection_lingers_in_time_wait_is_not_called_in_use() -> None:
    """uvicorn sets SO_REUSEADDR, so it can listen again at once after a restart; the check must too."""
    with socket.socket() as server:  # the server before the restart: uvicorn, with SO_REUSEADDR as well
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first: its end (127.0.0.1:port) goes to TIME_WAIT
        client.recv(1)
        client.close()
    time.sleep(0.1)
    with socket.socket() as plain:
        try:
            plain.bind(("127.0.0.1", port))
        except OSError:
            pass  # TIME_WAIT holds the port against a bind without SO_REUSEADDR, as expected
        else:
            pytest.skip("no TIME_WAIT left on the port to test with")
    assert listen_problem("127.0.0.1", port) is None


def interrupt_while_importing(after_module: str) -> subprocess.CompletedProcess[str]:
    """``facerec models list`` sent SIGINT as soon as ``after_module`` has been imported (``-X importtime``
    reports each import as it ends): while the CLI's own modules still load."""
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", *facerec("models", "list")[1:]],
        cwd=REPO,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    head = []
    for line in proc.stderr:
        head.append(line)
        if line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == after_module:
            break
    else:
        pytest.fail(f"{after_module} was never imported")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(head) + err)


@pytest.mark.parametrize("after_module", ["service.commands", "service.bootstrap"])
def test_ctrl_c_while_the_cli_imports_exits_130_without_a_traceback(after_module: str) -> None:
    result = interrupt_while_importing(after_module)
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr, said
    assert len(said) <= 1 and result.stdout == ""


def test_ctrl_c_after_a_fraction_of_a_second_exits_130() -> None:
    for delay in (0.2, 0.4):
        proc = subprocess.Popen(
            facerec("models", "list"), cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0 and out:  # finished before the signal came (a fast machine): nothing to test
            continue
        # -SIGINT: the signal came before the interpreter set its handler (a loaded machine); a shell says 130 too
        assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err[-3000:])
        assert b"Traceback" not in err and len(err.splitlines()) <= 1, err[-3000:]


class _Interrupting(importlib.abc.MetaPathFinder):
    """Ctrl-C in the middle of importing ``service.cli``."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: object = None) -> ModuleSpec | None:
        if name == "service.cli":
            raise KeyboardInterrupt
        return None


def test_the_entry_point_turns_ctrl_c_during_imports_into_130(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.entry import main

    monkeypatch.delitem(sys.modules, "service.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 130


def test_the_console_script_is_the_guarded_entry_point() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["facerec"] == "service.entry:main"
