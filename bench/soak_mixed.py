"""Mixed-workload soak against a real ``facerec serve`` process (embedded backend, photo library on).

A fresh data dir, an admin key, the rate limit off; 3 of the 5 celebrities enrolled as anchors (never deleted).
Then ``--clients`` threads for ``--seconds`` pick weighted operations: identify, verify, detect, enrol (new
subjects and PIL variations: crops, resizes, flips, rotations), delete faces and subjects (some with their photo
faces), index photos, delete photos, recluster, name a cluster, merge, "not this person", search, a small OpenCV
video (upload + poll), paged listings, HEAD, and bad inputs (garbage, truncated, 30 MP and 42 MP images, wrong
fields, unknown ids). Every answer must be a 2xx or a documented 4xx/503/507 in the JSON error envelope; 500s,
anything else and 60 s timeouts are recorded, and the server log is searched for tracebacks. RSS, open fds and
threads are sampled every 10 s; the slope per 1,000 requests is fitted after the warm-up.

At the end: subjects on the server vs what the clients were acknowledged, faces of deleted subjects gone, identify
still naming the anchors, no erased or deleted-subject face in search or in clusters; then SIGTERM, a restart on
the same data dir, the same checks and an exact comparison with the state before the restart.

    .venv/bin/python bench/soak_mixed.py --seconds 600 --clients 6 --out reports/soak_mixed.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serverproc import BenchServer  # noqa: E402
from bench.soak_ops import ANCHORED, Api, State, Stats, make_video, photos, png, proc_sample, variation  # noqa: E402

JPG = "image/jpeg"


class Soak:
    def __init__(self, url: str, key: str, dataset: Path, seed: int) -> None:
        self.url, self.key, self.seed = url, key, seed
        self.train, self.val = photos(dataset / "train"), photos(dataset / "val")
        self.people = sorted(self.train)
        self.st, self.stats = State(), Stats()
        self.video = make_video(self.val)
        self.video_lock = threading.Lock()
        self.probes: list[tuple[str, bytes]] = []  # val photos that named their anchor right after set-up
        half = self.video[: len(self.video) // 2]
        self.bad: list[tuple[str, str, set[int], dict[str, Any]]] = [
            ("POST", "/v1/identify", {422}, {"files": {"image": ("g.jpg", b"\x00garbage" * 50, JPG)}}),
            ("POST", "/v1/identify", {422}, {"files": {"image": ("t.jpg", self.val["madonna"][0][:2000], JPG)}}),
            ("POST", "/v1/detect", {200}, {"files": {"image": ("big.png", png(6000, 5000), "image/png")}}),
            ("POST", "/v1/detect", {413}, {"files": {"image": ("huge.png", png(7000, 6000), "image/png")}}),
            ("POST", "/v1/identify", {422}, {"files": {"img": ("a.jpg", self.val["madonna"][0], JPG)}}),
            ("POST", "/v1/verify", {422}, {"files": {"image_a": ("a.jpg", self.val["madonna"][0], JPG)}}),
            ("POST", "/v1/identify", {422}, {"json": {"image_base64": "!!notbase64", "top_k": 3}}),
            ("POST", "/v1/identify", {422}, {"json": {"image_base64": "aGVsbG8=", "top_k": 0}}),
            ("POST", "/v1/subjects", {422}, {"json": {"nam": "x"}}),
            ("POST", "/v1/subjects", {415}, {"content": b"name=x", "headers": {"Content-Type": "text/plain"}}),
            ("GET", "/v1/subjects", {422}, {"params": {"limit": 0}}),
            ("GET", "/v1/subjects", {422}, {"params": {"cursor": "not-a-cursor"}}),
            ("GET", "/v1/subjects/no-such-subject", {404}, {}),
            ("POST", "/v1/subjects/no-such-subject/faces", {404}, {"files": {"images": ("a.jpg", b"xx", JPG)}}),
            ("DELETE", "/v1/faces/999999999", {404}, {}),
            ("POST", "/v1/clusters/999999999/name", {404}, {"json": {"name": "nobody"}}),
            ("POST", "/v1/search", {422}, {"json": {"top_k": 3}}),
            ("GET", "/v1/videos", {422}, {"params": {"cursor": "bogus"}}),
            ("POST", "/v1/videos", {202, 422}, {"files": {"video": ("cut.mp4", half, "video/mp4")}}),
        ]
        self.weights = {
            "identify": 18, "verify": 9, "detect": 7, "enrol": 12, "rename": 2, "delete_face": 4, "delete_subject": 4,
            "index_photo": 12, "delete_photo": 2, "recluster": 1, "name_cluster": 3, "merge": 1,
            "not_this_person": 3, "search": 8, "list": 8, "head": 4, "bad": 6, "video": 1,
        }  # fmt: skip

    # ---- set-up and operations -------------------------------------------------------------------------------
    def setup(self, api: Api) -> None:
        for person in ANCHORED:
            r = api("setup", "POST", "/v1/subjects", {201}, json={"name": f"anchor {person}"})
            assert r is not None and r.status_code == 201, r
            sid = r.json()["id"]
            files = [("images", (f"{i}.jpg", b, JPG)) for i, b in enumerate(self.train[person])]
            r = api("setup", "POST", f"/v1/subjects/{sid}/faces", {201}, files=files)
            assert r is not None and r.status_code == 201, r
            self.st.person[sid] = person
            self.st.faces[sid] |= {f["id"] for f in r.json()["faces"]}
            for img in self.val[person]:
                r = api("setup", "POST", "/v1/identify", {200}, files={"image": ("p.jpg", img, JPG)})
                faces = r.json()["faces"] if r is not None and r.status_code == 200 else []
                if faces and faces[0]["match"] and faces[0]["match"]["subject_id"] == sid:
                    self.probes.append((person, img))

    def run_op(self, kind: str, api: Api, rng: random.Random) -> None:
        st = self.st
        with st.lock:
            churn = list(st.churn)
            live_photos = list(st.photos.items())
        person = rng.choice(self.people)
        probe = self.val[person][rng.randrange(len(self.val[person]))]
        if rng.random() < 0.5:
            probe = variation(probe, rng)
        if kind == "identify":
            t = time.time()
            r = api(kind, "POST", "/v1/identify", {200}, files={"image": ("p.jpg", probe, JPG)})
            if r is not None and r.status_code == 200:
                for f in r.json()["faces"]:
                    self.check_named(kind, [c["subject_id"] for c in f["candidates"]], t)
        elif kind == "verify":
            if churn and rng.random() < 0.5:
                data = {"subject_id": rng.choice(churn)}
                api(kind, "POST", "/v1/verify", {200, 404, 422}, files={"image": ("p.jpg", probe, JPG)}, data=data)
            else:
                other = rng.choice(self.train[rng.choice(self.people)])
                files = {"image_a": ("a.jpg", probe, JPG), "image_b": ("b.jpg", other, JPG)}
                api(kind, "POST", "/v1/verify", {200, 422}, files=files)
        elif kind == "detect":
            api(kind, "POST", "/v1/detect", {200}, files={"image": ("p.jpg", probe, JPG)})
        elif kind == "enrol":
            person = rng.choice(ANCHORED)
            if len(churn) < 20 or rng.random() < 0.3:
                r = api(kind, "POST", "/v1/subjects", {201}, json={"name": f"soak {person}", "metadata": {"p": person}})
                if r is None or r.status_code != 201:
                    return
                sid = r.json()["id"]
                with st.lock:
                    st.person[sid] = person
                    st.churn.append(sid)
            else:
                sid = rng.choice(churn)
                person = st.person.get(sid, person)
            imgs = [variation(rng.choice(self.train[person]), rng) for _ in range(rng.randint(1, 3))]
            many = [("images", (f"{i}.jpg", b, JPG)) for i, b in enumerate(imgs)]
            r = api(kind, "POST", f"/v1/subjects/{sid}/faces", {200, 201, 404}, files=many)
            if r is None:
                st.uncertain.add(sid)
            elif r.status_code in (200, 201):
                with st.lock:
                    st.faces[sid] |= {f["id"] for f in r.json()["faces"]}
        elif kind == "rename" and churn:
            sid = rng.choice(churn)
            api(kind, "PATCH", f"/v1/subjects/{sid}", {200, 404}, json={"metadata": {"p": st.person.get(sid), "n": 1}})
        elif kind == "delete_face" and churn:
            sid = rng.choice(churn)
            r = api(kind, "GET", f"/v1/subjects/{sid}/faces", {200, 404})
            if r is not None and r.status_code == 200 and r.json()["items"]:
                fid = rng.choice(r.json()["items"])["id"]
                r = api(kind, "DELETE", f"/v1/faces/{fid}", {204, 404})
                with st.lock:
                    if r is None:
                        st.uncertain.add(sid)
                    elif r.status_code == 204:
                        st.faces[sid].discard(fid)
                        st.deleted_faces.add(fid)
        elif kind == "delete_subject" and len(churn) > 8:
            with st.lock:
                if not st.churn:
                    return
                sid = st.churn.pop(rng.randrange(len(st.churn)))
            erase = rng.random() < 0.4
            r = api(kind, "DELETE", f"/v1/subjects/{sid}", {204}, params={"erase_photo_faces": str(erase).lower()})
            with st.lock:
                if r is None:
                    st.uncertain.add(sid)
                elif r.status_code == 204:
                    st.deleted[sid] = time.time()
                    st.person.pop(sid, None)
                    st.deleted_faces |= st.faces.pop(sid, set())
        elif kind == "index_photo":
            img = rng.choice(self.train[person] + self.val[person])
            img = variation(img, rng) if rng.random() < 0.8 else img
            files = {"image": ("p.jpg", img, JPG)}
            r = api(
                kind, "POST", "/v1/photos", {200, 201}, files=files, data={"external_id": f"{person}/{rng.random()}"}
            )
            if r is not None and r.status_code == 201:
                body = r.json()
                with st.lock:
                    st.photos[body["id"]] = [f["id"] for f in body["faces"]]
                    st.photo_faces.update({f["id"]: person for f in body["faces"]})
        elif kind == "delete_photo" and len(live_photos) > 20:
            pid, fids = rng.choice(live_photos)
            with st.lock:
                if st.photos.pop(pid, None) is None:
                    return
            r = api(kind, "DELETE", f"/v1/photos/{pid}", {204})
            if r is not None and r.status_code == 204:
                with st.lock:
                    st.erased_photo_faces |= set(fids)
        elif kind == "recluster":
            api(kind, "POST", "/v1/clusters/recluster", {200})
        elif kind in ("name_cluster", "merge", "not_this_person"):
            self.cluster_op(kind, api, rng)
        elif kind == "search":
            t = time.time()
            with st.lock:
                live = [f for fs in st.photos.values() for f in fs]
            if live and rng.random() < 0.5:
                req: dict[str, Any] = {"json": {"face_id": rng.choice(live), "top_k": 20}}
            else:
                req = {"files": {"image": ("p.jpg", probe, JPG)}, "data": {"top_k": "20"}}
            r = api(kind, "POST", "/v1/search", {200, 404, 422}, **req)
            if r is not None and r.status_code == 200:
                res = [h["face"] for h in r.json()["results"]]
                self.check_named(kind, [f["subject_id"] for f in res if f["subject_id"]], t)
                self.check_erased(kind, [f["id"] for f in res], t)
        elif kind == "list":
            path = rng.choice(["/v1/subjects", "/v1/clusters", "/v1/videos", "/v1/events", "sub-faces", "sub-photos"])
            if path.startswith("sub-"):
                sid = rng.choice(churn or list(st.person))
                what = "faces" if path == "sub-faces" else "photos"
                api(
                    kind,
                    "GET",
                    f"/v1/subjects/{sid}/{what}",
                    {200, 404},
                    params={} if what == "faces" else {"limit": 5},
                )
            else:
                cursor = None
                for _ in range(3):
                    q = {"limit": 7, **({"cursor": cursor} if cursor else {})}
                    r = api(kind, "GET", path, {200}, params=q)
                    if r is None or r.status_code != 200 or not (cursor := r.json().get("next_cursor")):
                        break
        elif kind == "head":
            sid = rng.choice(list(st.person) or ["x"])
            target, want = rng.choice([("/v1/subjects", {200}), (f"/v1/subjects/{sid}", {200, 404}),
                                       ("/v1/clusters", {200}), ("/v1/videos", {200}), ("/v1/identify", {405}),
                                       ("/v1/subjects/no-such-subject", {404})])  # fmt: skip
            api(kind, "HEAD", target, want)
        elif kind == "bad":
            method, path, want, kw = rng.choice(self.bad)
            api(kind, method, path, want, **kw)
        elif kind == "video" and self.video_lock.acquire(blocking=False):
            try:
                self.video_op(api)
            finally:
                self.video_lock.release()

    def cluster_op(self, kind: str, api: Api, rng: random.Random) -> None:
        r = api(kind, "GET", "/v1/clusters", {200}, params={"limit": 20, "min_size": 2})
        if r is None or r.status_code != 200 or not r.json()["items"]:
            return
        items = r.json()["items"]
        cid = rng.choice(items)["id"]
        if kind == "merge":
            if len(items) > 1:
                other = rng.choice([c["id"] for c in items if c["id"] != cid])
                api(kind, "POST", f"/v1/clusters/{cid}/merge", {200, 404, 409}, json={"cluster_id": other})
            return
        r = api(kind, "GET", f"/v1/clusters/{cid}", {200, 404})
        if r is None or r.status_code != 200 or not r.json()["faces"]:
            return
        faces = r.json()["faces"]
        if kind == "not_this_person":
            api(kind, "DELETE", f"/v1/clusters/{cid}/faces/{rng.choice(faces)['id']}", {200, 404, 409})
            return
        with self.st.lock:
            person = Counter(self.st.photo_faces.get(f["id"], "?") for f in faces).most_common(1)[0][0]
        r = api(kind, "POST", f"/v1/clusters/{cid}/name", {200, 404, 409}, json={"name": f"cluster {person}"})
        if r is not None and r.status_code == 200:
            with self.st.lock:
                self.st.person[r.json()["subject_id"]] = person
                self.st.churn.append(r.json()["subject_id"])

    def video_op(self, api: Api) -> None:
        r = api("video", "POST", "/v1/videos", {202}, files={"video": ("soak.mp4", self.video, "video/mp4")})
        if r is None or r.status_code != 202:
            return
        vid, t0 = r.json()["id"], time.monotonic()
        self.st.videos.append(vid)
        while time.monotonic() - t0 < 180:
            time.sleep(1.0)
            r = api("video_poll", "GET", f"/v1/videos/{vid}", {200})
            if r is None or r.status_code != 200 or r.json()["status"] in ("done", "failed"):
                if r is not None and r.status_code == 200 and r.json()["status"] != "done":
                    self.stats.note(self.stats.unexpected, {"kind": "video", "body": r.text[:300]})
                elif r is not None and r.status_code == 200:
                    self.st.video_tracks.append(len(r.json()["tracks"]))
                return
        self.stats.note(self.stats.hung, {"kind": "video", "id": vid, "error": "not done after 180 s"})

    def check_named(self, kind: str, subject_ids: list[str], sent: float) -> None:
        with self.st.lock:
            gone = [s for s in subject_ids if self.st.deleted.get(s, sent) < sent]
        if gone:
            self.stats.note(self.stats.defects, {"kind": kind, "deleted subject in answer": gone})

    def check_erased(self, kind: str, face_ids: list[int], sent: float) -> None:
        with self.st.lock:
            gone = [f for f in face_ids if f in self.st.erased_photo_faces]
        if gone:
            self.stats.note(self.stats.defects, {"kind": kind, "erased photo face in answer": gone, "sent": sent})

    def client(self, i: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1000 + i)
        api = Api(self.url, self.key, self.stats)
        kinds, weights = list(self.weights), list(self.weights.values())
        while time.monotonic() < deadline:
            self.run_op(rng.choices(kinds, weights)[0], api, rng)


def main(argv: list[str] | None = None) -> int:
    from bench.soak_check import consistency, log_problems, summary

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "soak_mixed.json")
    ap.add_argument("--dataset", type=Path, default=Path.home() / ".cache/facerec/datasets/5-celebrity-faces-dataset")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sample-every", type=float, default=10.0)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="facerec-soak-"))
    server = BenchServer(tmp / "data", tmp / "server.log", env={"FACEREC_PHOTO_LIBRARY": "true"})
    key = server.create_key("soak")
    ready_s = server.start()
    soak = Soak(server.url, key, args.dataset, args.seed)
    api = Api(server.url, key, soak.stats)
    soak.setup(api)
    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    deadline = t0 + args.seconds
    threads = [threading.Thread(target=soak.client, args=(i, deadline), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        samples.append({"t": round(time.monotonic() - t0, 1), "requests": soak.stats.total, **proc_sample(server.pid)})
        print(f"  {samples[-1]}", flush=True)
        while any(t.is_alive() for t in threads) and time.monotonic() - t0 < samples[-1]["t"] + args.sample_every:
            time.sleep(0.5)
    samples.append({"t": round(time.monotonic() - t0, 1), "requests": soak.stats.total, **proc_sample(server.pid)})
    before, snap_before = consistency(soak, api)
    rc = server.stop()
    restart_s = server.start()
    after, snap_after = consistency(soak, api)
    rc2 = server.stop()
    res = summary(soak, samples, args)
    res.update(
        ready_s=round(ready_s, 1), restart_ready_s=round(restart_s, 1), exit_codes=[rc, rc2],
        before_restart=before, after_restart=after, same_after_restart=snap_before == snap_after,
        log=log_problems(server.log), data_dir=str(tmp),
    )  # fmt: skip
    if snap_before != snap_after:
        res["restart_diff"] = {
            k: [snap_before[k], snap_after[k]] for k in snap_before if snap_before[k] != snap_after[k]
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=1, default=str)[:12000])
    bad = res["defects"] or res["hung"] or before["problems"] or after["problems"] or res["log"]["tracebacks"]
    if not bad and snap_before == snap_after:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad or snap_before != snap_after or rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
