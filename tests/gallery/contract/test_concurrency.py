"""Contract: concurrency smoke: threads enrolling, erasing and searching at once; every search answer is well
formed, no erased face is returned after its erasure returned, and the gallery ends consistent."""

from __future__ import annotations

import threading

import numpy as np

from service.gallery import Gallery
from tests.gallery.contract.helpers import MODEL, faces, unit

WRITERS = 3
READERS = 3
ROUNDS = 25


def test_threads_enrolling_erasing_and_searching(gallery: Gallery, rng) -> None:
    base = gallery.create_subjects([(f"base{i}", None) for i in range(20)])
    gallery.add_faces_many({s.id: faces(unit(rng, 2)) for s in base})
    errors: list[BaseException] = []
    stop = threading.Event()
    searches = [0] * READERS
    kept: list[list[int]] = [[] for _ in range(WRITERS)]
    probes = unit(rng, 8)

    def writer(w: int) -> None:
        wrng = np.random.default_rng(100 + w)
        try:
            for i in range(ROUNDS):
                s = gallery.create_subject(name=f"w{w}-{i}")
                v = unit(wrng, 2)
                recs = gallery.add_faces(s.id, faces(v))
                assert gallery.search(v[1], model_id=MODEL, top_k=1)[0][0].face_id == recs[1].id  # read-your-write
                if i % 3 == 0:
                    gallery.delete_face(recs[0].id)
                    hit = gallery.search(v[0], model_id=MODEL, top_k=5)[0]
                    assert recs[0].id not in {c.face_id for c in hit}
                    kept[w].append(recs[1].id)
                else:
                    kept[w].extend(r.id for r in recs)
        except BaseException as e:  # surfaced below
            errors.append(e)

    def reader(r: int) -> None:
        try:
            while not stop.is_set():
                for row in gallery.search(probes, model_id=MODEL, top_k=4):
                    d = [c.distance for c in row]
                    assert len(row) == 4 and d == sorted(d) and all(0 <= x <= 2.0001 for x in d)
                    assert len({c.subject_id for c in row}) == len(row)
                searches[r] += 1
        except BaseException as e:
            errors.append(e)

    readers = [threading.Thread(target=reader, args=(r,)) for r in range(READERS)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    assert all(n > 0 for n in searches)
    expected = 40 + sum(len(k) for k in kept)
    assert gallery.stats().faces == expected == gallery.face_count(MODEL)
    assert gallery.subject_count() == 20 + WRITERS * ROUNDS
    for ids in kept:
        for fid in ids[:: max(1, len(ids) // 5)]:
            assert gallery.get_face(fid).model_id == MODEL
