"""``facerec backup DEST`` and ``facerec restore SRC``: a checked copy of the embedded data dir, taken while a
server runs, and its restore into an empty data dir (:mod:`service.backup`). Refusals (a destination that is not
empty, a damaged backup, the PostgreSQL backend) exit 2 and change nothing; a copy that fails exits 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from embeddings.errors import FaceRecError
from service.commands.backend import DATA_OPTION, JSON_OPTION, load_settings
from service.config import Settings

POSTGRES = (
    "with FACEREC_DATABASE_URL the gallery, keys and audit log live in PostgreSQL, not in the data dir: "
    "{verb} it with {tool} (docs/POSTGRES.md, 'Backup and restore')"
)


def _embedded(settings: Settings, verb: str, tool: str) -> None:
    """Exit 2 in one line when the settings select PostgreSQL."""
    if settings.database_url:
        typer.echo(f"error: {POSTGRES.format(verb=verb, tool=tool)}", err=True)
        raise typer.Exit(2)


def _fail(exc: FaceRecError) -> typer.Exit:
    """Print ``exc`` in one line; the exit: 2 for a refusal (nothing changed), 1 otherwise."""
    from service.backup import BackupRefused

    typer.echo(f"error: {exc.code}: {exc.message}", err=True)
    return typer.Exit(2 if isinstance(exc, BackupRefused) else 1)


def _summary(manifest: Any) -> str:
    counts = ", ".join(f"{n} {name}" for name, n in manifest.counts.items())
    size = sum(f.size for f in manifest.files)
    return f"{len(manifest.files)} files, {size / 1e6:.1f} MB ({counts or 'empty'})"


def _cache_summary(paths: list[str]) -> str:
    """``n files (models <ids>; m calibration files)`` of the cache files ``paths`` (paths in the cache)."""
    from service.backup.layout import CALIBRATION, MODELS

    models = sorted({p.split("/")[1] for p in paths if p.startswith(f"{MODELS}/")})
    tables = sum(p.startswith(f"{CALIBRATION}/") for p in paths)
    what = []
    if models:
        what.append(f"models {', '.join(models)}")
    if tables:
        what.append(f"{tables} calibration file{'s' if tables > 1 else ''}")
    return f"{len(paths)} file{'s' if len(paths) > 1 else ''} ({'; '.join(what)})"


def _removed(path: Path) -> None:
    typer.echo(f"note: removed {path}, left by an interrupted backup or restore", err=True)


def _clean_up_after_interrupted(target: Path) -> None:
    """Remove (and say so) what a killed backup or restore into ``target`` left behind."""
    from service.backup.files import remove_interrupted

    for path in remove_interrupted(target):
        _removed(path)


def backup(
    dest: Path = typer.Argument(..., help="A new or empty folder to write the backup to."),
    data: Path = DATA_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Back up the data dir into DEST, while a server may be running on it.

    Every SQLite database is copied online and integrity-checked, then the other files (video uploads) and the
    audit log; the index snapshots are left out (rebuilt from the gallery on start); then, from FACEREC_CACHE, the
    fine-tuned models and calibration tables of the models the data dir uses (not the pretrained weights). DEST
    gets a manifest.json with every file's size and sha256; folders are 0700, files 0600.
    """
    from embeddings.weights import cache_dir
    from service.backup.create import take_backup
    from service.backup.layout import CACHE_FOLDER
    from service.commands.datadir import require_data_dir

    settings = load_settings(data=data)
    _embedded(settings, "back", "pg_dump")
    try:
        require_data_dir(settings)
        _clean_up_after_interrupted(dest)
        manifest = take_backup(settings.data, dest, model=settings.model, cache=cache_dir())
    except FaceRecError as exc:
        raise _fail(exc) from exc
    except OSError as exc:  # a destination this user cannot write, a full disk
        typer.echo(f"error: backup_failed: {exc.strerror or exc}: {exc.filename or dest}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps({"backup": str(dest), **json.loads(manifest.to_json())}))
        return
    cached = f"; FACEREC_CACHE: {_cache_summary([f.path for f in manifest.cache])}" if manifest.cache else ""
    typer.echo(f"backed up {settings.data} to {dest}: {_summary(manifest)}{cached}")
    for path, why in manifest.skipped.items():
        if path.startswith(f"{CACHE_FOLDER}/"):
            typer.echo(f"warning: {why}", err=True)


def restore(
    src: Path = typer.Argument(..., help="A folder written by `facerec backup`."),
    data: Path = DATA_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Restore the backup SRC into the data dir, which must be empty or absent (never overwritten).

    Every file is checked against the manifest's sha256 first: a damaged or incomplete backup is refused before
    anything is written. The fine-tuned models and calibration tables it carries go into FACEREC_CACHE: one
    already there with the same sha256 is kept, a different one refuses the restore. Start `facerec serve` on the
    data dir afterwards: it rebuilds the index from the gallery.
    """
    from embeddings.weights import cache_dir
    from service.backup.restore import restore as run_restore

    settings = load_settings(data=data)
    _embedded(settings, "restore", "pg_restore")
    try:
        _clean_up_after_interrupted(settings.data)
        done = run_restore(src, settings.data, cache_dir(), on_removed=_removed)
    except FaceRecError as exc:
        raise _fail(exc) from exc
    except OSError as exc:
        typer.echo(f"error: backup_failed: {exc.strerror or exc}: {exc.filename or settings.data}", err=True)
        raise typer.Exit(1) from exc
    manifest = done.manifest
    if as_json:
        put = {"cache_dir": str(cache_dir()), "cache_written": done.wrote, "cache_kept": done.kept}
        typer.echo(json.dumps({"data": str(settings.data), **put, **json.loads(manifest.to_json())}))
        return
    typer.echo(f"restored {src} ({manifest.created_at}) into {settings.data}: {_summary(manifest)}")
    if done.wrote or done.kept:
        kept = f" ({len(done.kept)} of them already there)" if done.kept else ""
        typer.echo(f"into FACEREC_CACHE {cache_dir()}: {_cache_summary(done.wrote + done.kept)}{kept}")
