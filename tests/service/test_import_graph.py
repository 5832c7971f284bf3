"""The import graph of ``service/`` and ``embeddings/``: no cycles among modules (imports inside functions
included: a lazy import still couples two modules), and the layering rules of docs/ARCHITECTURE.md:
``embeddings`` never imports ``service``; ``service.gallery`` imports nothing of the service above it; nothing
but the app and the CLI imports the app or the routes. Static (``ast``): nothing is imported to check it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("embeddings", "service")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """The project modules ``name`` imports (a ``from package import submodule`` counts as the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # ``import service.gallery.x as y`` -> the deepest module
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


GRAPH = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def _is_ancestor(package: str, module: str) -> bool:
    return module.startswith(package + ".")


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components; an edge from a package's ``__init__`` to its own submodules and
    from a submodule to its parent package (what importing it implies) are not cycles of design."""
    graph = {
        m: {t for t in targets if not _is_ancestor(t, m) and not _is_ancestor(m, t)} for m, targets in GRAPH.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_layers() -> None:
    def imports_of(prefix: str) -> set[tuple[str, str]]:
        return {(m, t) for m, ts in GRAPH.items() if m == prefix or m.startswith(prefix + ".") for t in ts}

    assert not {(m, t) for m, t in imports_of("embeddings") if t.startswith("service")}
    gallery_up = {
        (m, t)
        for m, t in imports_of("service.gallery")
        if t.startswith("service.") and not t.startswith("service.gallery")
    }
    assert not gallery_up, gallery_up
    app_users = {m for m, ts in GRAPH.items() for t in ts if t == "service.app"}
    assert app_users <= {"service.commands.serve"}, app_users
    route_users = {
        m
        for m, ts in GRAPH.items()
        for t in ts
        if t.startswith("service.routes") and not m.startswith("service.routes")
    }
    assert route_users <= {"service.app"}, route_users
