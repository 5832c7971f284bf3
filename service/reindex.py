"""Re-embed the whole gallery with another model (``facerec reindex --model <id>``), resumably, without downtime.

Data model (see docs/GALLERY.md): every face keeps its serving embedding in ``faces`` (``model_id`` +
``embedding``) and, since schema 2, its aligned 160x160 crop in ``face_crops``. A re-index to model ``X``:

1. **Embed** (slow, resumable): the crops of faces not of ``X`` and without a staged embedding of ``X`` are read
   in id order, embedded in batches with ``X``, and each batch is committed to ``face_embeddings`` (staging).
   A second run continues with the faces that have no staged row yet. Staged rows reference their face with
   ``ON DELETE CASCADE``, so erasing a face or subject erases its staged embeddings in the same transaction.
   Searches never read the staging table: the old model's index keeps serving throughout.
2. **Switch** (fast, atomic): :meth:`Gallery.switch_model` rewrites every face to ``X`` in one transaction
   (refused if any face still lacks a staged embedding), then moves the faces between the in-memory indexes.

Concurrency. When no server holds the data dir, ``reindex`` opens the gallery (taking its lock), embeds and
switches. When a server holds it, ``reindex`` does step 1 through its own SQLite connection (a second writer of
the staging table only, serialised by SQLite's own locking; it never writes the ``faces``/``deletions`` rows the
server's index mirrors), and step 2 happens when the server is restarted with ``FACEREC_MODEL=X``: at start,
before it reports ready, it embeds the faces enrolled since (:func:`finish_pending`) and switches. One re-index
at a time per data dir (``<data>/REINDEX.lock``). :func:`service.bootstrap.open_reindex_target` opens what a run
works on (the gallery, or the staging side door while a server holds the data dir); this module only sees the
:class:`Gallery` protocol's staging methods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from embeddings.models import resolve_model
from service.bootstrap import ReindexStaging, ReindexTarget, default_analyzer, open_reindex_target
from service.config import Settings
from service.gallery import Gallery, ReindexRefused
from service.gallery.crops import decode_crop
from service.stores import AuditStore

__all__ = [
    "ReindexRefused",
    "ReindexReport",
    "embed_pending",
    "finish_pending",
    "lacking_crops_message",
    "reindex",
]

log = logging.getLogger("facerec.reindex")

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)`` in faces embedded by this run."""
Encode = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]


class Encoder(Protocol):
    """What :func:`finish_pending` needs of the analyzer: its model id and a batch encode step."""

    @property
    def model_id(self) -> str: ...

    def encode(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]: ...


@dataclass
class ReindexReport:
    """What one run did. ``state``: ``switched`` (every face is now of the model), ``staged`` (all embedded; a
    running server switches when restarted with ``FACEREC_MODEL``), ``partial`` (stopped early; run again),
    ``current`` (every face already was of the model)."""

    model_id: str
    state: str
    faces: int
    embedded: int
    staged: int
    switched: int
    seconds: float
    message: str


def lacking_crops_message(without: int, total: int) -> str:
    return (
        f"cannot re-index: {without} of {total} faces have no stored crop (enrolled with "
        "FACEREC_STORE_CROPS=false or before crops were stored), so they cannot be re-embedded. Re-enrol or "
        "erase those faces, then run again"
    )


def embed_pending(
    staging: ReindexStaging,
    model_id: str,
    *,
    encode: Encode,
    batch_size: int = 64,
    limit: int | None = None,
    progress: ProgressFn | None = None,
) -> int:
    """Embed, batch by batch, the crops of faces not of ``model_id`` that have no staged embedding of it, and
    stage each batch (committed before the next starts). Stops after ``limit`` faces if given. Returns the
    number of faces embedded."""
    counts = staging.reindex_counts(model_id)
    total = counts["todo"] - counts["staged"]
    if limit is not None:
        total = min(total, limit)
    done, after = 0, 0
    while limit is None or done < limit:
        take = batch_size if limit is None else min(batch_size, limit - done)
        rows = staging.crops_to_embed(model_id, after, take)
        if not rows:
            break
        crops = np.stack([decode_crop(png) for _, png in rows])
        ids = [fid for fid, _ in rows]
        staging.stage_embeddings(model_id, ids, encode(crops))
        done += len(rows)
        after = ids[-1]
        if progress is not None:
            progress(done, total)
    return done


def _encoder(settings: Settings, model_id: str) -> Encode:
    """The new model's encode step, built exactly as the service builds its analyzer for that model."""
    analyzer = default_analyzer(settings.model_copy(update={"model": model_id}))
    encode: Encode = analyzer.encode
    return encode


def reindex(
    settings: Settings,
    model_id: str,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    progress: ProgressFn | None = None,
    actor: dict[str, str] | str = "local",
    encoder_factory: Callable[[Settings, str], Encode] = _encoder,
) -> ReindexReport:
    """Re-embed every face of the gallery ``settings`` select with ``model_id`` (see the module doc). Raises
    :class:`ReindexRefused` (nothing changed) when faces lack crops, and the registry's ``UnknownModel`` /
    ``InvalidModel`` for a bad id. ``limit`` stops after that many faces (resume with another call)."""
    t0 = time.perf_counter()
    info = resolve_model(model_id)
    with open_reindex_target(settings) as target:
        return _run(settings, info.model_id, target, batch_size, limit, progress, actor, encoder_factory, t0)


def _run(
    settings: Settings,
    model_id: str,
    target: ReindexTarget,
    batch_size: int,
    limit: int | None,
    progress: ProgressFn | None,
    actor: dict[str, str] | str,
    encoder_factory: Callable[[Settings, str], Encode],
    t0: float,
) -> ReindexReport:
    staging, audit = target.staging, target.audit
    counts = staging.reindex_counts(model_id)
    if counts["without_crop"]:
        raise ReindexRefused(lacking_crops_message(counts["without_crop"], counts["faces"]))
    if counts["todo"] == 0:
        return ReindexReport(
            model_id, "current", counts["faces"], 0, 0, 0, time.perf_counter() - t0,
            f"every face ({counts['faces']}) is already of model {model_id}",
        )  # fmt: skip
    embedded = 0
    if counts["todo"] > counts["staged"]:
        encode = encoder_factory(settings, model_id)

        def committed(done: int, total: int) -> None:  # counts the batches staged before a Ctrl-C, too
            nonlocal embedded
            embedded = done
            if progress is not None:
                progress(done, total)

        try:
            embed_pending(staging, model_id, encode=encode, batch_size=batch_size, limit=limit, progress=committed)
        finally:
            if embedded:
                audit.record("model.reindex", actor=actor, target={"model_id": model_id}, count=embedded, via="cli")
    counts = staging.reindex_counts(model_id)
    remaining = counts["todo"] - counts["staged"]
    seconds = time.perf_counter() - t0
    if remaining:
        return ReindexReport(
            model_id, "partial", counts["faces"], embedded, counts["staged"], 0, seconds,
            f"{remaining} of {counts['todo']} faces still to embed with {model_id}; run `facerec reindex "
            f"--model {model_id}` again to continue",
        )  # fmt: skip
    if target.gallery is None:
        return ReindexReport(
            model_id, "staged", counts["faces"], embedded, counts["staged"], 0, seconds,
            f"all {counts['todo']} faces are embedded with {model_id}; the running server keeps serving its "
            f"model until it is restarted with FACEREC_MODEL={model_id}, which switches the gallery at start",
        )  # fmt: skip
    switched = target.gallery.switch_model(model_id)
    audit.record("model.switch", actor=actor, target={"model_id": model_id}, count=switched, via="cli")
    return ReindexReport(
        model_id, "switched", counts["faces"], embedded, 0, switched, time.perf_counter() - t0,
        f"all {counts['faces']} faces are now of model {model_id}; serve with FACEREC_MODEL={model_id}",
    )  # fmt: skip


def finish_pending(gallery: Gallery, analyzer: Encoder, audit: AuditStore | None = None) -> int:
    """At service start: if a re-index to the analyzer's model was staged (``facerec reindex`` ran while the
    server was up), embed the faces enrolled since and switch the gallery to that model. Returns the number of
    faces switched (0 when there was nothing staged). Faces without a crop leave the gallery unswitched (logged)."""
    model_id = str(analyzer.model_id)
    counts = gallery.reindex_counts(model_id)
    if not counts["staged"] or not counts["todo"]:
        return 0
    if counts["without_crop"]:
        log.error("not switching to %s: %s", model_id, lacking_crops_message(counts["without_crop"], counts["faces"]))
        return 0
    embedded = embed_pending(gallery, model_id, encode=analyzer.encode)
    switched = int(gallery.switch_model(model_id))
    log.info("switched the gallery to %s at start (%d faces; %d embedded now)", model_id, switched, embedded)
    if audit is not None:
        audit.record("model.switch", actor="local", target={"model_id": model_id}, count=switched, via="api")
    return switched
