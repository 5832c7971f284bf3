"""Where CLI commands act: the local data dir (gallery + model in this process) or a running server (HTTP).

Both backends return the REST API's JSON shapes, so the commands format one kind of result.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import IO, Any, Protocol

import typer
from pydantic import ValidationError

from embeddings.errors import FaceRecError
from service.audit import Action, cli_actor
from service.bootstrap import Backend as Stores
from service.commands.datadir import require_data_dir
from service.commands.errors import CliError
from service.commands.remote import RemoteBackend
from service.config import Settings
from service.gallery import Gallery, GalleryLocked
from service.settings_env import settings_problems


def load_settings(**overrides: object) -> Settings:
    """The settings from the environment with the command's options (None = not given) on top. A bad value
    (``FACEREC_VECTOR_BACKEND=faiss`` with a database URL, a port out of range...) exits 2 with one line per
    problem, never a traceback."""
    try:
        return Settings.model_validate({k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for line in settings_problems(exc):
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def opened_stores(settings: Settings, *, gallery: bool = False, existing: bool = False) -> Iterator[Stores]:
    """:func:`service.bootstrap.open_backend` for a command, closed on exit; a backend that cannot be opened
    (not installed, unreachable, data dir in use or, with ``existing``, missing) exits 1 with its message."""
    from service.bootstrap import open_backend as open_stores

    try:
        if existing:
            require_data_dir(settings)
        stores = open_stores(settings, gallery=gallery)
    except FaceRecError as exc:
        typer.echo(f"error: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    try:
        yield stores
    finally:
        stores.close()


class Backend(Protocol):
    def all_subjects(self) -> list[dict[str, Any]]: ...
    def get_subject(self, subject_id: str) -> dict[str, Any]: ...
    def create_subject(self, name: str) -> dict[str, Any]: ...
    def delete_subject(self, subject_id: str, *, erase_photo_faces: bool = False) -> None: ...
    def export_subject(self, subject_id: str, out: IO[bytes]) -> dict[str, int]: ...
    def list_faces(self, subject_id: str) -> list[dict[str, Any]]: ...
    def enroll(self, subject_id: str, images: list[bytes], *, largest: bool) -> dict[str, Any]: ...
    def identify(self, image: bytes, *, threshold: float | None, top_k: int | None) -> dict[str, Any]: ...
    def verify(self, image_a: bytes, image_b: bytes, *, threshold: float | None) -> dict[str, Any]: ...


class LocalBackend:
    """Works on the gallery the settings select (the data dir, or the database) in this process; opens the stores
    and loads the model only for commands that need them (``verify`` needs no stores, and creates no data dir)."""

    def __init__(self, settings: Settings, *, existing: bool = False) -> None:
        if existing:  # a command that needs the data dir's contents: none is created
            require_data_dir(settings)
        self.settings = settings
        self.actor = cli_actor()

    @cached_property
    def backend(self) -> Stores:
        from service.bootstrap import open_backend

        try:
            return open_backend(self.settings)
        except GalleryLocked as exc:
            raise CliError(
                f"the data dir {self.settings.data} is in use (is a server running on it?): "
                "pass --server URL --api-key KEY to go through the server"
            ) from exc

    @property
    def gallery(self) -> Gallery:
        return self.backend.open_gallery()

    def _record(self, action: Action, target: dict[str, Any], count: int | None = None) -> None:
        """Audit a change this process made to the data dir (like the API does; actor ``cli:<os user>``)."""
        self.backend.audit.record(action, actor=self.actor, target=target, count=count, via="cli")

    @cached_property
    def analyzer(self) -> Any:
        from service.bootstrap import default_analyzer

        return default_analyzer(self.settings)

    def close(self) -> None:
        if "backend" in self.__dict__:  # opened
            self.backend.close()

    def all_subjects(self) -> list[dict[str, Any]]:
        from service.convert import subject_out

        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            items, cursor = self.gallery.list_subjects(limit=500, cursor=cursor)
            out.extend(subject_out(s).model_dump(mode="json") for s in items)
            if not cursor:
                return out

    def get_subject(self, subject_id: str) -> dict[str, Any]:
        from service.convert import subject_out
        from service.gallery import SubjectNotFound

        try:
            return subject_out(self.gallery.get_subject(subject_id)).model_dump(mode="json")
        except SubjectNotFound as exc:
            raise CliError(f"no subject {subject_id!r}") from exc

    def create_subject(self, name: str) -> dict[str, Any]:
        from service.convert import subject_out

        subject = self.gallery.create_subject(name=name, metadata={})
        self._record("subject.create", {"subject_id": subject.id})
        return subject_out(subject).model_dump(mode="json")

    @contextmanager
    def _subject_stores(self) -> Iterator[dict[str, Any]]:
        """The stores that hold a subject's data, for an erasure or an export: ``gallery``, ``events``, ``jobs``
        and ``library`` (None when the photo library is off), closed on exit."""
        from service.bootstrap import event_store, job_store
        from service.photos.service import close_library, holding_photo_faces, open_library

        gallery = self.gallery  # first: a data dir in use is said before the other stores open
        media = self.backend.media  # the database's library with FACEREC_DATABASE_URL
        shared = media.photos if media else None
        events, jobs = event_store(self.settings, self.backend), job_store(self.settings, self.backend)
        library = open_library(self.settings.model_copy(update={"photo_recluster_interval_s": 0.0}), shared)
        try:
            with holding_photo_faces(self.settings, library, shared) as holder:
                yield {"gallery": gallery, "events": events, "jobs": jobs, "library": holder}
        finally:
            close_library(library)
            events.close()
            jobs.close()

    def delete_subject(self, subject_id: str, *, erase_photo_faces: bool = False) -> None:
        """As ``DELETE /v1/subjects/{id}`` (:func:`service.erasure.erase_subject`) on this process's stores."""
        from service.erasure import erase_subject
        from service.gallery import SubjectNotFound

        with self._subject_stores() as stores:
            try:
                erase_subject(subject_id, **stores, erase_photo_faces=erase_photo_faces)
            except SubjectNotFound as exc:
                raise CliError(f"no subject {subject_id!r}") from exc
        self._record("subject.delete", {"subject_id": subject_id})

    def export_subject(self, subject_id: str, out: IO[bytes]) -> dict[str, int]:
        """As ``GET /v1/subjects/{id}/export`` (:func:`service.subject_export.write_export`), audited."""
        from service.gallery import SubjectNotFound
        from service.subject_export import write_export

        with self._subject_stores() as stores:
            try:
                counts = write_export(out, subject_id, **stores)
            except SubjectNotFound as exc:
                raise CliError(f"no subject {subject_id!r}") from exc
        self._record("subject.export", {"subject_id": subject_id, **counts})
        return counts

    def list_faces(self, subject_id: str) -> list[dict[str, Any]]:
        from service.convert import face_out

        return [face_out(r).model_dump(mode="json") for r in self.gallery.list_faces(subject_id)]

    def enroll(self, subject_id: str, images: list[bytes], *, largest: bool) -> dict[str, Any]:
        from service import recognition
        from service.convert import face_out

        result = recognition.enroll(
            gallery=self.gallery,  # first: a data dir in use is said before the model loads
            analyzer=self.analyzer,
            subject_id=subject_id,
            images=images,
            largest=largest,
            store_crop=self.settings.store_crops,
        )
        if result.faces:
            face_ids = [r.id for r in result.faces]
            self._record("face.enroll", {"subject_id": subject_id, "face_ids": face_ids}, count=len(face_ids))
        return {
            "faces": [face_out(r).model_dump(mode="json") for r in result.faces],
            "rejected": [vars(r) for r in result.rejected],
        }

    def identify(self, image: bytes, *, threshold: float | None, top_k: int | None) -> dict[str, Any]:
        from service import recognition
        from service.convert import identify_response

        result = recognition.identify(
            gallery=self.gallery,  # first: a data dir in use is said before the model loads
            analyzer=self.analyzer,
            image=image,
            threshold=threshold,
            top_k=self.settings.top_k if top_k is None else top_k,
            fixed_threshold=self.settings.match_threshold,
            max_fir=self.settings.max_fir,
        )
        return identify_response(result).model_dump(mode="json")

    def verify(self, image_a: bytes, image_b: bytes, *, threshold: float | None) -> dict[str, Any]:
        from service import recognition
        from service.convert import verify_response

        result = recognition.verify_images(
            analyzer=self.analyzer,
            image_a=image_a,
            image_b=image_b,
            threshold=self.settings.match_threshold if threshold is None else threshold,
        )
        return verify_response(result).model_dump(mode="json")


SERVER_OPTION = typer.Option(None, "--server", help="URL of a running facerec server (default: local data dir).")
API_KEY_OPTION = typer.Option(None, "--api-key", envvar="FACEREC_API_KEY", help="X-API-Key for --server.")
DATA_OPTION = typer.Option(None, "--data", help="Local data dir (default: $FACEREC_DATA or ./data).")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")


@contextmanager
def open_backend(
    server: str | None, api_key: str | None, data: Path | None, *, existing: bool = False
) -> Iterator[Backend]:
    """The backend the options select (``existing``: see :class:`LocalBackend`); closed on exit. A :class:`CliError`
    or a library error (:class:`FaceRecError`: no face, invalid image, weights unavailable...) exits 1."""
    backend: LocalBackend | RemoteBackend
    if server and data is not None:
        typer.echo(f"note: --data {data} is not used with --server (the server has its own data)", err=True)
    try:
        if server:
            backend = RemoteBackend(server, api_key)
        else:
            backend = LocalBackend(load_settings(data=data), existing=existing)
        try:
            yield backend
        finally:
            backend.close()
    except CliError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except FaceRecError as exc:  # no face, not an image, weights missing...: one line, not a traceback
        typer.echo(f"error: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(1) from exc


COMMON_SKIP = ("backend", "as_json")
COMMON_OPTIONS = (
    ("server", SERVER_OPTION, str | None),
    ("api_key", API_KEY_OPTION, str | None),
    ("data", DATA_OPTION, Path | None),
    ("as_json", JSON_OPTION, bool),
)
"""The options of every :func:`backend_command`, in their order in ``--help``: (parameter, option, type)."""


def backend_command(func: Callable[..., None], *, existing: bool = False) -> Callable[..., None]:
    """A command on the backend the common options select: ``func(backend, <own parameters>, as_json=...)``
    becomes a command with its own parameters, then ``--server``, ``--api-key``, ``--data`` (the backend,
    opened by :func:`open_backend` around the whole command, ``existing`` passed on) and ``--json``."""
    own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name not in COMMON_SKIP]
    params = own + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
        for name, option, annotation in COMMON_OPTIONS
    ]

    @functools.wraps(func)
    def command(*, server: str | None, api_key: str | None, data: Path | None, as_json: bool, **values: Any) -> None:
        with open_backend(server, api_key, data, existing=existing) as backend:
            func(backend, as_json=as_json, **values)

    command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return command


def reading_command(func: Callable[..., None]) -> Callable[..., None]:
    """:func:`backend_command` for a command on what a data dir holds: a missing one is an error, not created."""
    return backend_command(func, existing=True)


def read_image(path: Path) -> bytes:
    """The bytes of an image file; :class:`CliError` for anything else (a FIFO would block, a device never end)."""
    if not path.is_file():
        raise CliError(f"{path} is not a regular file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
