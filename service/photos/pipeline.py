"""Indexing many photos (``facerec photos index DIR``, bench/photos_index.py): a pipeline that keeps both CPU
cores busy and amortises the per-call costs of one-photo indexing.

- **prepare** (``workers`` threads, up to ``lookahead`` photos ahead): sha256, skip photos already indexed,
  decode, MTCNN detection, alignment, quality, the PNG of each crop;
- **encode** (the caller's thread): the crops of ``batch`` photos in one FaceNet call (full batches of 32
  crops: ~3x less CPU per face than one photo's crops alone on this 2-core VM);
- **identify**: the open-set threshold once per batch and one gallery search for all the batch's faces;
- **store**: :meth:`PhotoLibrary.add_photos`, one write-lock hold and one store transaction for the batch.

While a batch is encoded and stored, the workers prepare the next photos. A photo is *acknowledged* (yielded)
only after its batch's transaction committed, so a crash loses no photo reported as indexed; the rest are
indexed again on the next run (the photos already stored are skipped by sha256). The result per photo is the
same as :meth:`PhotoLibrary.index_photo`'s: the same detection, alignment, encoder, identify rule and cluster
vote (which also sees the faces of the batch's earlier photos).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings import FaceAnalyzer
from embeddings.errors import FaceRecError
from embeddings.quality import assess
from embeddings.types import EMBEDDING_DIM, Face
from service import recognition
from service.gallery.crops import encode_crop
from service.photos.library import PHOTO_PNG_LEVEL, IndexedPhoto, IndexOptions, PhotoLibrary
from service.photos.types import NewObservation

READAHEAD_BYTES = 64 * 2**20
"""At most this many bytes of photo files are read ahead of the photos being prepared (and at least ``workers``
photos, whatever their size). Only the count (64) bounded it before: 80 photos of 24 MP (17 MB JPEGs) took
``facerec photos index`` to 1.8 GB, now 0.8 GB at the same speed (docs/PHOTOS.md, "Memory"); small photos (LFW:
15 KB) stay bounded by the count."""

Item = tuple[bytes, str | None]
"""A photo to index: its bytes and its external id (e.g. its path)."""


_UNENCODED = np.zeros(EMBEDDING_DIM, np.float32)


@dataclass
class _Found:
    """A detected, aligned and assessed face, not yet encoded: box and quality as stored, crop and its PNG."""

    box: dict[str, Any]
    quality: dict[str, Any]
    crop: npt.NDArray[np.uint8]
    png: bytes | None


@dataclass
class _Prepared:
    sha256: str
    external_id: str | None
    faces: list[_Found]
    known: IndexedPhoto | None = None
    error: FaceRecError | None = None


def _prepare(lib: PhotoLibrary, analyzer: FaceAnalyzer, item: Item, store_crop: bool) -> _Prepared:
    image, external_id = item
    digest = hashlib.sha256(image).hexdigest()
    known = lib.store.find_photo(digest)
    if known is not None:
        stored = IndexedPhoto(known, lib.store.photo_faces(known.id), created=False)
        return _Prepared(digest, external_id, [], known=stored)
    try:
        rgb = analyzer.load_image(image)
        detections = analyzer.detect(rgb)
    except FaceRecError as exc:
        return _Prepared(digest, external_id, [], error=exc)
    found = []
    for d in detections:
        crop = analyzer.align(rgb, d)
        face = Face(detection=d, quality=assess(d, crop, analyzer.config.quality), embedding=_UNENCODED, crop=crop)
        box, quality = recognition.face_summary(face)
        quality["reasons"] = list(face.quality.reasons)
        png = encode_crop(crop, compress_level=PHOTO_PNG_LEVEL) if store_crop else None
        found.append(_Found(box, quality, crop, png))
    return _Prepared(digest, external_id, found)


def index_photos(
    lib: PhotoLibrary,
    *,
    analyzer: FaceAnalyzer,
    gallery: Any,
    items: Iterable[Item],
    options: IndexOptions = IndexOptions(),
    workers: int = 2,
    batch: int = 32,
    readahead_bytes: int = READAHEAD_BYTES,
) -> Iterator[tuple[str | None, IndexedPhoto | FaceRecError]]:
    """Index every photo of ``items``; yields ``(external_id, result)`` in input order once its batch is stored:
    an :class:`IndexedPhoto` (``created`` False: indexed before, nothing changed) or the
    :class:`FaceRecError` that refused this photo (an undecodable image, say; the run goes on). Storage
    errors are raised (photos not yet yielded were not stored). Photos are read ahead up to ``2 * batch`` of them
    and ``readahead_bytes`` of their files (at least ``workers`` photos), so large files do not pile up in memory."""
    lookahead = max(2 * batch, workers)
    pending: deque[tuple[Future[_Prepared], int]] = deque()
    ready: list[_Prepared] = []
    source = iter(items)
    with ThreadPoolExecutor(max(workers, 1), thread_name_prefix="photo-prepare") as pool:

        def refill() -> None:
            held = sum(size for _, size in pending)
            while len(pending) < lookahead and (held < readahead_bytes or len(pending) < workers):
                item = next(source, None)
                if item is None:
                    return
                pending.append((pool.submit(_prepare, lib, analyzer, item, options.store_crop), len(item[0])))
                held += len(item[0])

        refill()
        while pending:
            ready.append(pending.popleft()[0].result())
            refill()
            if len(ready) >= batch or not pending:
                yield from _store_batch(lib, analyzer, gallery, ready, options)
                ready = []


def _store_batch(
    lib: PhotoLibrary, analyzer: FaceAnalyzer, gallery: Any, batch: list[_Prepared], options: IndexOptions
) -> Iterator[tuple[str | None, IndexedPhoto | FaceRecError]]:
    todo = [p for p in batch if p.known is None and p.error is None]
    faces = [f for p in todo for f in p.faces]
    new: list[tuple[str, str | None, list[NewObservation]]] = []
    emb, ranked, policy = np.zeros((0, EMBEDDING_DIM), np.float32), [], None
    if faces:  # as recognition.identify does it, once for the batch
        model = analyzer.model_id
        emb = analyzer.encode(np.stack([f.crop for f in faces]))
        fixed = float(analyzer.threshold) if options.fixed_threshold is None else options.fixed_threshold
        policy = recognition.open_set_policy(gallery, model_id=model, fixed=fixed, max_fir=options.max_fir)
        ranked = recognition.rank_subjects(gallery, emb, model_id=model, top_k=1, normalisation=policy.normalisation)
    row = 0
    for p in todo:
        obs = []
        for f in p.faces:
            best = ranked[row][0] if ranked[row] else None
            match = best if best is not None and policy is not None and policy.accepts(best) else None
            obs.append(
                NewObservation(
                    embedding=emb[row],
                    model_id=analyzer.model_id,
                    box=f.box,
                    quality=f.quality,
                    crop_png=f.png,
                    subject_id=match.subject_id if match else None,
                    distance=match.distance if match else None,
                )
            )
            row += 1
        new.append((p.sha256, p.external_id, obs))
    stored = iter(lib.add_identified(new, gallery=gallery)) if new else iter(())
    for p in batch:
        if p.error is not None:
            yield p.external_id, p.error
        elif p.known is not None:
            yield p.external_id, p.known
        else:
            yield p.external_id, next(stored)
