"""``facerec calibrate --model ID --root DIR``: fit a model's open-set calibration tables on a labelled folder.

``DIR`` holds one sub-folder per person (the LFW layout). Every image's largest face is embedded with the model;
the tables (:func:`service.gallery.calibration.fit_calibration`) are written to
``<cache>/calibration/<model_id>.npz`` and, from 13 people on, the cohort normalisation with its own table
(:func:`service.gallery.normalisation.fit_normalisation`) to ``<model_id>.cohort.npz`` next to them, where
identify finds them (they take precedence over shipped ones; with too few people a stale normalisation file of
the model is removed, so identify decides on the L2 distance with the new tables).
The people should be people the model was not trained on, and ideally people like those the service will see.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from embeddings.training.data import IMAGE_SUFFIXES
from embeddings.weights import MODEL_ID

console = Console(stderr=True)


def calibrate_folder(
    model_id: str, root: Path, *, people: Sequence[str] | None = None, cache: Path | None = None, seed: int = 0
) -> tuple[Path, dict[str, object]]:
    """Embed ``root``'s people (all sub-folders, or only ``people``) with ``model_id`` and write its tables.
    Returns the table path and a summary. ``ValueError`` when fewer than 2 people have a detected face,
    ``OSError`` when the tables cannot be written."""
    from embeddings import FaceAnalyzer
    from embeddings.errors import InvalidImage
    from embeddings.models import resolve_model
    from service.commands.backend import load_settings
    from service.gallery.calibration import TABLES_SUFFIX, fit_calibration, sample_people, user_tables_dir
    from service.gallery.normalisation import SUFFIX, fit_normalisation

    info = resolve_model(model_id)
    analyzer = FaceAnalyzer(load_settings().analyzer_config(), weights_path=info.weights_path, model_id=info.model_id)
    wanted = set(people) if people is not None else None
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir() and (wanted is None or p.name in wanted))
    embs, labels, misses = [], [], 0
    for folder in folders:
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
                continue
            try:
                faces = analyzer.analyze(f.read_bytes())
            except (InvalidImage, OSError):  # not an image, or unreadable: counted as a miss
                faces = []
            if not faces:
                misses += 1
                continue
            embs.append(faces[0].embedding)
            labels.append(folder.name)
    if len(set(labels)) < 2:
        raise ValueError(f"{root}: calibration needs faces of at least 2 people; found {len(set(labels))}")
    source = f"{len(embs)} images of {len(set(labels))} people in {Path(root).name!r} (facerec calibrate)"
    cal = fit_calibration(np.stack(embs), np.array(labels), model_id=info.model_id, source=source, seed=seed)
    try:
        sample = sample_people(np.stack(embs), np.array(labels), seed=seed)
        norm = fit_normalisation(sample, model_id=info.model_id, source=source)
    except ValueError:  # too few people for a cohort: identify uses the L2 tables alone
        norm = None
    # both fitted before either is written: a failed fit leaves the model's existing tables as they were
    path = user_tables_dir(cache) / f"{info.model_id}{TABLES_SUFFIX}"
    norm_file = user_tables_dir(cache) / f"{info.model_id}{SUFFIX}"
    cal.save(path)
    if norm is not None:
        norm.save(norm_file)
    else:
        norm_file.unlink(missing_ok=True)
    norm_path = norm_file if norm is not None else None
    summary: dict[str, object] = {
        "model_id": info.model_id,
        "tables": str(path),
        "normalisation": str(norm_path) if norm_path else None,
        "rule": cal.rule,
        "people": cal.people,
        "images": len(embs),
        "probes": len(cal.n),
        "no_face": misses,
    }
    return path, summary


def calibrate(
    model: str = typer.Option(MODEL_ID, "--model", help="Model id (`facerec models list`)"),
    root: Path = typer.Option(
        ..., "--root", exists=True, file_okay=False, help="<root>/<person>/<image>: people the model was not trained on"
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, help="Seed of the photos each person is enrolled with and of the probes"
    ),
) -> None:
    """Fit MODEL's open-set calibration tables on ROOT and save them where identify finds them."""
    from embeddings.errors import FaceRecError

    try:
        _, summary = calibrate_folder(model, root, seed=seed)
    except FaceRecError as exc:  # an unknown model, weights missing...
        console.print(f"error: {exc.code}: {exc.message}", markup=False, highlight=False)
        raise typer.Exit(1) from exc
    except ValueError as exc:  # too few people with a face: the folder does not suit
        console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from exc
    except OSError as exc:  # the calibration dir cannot be written (read-only cache, a file in its place, disk full)
        console.print(f"error: cannot write the calibration tables: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(summary))
