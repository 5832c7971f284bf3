"""Naming a cluster: its faces become a subject's, and those passing the enrolment quality gate become the
subject's templates in the gallery (through the :class:`~service.gallery.base.Gallery` protocol).

Two stores are written (the gallery, then the photo store), so a naming is a small saga that a crash or a
failure at any point leaves consistent:

1. the intent is recorded in the photo store (:meth:`PhotoStore.begin_naming`: the faces, the ones to enrol,
   the target subject);
2. a new subject is created with ``{"photo_naming": <intent id>}`` in its metadata (so it can be found again);
3. the templates are enrolled (one ``add_faces`` transaction: all or none);
4. the observations are named (one store transaction), then the intent is ended.

Every step can be redone: a subject carrying the intent's id is reused, templates already enrolled from an
observation are recognised by their photo's sha256 and box and not enrolled twice, naming observations again
changes nothing. A failure raised in the request (the gallery or the disk going away) **rolls back**: templates
enrolled by this call and a subject it created are deleted and the intent dropped, so the request changes
nothing. A crash (or a failed roll-back) leaves the intent: :func:`repair_namings` **rolls it forward** (the
first request after a restart, and every naming, call it first). A naming and a roll-forward hold the store's
``naming_lock`` throughout, so with replicas sharing a database none rolls forward an intent another replica is
still carrying out, and two namings of one cluster run one after the other (the second finds it gone: 404).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings import QualityThresholds
from service.gallery import FaceNotFound, NewFace, Subject, SubjectNotFound
from service.gallery.crops import decode_crop
from service.photos.library import PhotoLibrary, _subject_exists
from service.photos.types import Naming, Observation

log = logging.getLogger("facerec.photos")

NAMING_KEY = "photo_naming"
"""Metadata key of a subject created by naming a cluster: the intent's id."""


@dataclass
class NamedCluster:
    subject: Subject
    faces: int
    """Photo faces now named as the subject."""
    enrolled: int
    """Of those, faces that passed the enrolment quality gate and are gallery templates."""


@dataclass
class _Progress:
    """What one attempt wrote, for its roll-back."""

    repair: bool = False
    created_subject: str | None = None
    enrolled: list[int] = field(default_factory=list)
    named: bool = False


def passes_gate(face: Observation, gate: QualityThresholds) -> bool:
    """The enrolment quality gate on a stored face's measurements (size px, confidence, sharpness)."""
    q = face.quality
    conf = q.get("confidence")
    return (
        float(q.get("face_size") or 0.0) >= gate.min_face_size
        and conf is not None
        and float(conf) >= gate.min_confidence
        and (gate.min_sharpness <= 0 or float(q.get("sharpness") or 0.0) >= gate.min_sharpness)
    )


def name_cluster(
    lib: PhotoLibrary,
    *,
    gallery: Any,
    cluster_id: int,
    gate: QualityThresholds,
    name: str | None = None,
    subject_id: str | None = None,
) -> NamedCluster:
    """Name every face of the cluster as a new subject ``name`` or an existing ``subject_id``; the faces that
    pass the enrolment quality ``gate`` become its templates (their stored crops go along for re-indexing)."""
    with lib.write_lock, lib.store.naming_lock():  # one naming at a time across the replicas
        _repair(lib, gallery)
        faces = lib.store.cluster_faces(cluster_id)  # a cluster named meanwhile (by another replica) is gone
        if subject_id:
            gallery.get_subject(subject_id)  # an unknown subject: 404 before anything is written
        naming = lib.store.begin_naming(
            cluster_id=cluster_id,
            faces=[f.id for f in faces],
            enrol=[f.id for f in faces if passes_gate(f, gate)],
            subject_id=subject_id,
            name=None if subject_id else (name or ""),
        )
        progress = _Progress()
        try:
            return _complete(lib, gallery, naming, progress)
        except Exception:
            _roll_back(lib, gallery, naming, progress)
            raise


def repair_namings(lib: PhotoLibrary, *, gallery: Any) -> int:
    """Roll forward every naming a crash (or a failed roll-back) left half done; returns how many. An intent
    whose existing subject was erased meanwhile is dropped (its faces stay unnamed in their cluster)."""
    if not lib.store.pending_namings():
        return 0
    with lib.write_lock, lib.store.naming_lock():
        return _repair(lib, gallery)


def _repair(lib: PhotoLibrary, gallery: Any) -> int:
    """:func:`repair_namings`, with the locks held: a pending intent is then none in progress anywhere."""
    pending = lib.store.pending_namings()
    for naming in pending:
        try:
            _complete(lib, gallery, naming, _Progress(repair=True))
        except SubjectNotFound:
            lib.store.end_naming(naming.id)
            log.warning("photo library: naming %d dropped: its subject no longer exists", naming.id)
        else:
            log.info("photo library: completed naming %d of cluster %d", naming.id, naming.cluster_id)
    return len(pending)


def repair_once(lib: PhotoLibrary, *, gallery: Any) -> None:
    """:func:`repair_namings` the first time it succeeds in this process (a failure is logged and retried by the
    next call: the request that triggered it goes on)."""
    if lib.namings_repaired:
        return
    try:
        repair_namings(lib, gallery=gallery)
    except Exception as e:
        log.warning("photo library: completing interrupted namings failed (retried later): %s", e)
    else:
        lib.namings_repaired = True


def _complete(lib: PhotoLibrary, gallery: Any, naming: Naming, progress: _Progress) -> NamedCluster:
    """Steps 2-4 of the module docstring, each skipped where already done."""
    subject = _target(gallery, naming, progress)
    faces = [f for f in lib.store.get_faces(naming.faces) if f.subject_id in (None, subject.id)]
    enrol = set(naming.enrol)
    good = [f for f in faces if f.id in enrol]
    shas = {pid: lib.store.get_photo(pid).sha256 for pid in {f.photo_id for f in good}}
    done = _enrolled(gallery, subject.id, good, shas)
    todo = [f for f in good if f.id not in done]
    if todo:
        embeddings = lib.store.embeddings_of([f.id for f in todo])
        templates = [_template(lib, f, e, shas[f.photo_id]) for f, e in zip(todo, embeddings, strict=True)]
        records = list(gallery.add_faces(subject.id, templates))
        progress.enrolled = [r.id for r in records]
        done.update({f.id: r.id for f, r in zip(todo, records, strict=True)})
    lib.store.set_subject([f.id for f in faces], subject.id, done)
    progress.named = True
    if not _subject_exists(gallery, subject.id):  # erased (on another replica) before the faces were named
        lib.store.unname_subject(subject.id)  # what the erasure did to the faces named at its time
        lib.store.end_naming(naming.id)
        raise SubjectNotFound(f"subject {subject.id!r} was erased while the cluster was named as it")
    gone = _erased_meanwhile(lib, gallery, [f.id for f in faces], done)
    lib.store.end_naming(naming.id)
    enrolled = len(set(done) - gone)
    return NamedCluster(gallery.get_subject(subject.id), len(faces) - len(gone), enrolled)


def _erased_meanwhile(lib: PhotoLibrary, gallery: Any, named: list[int], enrolled: dict[int, int]) -> set[int]:
    """The observations of ``named`` erased by another replica while this naming ran; the templates enrolled
    from them (``enrolled``: observation id -> gallery face) are deleted, as that erasure would have done had it
    seen them. An erasure after :meth:`PhotoStore.set_subject` committed sees them and deletes them itself."""
    gone = set(named) - {f.id for f in lib.store.get_faces(named)}
    for obs_id in sorted(gone & set(enrolled)):
        with contextlib.suppress(FaceNotFound):
            gallery.delete_face(enrolled[obs_id])
    if gone:
        log.info("photo library: %d faces were erased while their cluster was named", len(gone))
    return gone


def _target(gallery: Any, naming: Naming, progress: _Progress) -> Subject:
    """The existing subject, the one an earlier attempt created for this intent, or a new one."""
    if naming.subject_id:
        return gallery.get_subject(naming.subject_id)
    cursor: str | None = None
    if progress.repair:  # an earlier attempt may have created it; a fresh intent id is on no subject yet
        while True:
            page, cursor = gallery.list_subjects(limit=500, cursor=cursor)
            for s in page:
                if s.metadata.get(NAMING_KEY) == naming.id:
                    return s
            if cursor is None:
                break
    subject = gallery.create_subject(name=naming.name or "", metadata={NAMING_KEY: naming.id})
    progress.created_subject = subject.id
    return subject


def _template(lib: PhotoLibrary, f: Observation, embedding: npt.NDArray[np.float32], sha256: str) -> NewFace:
    """The gallery face enrolled from observation ``f`` (its ``embedding`` and photo ``sha256`` read by the
    caller, for all faces at once)."""
    png = lib.store.crop_png(f.id)
    return NewFace(
        embedding=embedding,
        model_id=f.model_id,
        box=f.box,
        quality={k: v for k, v in f.quality.items() if k != "reasons"},
        image_sha256=sha256,
        crop=decode_crop(png) if png else None,
    )


def _key(sha256: str | None, box: dict[str, Any] | None) -> str:
    return json.dumps([sha256, box], sort_keys=True)


def _enrolled(gallery: Any, subject_id: str, faces: list[Observation], shas: dict[str, str]) -> dict[int, int]:
    """Observation id -> gallery face id for the templates of the subject already enrolled from ``faces``
    (same photo sha256, from ``shas`` by photo id, and box)."""
    if not faces:
        return {}
    have = {_key(r.image_sha256, r.box): r.id for r in gallery.list_faces(subject_id)}
    out: dict[int, int] = {}
    for f in faces:
        fid = have.get(_key(shas[f.photo_id], f.box))
        if fid is not None:
            out[f.id] = fid
    return out


def _roll_back(lib: PhotoLibrary, gallery: Any, naming: Naming, progress: _Progress) -> None:
    """Undo what this attempt wrote, unless its faces were already named (then only the intent is left, and the
    next repair ends it). A roll-back that fails leaves the intent for :func:`repair_namings`."""
    if progress.named:
        return
    try:
        for face_id in progress.enrolled:
            with contextlib.suppress(FaceNotFound):
                gallery.delete_face(face_id)
        if progress.created_subject:
            with contextlib.suppress(SubjectNotFound):
                gallery.delete_subject(progress.created_subject)
        lib.store.end_naming(naming.id)
    except Exception as e:
        log.warning("photo library: rolling back naming %d failed (%s); it will be completed later", naming.id, e)
