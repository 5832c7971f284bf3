"""``facerec enroll DIR``: bulk enrolment from one folder per person (the LFW layout), resumable by sha256."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from service.commands.backend import (
    API_KEY_OPTION,
    DATA_OPTION,
    JSON_OPTION,
    SERVER_OPTION,
    Backend,
    open_backend,
    read_image,
)
from service.commands.errors import CliError
from service.commands.progress import progress_bar
from service.schemas import SubjectCreate

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"})

PER_IMAGE_STATUS = frozenset({413, 415, 422, 500})
"""Server answers that concern one image (too large, unreadable...): listed as rejections, the run goes on."""


@dataclass
class EnrollSummary:
    """Counts per run; ``rejected`` lists ``{"file", "code", "message"}``."""

    subjects_created: int = 0
    enrolled: int = 0
    skipped: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    per_subject: dict[str, dict[str, Any]] = field(default_factory=dict)


def scan(root: Path) -> dict[str, list[Path]]:
    """``{person: [image paths]}`` from ``root/<person>/*.<image>``, sorted; empty folders are left out."""
    people: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            people[folder.name] = images
    return people


def display_name(folder: str) -> str:
    """Folder names such as ``George_W_Bush`` become ``George W Bush``."""
    return folder.replace("_", " ").strip()


def name_problem(name: str) -> str | None:
    """Why the API would refuse ``name`` as a subject name (the rule of ``POST /v1/subjects``), or None."""
    try:
        SubjectCreate.model_validate({"name": name})
    except ValidationError as exc:
        return "; ".join(str(e["msg"]) for e in exc.errors())
    return None


def run_enrollment(
    backend: Backend, people: dict[str, list[Path]], *, largest: bool, progress: Progress | None = None
) -> EnrollSummary:
    """Enrol every image, one subject per folder (found by name or created); enrolled bytes are skipped.

    A new folder's subject is created only when its first image is sent, and deleted again if none of its
    images was enrolled, so a folder of rejects leaves no empty subject behind. An image the backend refuses
    outright (e.g. a 413 from the server) is listed as a rejection and the run goes on.
    """
    summary = EnrollSummary()
    by_name = {s["name"]: s for s in backend.all_subjects()}
    task = progress.add_task("enrolling", total=sum(len(v) for v in people.values())) if progress else None
    for folder, images in people.items():
        name = display_name(folder)
        if (problem := name_problem(name)) is not None:  # e.g. "___" or 250 characters: the whole folder
            summary.rejected.append({"file": folder, "code": "invalid_name", "message": f"subject name: {problem}"})
            if progress is not None and task is not None:
                progress.update(task, advance=len(images), description=name[:40])
            continue
        subject = by_name.get(name)
        created = False
        known = {f.get("image_sha256") for f in backend.list_faces(subject["id"])} if subject else set()
        counts: dict[str, Any] = {
            "id": subject["id"] if subject else None,
            "enrolled": 0,
            "skipped": 0,
            "rejected": 0,
        }
        try:
            for path in images:
                try:
                    data = read_image(path)
                except CliError as exc:  # unreadable (I/O error, permissions): listed, the run goes on
                    counts["rejected"] += 1
                    summary.rejected.append({"file": str(path), "code": "unreadable", "message": str(exc)})
                    continue
                if hashlib.sha256(data).hexdigest() in known:
                    counts["skipped"] += 1
                else:
                    if subject is None:
                        subject = backend.create_subject(name)
                        created = True
                        counts["id"] = subject["id"]
                    try:
                        result = backend.enroll(subject["id"], [data], largest=largest)
                    except CliError as exc:
                        if exc.status not in PER_IMAGE_STATUS:  # unreachable, 401, 404...: every image would fail
                            raise
                        result = {"faces": [], "rejected": [{"code": exc.code, "message": str(exc)}]}
                    counts["enrolled"] += len(result["faces"])
                    for r in result["rejected"]:
                        if r["code"] == "duplicate":
                            counts["skipped"] += 1
                        else:
                            counts["rejected"] += 1
                            summary.rejected.append({"file": str(path), "code": r["code"], "message": r["message"]})
                if progress is not None and task is not None:
                    progress.update(task, advance=1, description=name)
        except BaseException:  # an error or Ctrl-C mid-folder: still leave no empty subject behind
            if created and subject is not None and counts["enrolled"] == 0:
                with contextlib.suppress(Exception):
                    backend.delete_subject(subject["id"])
            raise
        if created and subject is not None and counts["enrolled"] == 0:
            backend.delete_subject(subject["id"])  # every image was rejected: leave no empty subject
            counts["id"] = None
        elif created:
            summary.subjects_created += 1
        summary.per_subject[name] = counts
        summary.enrolled += counts["enrolled"]
        summary.skipped += counts["skipped"]
    return summary


def enroll(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="One folder per person."),
    largest: bool = typer.Option(False, "--largest", help="Take the largest face of group photos."),
    server: str = SERVER_OPTION,
    api_key: str = API_KEY_OPTION,
    data: Path = DATA_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Enrol DIR/<person>/*.jpg: each folder is a subject (created if new).

    Images already enrolled are skipped by their sha256, so an interrupted run can simply be run again;
    rejected images are listed with reasons."""
    people = scan(directory)
    if not people:
        typer.echo(f"error: no <person>/<image> folders under {directory}", err=True)
        raise typer.Exit(1)
    console = Console(stderr=True)
    with (
        open_backend(server, api_key, data) as backend,
        progress_bar(console, width=24, disable=as_json, transient=True) as progress,
    ):
        summary = run_enrollment(backend, people, largest=largest, progress=progress)
    if as_json:
        typer.echo(json.dumps(asdict(summary)))
        return
    out = Console()
    table = Table("subject", "enrolled", "skipped", "rejected", title="enrolment")
    for name, c in summary.per_subject.items():
        table.add_row(name, str(c["enrolled"]), str(c["skipped"]), str(c["rejected"]))
    out.print(table)
    out.print(
        f"{summary.enrolled} faces enrolled, {summary.skipped} already enrolled (skipped), "
        f"{len(summary.rejected)} rejected, {summary.subjects_created} new subjects"
    )
    if summary.rejected:
        reasons = Counter(r["code"] for r in summary.rejected)
        out.print("rejected: " + ", ".join(f"{code} x{n}" for code, n in reasons.most_common()))
        rej = Table("file", "reason", "detail", title="rejected images")
        for r in summary.rejected:
            rej.add_row(r["file"], r["code"], r["message"])
        out.print(rej)
