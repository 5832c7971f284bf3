"""The smallest pool a replica accepts (``FACEREC_DB_POOL_SIZE``) can enrol: an enrolment holds one connection
for the subject's lock while its statements take another, and up to three other jobs (a photo naming, the photo
library's maintenance, Milvus's reconciliation) may each hold one the same way. With a pool of one connection every
enrolment answered 503 after ``FACEREC_DB_TIMEOUT_S``; such a setting is now refused at start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from embeddings import FaceAnalyzer
from service.config import DB_POOL_MIN, Settings
from service.gallery.postgres.connection import PoolOptions
from service.pgstores import PostgresBackend
from service.recognition.enrolment import enroll
from tests.faults.helpers import photos, variant


@pytest.mark.parametrize("size", [1, DB_POOL_MIN - 1])
def test_a_pool_too_small_to_enrol_is_refused(tmp_path: Path, size: int) -> None:
    with pytest.raises(ValidationError, match="db_pool_size"):
        Settings(data=tmp_path, database_url="postgresql://u:p@db/facerec", db_pool_size=size)
    assert Settings(data=tmp_path, database_url="postgresql://u:p@db/facerec", db_pool_size=DB_POOL_MIN)


def test_the_smallest_pool_enrols_while_the_other_lock_holders_hold_theirs(
    open_replica: Callable[..., PostgresBackend], analyzer: FaceAnalyzer, celebrity_root: Path
) -> None:
    backend = open_replica(pool=PoolOptions(min_size=1, max_size=DB_POOL_MIN, timeout_s=2.0))
    sid = backend.gallery.create_subject(name="ben").id
    held = [backend.pool.getconn() for _ in range(3)]  # naming, photo maintenance, Milvus reconciliation
    try:
        images = [variant(p, 7000 + k) for k, p in enumerate(photos(celebrity_root, "ben_afflek")[:3])]
        result = enroll(analyzer=analyzer, gallery=backend.gallery, subject_id=sid, images=images)
        assert result.faces, [r.code for r in result.rejected]
        assert backend.gallery.get_subject(sid).face_count == len(result.faces)
    finally:
        for conn in held:
            backend.pool.putconn(conn)
