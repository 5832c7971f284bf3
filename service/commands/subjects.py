"""``facerec subjects list|show|delete``: the enrolled people, locally or through a server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from service.commands.backend import Backend, reading_command
from service.commands.errors import CliError

app = typer.Typer(help="List, show, export and delete enrolled subjects.", no_args_is_help=True)


@app.command("list")
@reading_command
def list_subjects(
    backend: Backend,
    *,
    as_json: bool,
) -> None:
    """Every subject with its number of faces."""
    subjects = backend.all_subjects()
    if as_json:
        typer.echo(json.dumps(subjects))
        return
    table = Table("id", "name", "faces", "created", title=f"{len(subjects)} subjects")
    for s in subjects:
        table.add_row(s["id"], s["name"], str(s["face_count"]), str(s["created_at"]))
    Console().print(table)


@app.command("show")
@reading_command
def show(
    backend: Backend,
    subject_id: str = typer.Argument(..., help="The subject's id."),
    *,
    as_json: bool,
) -> None:
    """A subject and its faces."""
    subject = backend.get_subject(subject_id)
    faces = backend.list_faces(subject_id)
    if as_json:
        typer.echo(json.dumps({**subject, "faces": faces}))
        return
    console = Console()
    console.print(f"[bold]{subject['name']}[/] ({subject['id']}), {subject['face_count']} faces")
    if subject["metadata"]:
        console.print(f"metadata: {json.dumps(subject['metadata'])}")
    table = Table("face id", "box (x, y, w, h) px", "image sha256", "created")
    for f in faces:
        box = f.get("box") or {}
        coords = ", ".join(f"{box[k]:.0f}" for k in ("x", "y", "width", "height")) if box else "-"
        table.add_row(str(f["id"]), coords, (f.get("image_sha256") or "-")[:16], str(f["created_at"]))
    console.print(table)


@app.command("delete")
@reading_command
def delete(
    backend: Backend,
    subject_id: str = typer.Argument(..., help="The subject's id."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    erase_photo_faces: bool = typer.Option(
        False,
        "--erase-photo-faces",
        help="Photo library: also erase this person's faces in indexed photos (default: kept, unnamed).",
    ),
    *,
    as_json: bool,
) -> None:
    """Erase a subject and all its faces, events and video tracks; its photo-library faces are unnamed (or erased
    with --erase-photo-faces)."""
    subject = backend.get_subject(subject_id)
    if not yes and not typer.confirm(f"Erase {subject['name']} and {subject['face_count']} faces?"):
        raise typer.Exit(1)
    backend.delete_subject(subject_id, erase_photo_faces=erase_photo_faces)
    if as_json:
        typer.echo(json.dumps({"deleted": subject_id, "faces": subject["face_count"]}))
    else:
        typer.echo(f"deleted {subject['name']} ({subject_id}) and {subject['face_count']} faces")


@app.command("export")
@reading_command
def export(
    backend: Backend,
    subject_id: str = typer.Argument(..., help="The subject's id."),
    out: Path | None = typer.Option(None, "--out", "-o", help="The ZIP to write (default: subject-<id>.zip here)."),
    *,
    as_json: bool,
) -> None:
    """Everything held about a subject (faces and crops, events, video tracks, photo-library faces) as one ZIP, as
    GET /v1/subjects/{id}/export: a person's data access request. The file is readable by you only; an existing
    file is not overwritten. Audited (subject.export)."""
    target = out if out is not None else Path(f"subject-{subject_id}.zip")
    if target.exists():
        typer.echo(f"error: {target} exists: choose another --out", err=True)
        raise typer.Exit(2)
    partial = target.with_name(f".{target.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            counts = backend.export_subject(subject_id, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    if as_json:
        typer.echo(json.dumps({"subject_id": subject_id, "file": str(target), "counts": counts}))
    else:
        parts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
        typer.echo(f"wrote {target}: {parts}")
