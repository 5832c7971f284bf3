"""``facerec photos index DIR`` (every image under DIR, recursively; resumable: photos already indexed by sha256
are skipped) and ``facerec photos recluster``, on the local data dir or a server (``--server URL``)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from embeddings.errors import FaceRecError
from service.commands.backend import (
    API_KEY_OPTION,
    DATA_OPTION,
    JSON_OPTION,
    SERVER_OPTION,
    LocalBackend,
    load_settings,
    read_image,
)
from service.commands.enroll import IMAGE_SUFFIXES, PER_IMAGE_STATUS
from service.commands.errors import CliError
from service.commands.remote import RemoteBackend
from service.config import Settings

app = typer.Typer(help="The photo library: index a folder of photos, re-cluster unnamed faces.", no_args_is_help=True)


Outcome = dict[str, Any] | FaceRecError | CliError
"""Of one photo: the indexed photo (``PhotoOut`` as JSON) or why it was refused."""


class PhotoBackend(Protocol):
    def known_sha256s(self) -> set[str]: ...
    def index_many(self, items: Iterable[tuple[bytes, str]]) -> Iterator[tuple[str | None, Outcome]]:
        """``(external_id, outcome)`` of each ``(image, external_id)``, in order, once stored."""
        ...

    def recluster(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class LocalPhotos:
    """The library of a local data dir or of the database (FACEREC_PHOTO_LIBRARY must be on), with the model in
    this process."""

    def __init__(self, settings: Settings, *, existing: bool = False) -> None:
        from service.photos.service import open_library

        if not settings.photo_library:
            raise CliError("the photo library is off: set FACEREC_PHOTO_LIBRARY=true to keep faces of indexed photos")
        self.backend = LocalBackend(settings, existing=existing)
        self.settings = settings
        shared = self.backend.backend.media  # the database's library with FACEREC_DATABASE_URL
        lib = open_library(
            settings.model_copy(update={"photo_recluster_interval_s": 0.0}), shared.photos if shared else None
        )
        assert lib is not None
        self.lib = lib

    def known_sha256s(self) -> set[str]:
        return self.lib.store.known_sha256s()

    def index_many(self, items: Iterable[tuple[bytes, str]]) -> Iterator[tuple[str | None, Outcome]]:
        """The batched pipeline (:mod:`service.photos.pipeline`) with ``FACEREC_INFERENCE_THREADS`` workers."""
        from service.photos.library import IndexOptions
        from service.photos.pipeline import index_photos
        from service.photos.schemas import PhotoOut

        backend, options = self.backend, IndexOptions.of(self.settings)
        workers = self.settings.inference_threads
        for external_id, r in index_photos(
            self.lib, analyzer=backend.analyzer, gallery=backend.gallery, items=items, options=options, workers=workers
        ):
            yield (
                external_id,
                r if isinstance(r, FaceRecError) else PhotoOut.of(r.photo, r.faces, r.created).model_dump(mode="json"),
            )

    def recluster(self) -> dict[str, Any]:
        from service.photos.clusters import recluster_all

        return vars(recluster_all(self.lib))

    def close(self) -> None:
        from service.photos.service import close_library

        close_library(self.lib)
        self.backend.close()


class RemotePhotos:
    """A running server's library; already indexed photos are answered 200 by the server without analysis."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.remote = RemoteBackend(url, api_key)

    def known_sha256s(self) -> set[str]:
        return set()

    def index_many(self, items: Iterable[tuple[bytes, str]]) -> Iterator[tuple[str | None, Outcome]]:
        for image, external_id in items:
            files = {"image": ("image", image, "application/octet-stream")}
            try:
                result: dict[str, Any] = self.remote._call(
                    "POST", "/v1/photos", files=files, data={"external_id": external_id}
                )
            except CliError as exc:
                if exc.status not in PER_IMAGE_STATUS:
                    raise
                yield external_id, exc
            else:
                yield external_id, result

    def recluster(self) -> dict[str, Any]:
        result: dict[str, Any] = self.remote._call("POST", "/v1/clusters/recluster")
        return result

    def close(self) -> None:
        self.remote.close()


@dataclass
class IndexSummary:
    photos: int = 0
    indexed: int = 0
    skipped: int = 0
    faces: int = 0
    named: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)


def scan(root: Path) -> list[Path]:
    """Every image file under ``root`` (recursively, hidden entries below ``root`` left out: ``root`` itself may
    lie in a hidden folder such as ``~/.cache``), sorted."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(x.startswith(".") for x in p.relative_to(root).parts)
    )


def run_index(backend: PhotoBackend, root: Path, files: list[Path], progress: Progress | None = None) -> IndexSummary:
    """Index each file (external id: its path relative to ``root``); sha256s already indexed are skipped, an
    unreadable or refused image is listed and the run goes on."""
    summary = IndexSummary(photos=len(files))
    known = backend.known_sha256s()
    task = progress.add_task("indexing", total=len(files)) if progress else None

    def advance() -> None:
        if progress is not None and task is not None:
            progress.advance(task)

    def todo() -> Iterator[tuple[bytes, str]]:
        for path in files:
            try:
                data = read_image(path)
            except CliError as exc:  # unreadable (I/O error, permissions): listed, the run goes on
                summary.rejected.append({"file": str(path), "code": "unreadable", "message": str(exc)})
                advance()
                continue
            if hashlib.sha256(data).hexdigest() in known:
                summary.skipped += 1
                advance()
            else:
                yield data, str(path.relative_to(root))

    for external_id, out in backend.index_many(todo()):
        if isinstance(out, FaceRecError | CliError):
            message = out.message if isinstance(out, FaceRecError) else str(out)
            summary.rejected.append({"file": str(root / str(external_id)), "code": out.code, "message": message})
        elif out.get("created", True):
            summary.indexed += 1
            summary.faces += len(out["faces"])
            summary.named += sum(f["subject_id"] is not None for f in out["faces"])
        else:
            summary.skipped += 1
        advance()
    return summary


def _open(server: str | None, api_key: str | None, data: Path | None, *, existing: bool = False) -> PhotoBackend:
    """``existing``: a missing data dir is an error (:class:`LocalBackend`), not created."""
    if server:
        return RemotePhotos(server, api_key)
    return LocalPhotos(load_settings(data=data), existing=existing)


@app.command("index")
def index(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder of photos (searched recursively)."),
    server: str | None = SERVER_OPTION,
    api_key: str | None = API_KEY_OPTION,
    data: Path | None = DATA_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Index every photo under FOLDER: all faces stored, named when they match an enrolled person, the others
    grouped into clusters. Resumable: photos already indexed (same sha256) are skipped."""
    files = scan(folder)
    try:
        backend = _open(server, api_key, data)
        try:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, disable=as_json, transient=False) as progress:
                summary = run_index(backend, folder, files, progress)
        finally:
            backend.close()
    except CliError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except FaceRecError as exc:  # the library or database cannot be opened: one line
        typer.echo(f"error: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(vars(summary)))
        return
    typer.echo(
        f"{summary.indexed} photos indexed ({summary.faces} faces, {summary.named} named), "
        f"{summary.skipped} already indexed, {len(summary.rejected)} rejected of {summary.photos}"
    )
    for code, n in Counter(r["code"] for r in summary.rejected).most_common():
        typer.echo(f"  rejected {n}: {code}")


@app.command("recluster")
def recluster(
    server: str | None = SERVER_OPTION,
    api_key: str | None = API_KEY_OPTION,
    data: Path | None = DATA_OPTION,
) -> None:
    """Cluster every unnamed face again now (the server also does it in the background)."""
    try:
        backend = _open(server, api_key, data, existing=True)
        try:
            out = backend.recluster()
        finally:
            backend.close()
    except CliError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except FaceRecError as exc:
        typer.echo(f"error: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{out['faces']} unnamed faces in {out['clusters']} clusters ({out['seconds']:.1f} s)")
