"""A replica SIGKILLed again and again during enrolment: every acknowledged face must be present afterwards and no
subject half-written.

    python bench/replica_faults.py --kills 10 --out reports/replica-faults.json

Starts a local PostgreSQL 18 + pgvector and two ``facerec serve`` replicas A and B on it (bench/replicaset.py),
finds the 5-celebrity train photos the quality gate accepts (enrolled once through B into a scratch subject,
then erased), then runs ``--clients`` threads that each create subjects and enrol ``--images`` photos per request
(JPEG bytes unique per image, pixels unchanged, so every one is accepted) into them, through A or B at random.
Meanwhile A is SIGKILLed ``--kills`` times, each at a random moment 1-5 s after it answered ``/readyz`` (then as
soon as an enrolment is in flight on A, waiting up to 5 s more for one), and started again (same port, same
database).

At the end the gallery is listed through B and checked against every request's outcome:

- every face of an acknowledged (201) enrolment is there, in its subject, with its image's sha256;
- a request that got no answer (its replica was killed) is stored whole or not at all: of its images' sha256s
  either none or all are in the gallery ("half-written" otherwise);
- every subject in the gallery was created by a client (its name is unique per request); a subject with no face
  is one whose enrolments were all unacknowledged;
- in SQL: no face without its subject or its crop, no crop without its face, the trigger-kept counts equal
  ``count(*)``.

Exit 1 when an acknowledged face is missing, a request is half-written, a check fails, or B answered an error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import default_dataset
from bench.replicaset import ReplicaSet, gallery_state, same_pixels, sql_consistency, stamp, train_images


def accepted_photos(c: httpx.Client, images: list[Any]) -> list[int]:
    """Indexes of the photos the quality gate accepts (enrolled into a scratch subject, which is then erased)."""
    sid = c.post("/v1/subjects", json={"name": "prescreen"}).raise_for_status().json()["id"]
    ok: list[int] = []
    for start in range(0, len(images), 10):
        chunk = list(range(start, min(start + 10, len(images))))
        files = [("images", (f"{i}.jpg", same_pixels(images[i][1], -1 - i), "image/jpeg")) for i in chunk]
        r = c.post(f"/v1/subjects/{sid}/faces", files=files).raise_for_status()
        rejected = {int(x["index"]) for x in r.json()["rejected"]}
        ok += [i for k, i in enumerate(chunk) if k not in rejected]
    c.delete(f"/v1/subjects/{sid}").raise_for_status()
    return ok


class Clients:
    """Enrolling threads and the outcome of every request they sent."""

    def __init__(self, rs: ReplicaSet, images: list[Any], usable: list[int], args: argparse.Namespace) -> None:
        self.rs, self.images, self.usable, self.args = rs, images, usable, args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.creates: list[dict[str, Any]] = []  # {"name", "replica", "status", "sid"}
        self.enrols: list[dict[str, Any]] = []  # {"sid", "replica", "status", "shas", "faces"}
        self.in_flight = [0] * len(rs.servers)
        self.n = 0

    def _send(self, c: httpx.Client, replica: int, method: str, url: str, **kw: Any) -> tuple[str, Any]:
        """(status or ``transport <error>``, JSON body); enrolments in flight are counted per replica."""
        enrol = url.endswith("/faces")
        with self.lock:
            self.in_flight[replica] += enrol
        try:
            r = c.request(method, url, **kw)
            return str(r.status_code), r.json() if r.content else None
        except httpx.HTTPError as e:
            return f"transport {type(e).__name__}", None
        finally:
            with self.lock:
                self.in_flight[replica] -= enrol

    def run(self, i: int) -> None:
        rng = random.Random(self.args.seed * 1000 + i)
        headers = {"X-API-Key": self.rs.token}
        cs = [httpx.Client(base_url=s.url, headers=headers, timeout=self.args.timeout) for s in self.rs.servers]
        mine: list[str] = []
        while not self.stop.is_set():
            replica = rng.randrange(len(cs))
            if not mine or rng.random() < 0.25:
                name = f"kill-c{i}-{len(self.creates)}-{rng.randrange(10**9)}"
                status, body = self._send(cs[replica], replica, "POST", "/v1/subjects", json={"name": name})
                sid = body["id"] if status == "201" else None
                with self.lock:
                    self.creates.append({"name": name, "replica": replica, "status": status, "sid": sid})
                if sid:
                    mine.append(sid)
            else:
                sid = rng.choice(mine)
                with self.lock:
                    ns = list(range(self.n, self.n + self.args.images))
                    self.n += self.args.images
                blobs = [same_pixels(self.images[rng.choice(self.usable)][1], n) for n in ns]
                files = [("images", (f"{n}.jpg", b, "image/jpeg")) for n, b in zip(ns, blobs, strict=True)]
                status, body = self._send(cs[replica], replica, "POST", f"/v1/subjects/{sid}/faces", files=files)
                faces = [(int(f["id"]), f["image_sha256"]) for f in body["faces"]] if status == "201" else []
                shas = [hashlib.sha256(b).hexdigest() for b in blobs]
                with self.lock:
                    self.enrols.append({"sid": sid, "replica": replica, "status": status, "shas": shas, "faces": faces})
            if status.startswith("transport"):
                time.sleep(0.2)  # the replica is down: do not spin
        for c in cs:
            c.close()


def verify(cl: Clients, state: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every request's outcome against the gallery listed through the API."""
    where = {sha: (sid, fid) for sid, s in state.items() for fid, sha in s["faces"].items()}
    lost, half, whole_unacked, acked = [], [], 0, 0
    acked_subjects: set[str] = set()
    for e in cl.enrols:
        if e["status"] == "201":
            acked += len(e["faces"])
            acked_subjects.add(e["sid"])
            lost += [f for f, sha in e["faces"] if where.get(sha) != (e["sid"], f)]
        elif e["status"] != "404":  # no answer: all or nothing
            stored = sum(sha in where for sha in e["shas"])
            half += [e] if 0 < stored < len(e["shas"]) else []
            whole_unacked += stored == len(e["shas"])
    names = {c["name"] for c in cl.creates}
    unknown = [sid for sid, s in state.items() if s["name"] not in names]
    empty = [sid for sid, s in state.items() if not s["faces"]]
    return {
        "acknowledged_faces": acked,
        "lost_faces": len(lost),
        "half_written_requests": len(half),
        "half_written_sample": half[:3],
        "unacknowledged_requests_stored_whole": whole_unacked,
        "subjects": len(state),
        "faces": len(where),
        "unknown_subjects": len(unknown),
        "empty_subjects": len(empty),
        "empty_subjects_with_acknowledged_faces": sum(sid in acked_subjects for sid in empty),
        "face_count_mismatch": sum(s["face_count"] != len(s["faces"]) for s in state.values()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--images", type=int, default=3, help="photos per enrolment request")
    ap.add_argument("--dataset", type=Path, default=default_dataset(), help="5-celebrity dataset root")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("reports/replica-faults.json"))
    args = ap.parse_args()

    rs = ReplicaSet(2)
    out: dict[str, Any] = {"command": " ".join(["python", *sys.argv])}
    kills: list[dict[str, Any]] = []
    try:
        out["ready_s"] = [round(t, 1) for t in rs.start()]
        a, b = rs.servers
        images = train_images(args.dataset)
        with httpx.Client(base_url=b.url, headers={"X-API-Key": rs.token}, timeout=120) as c:
            usable = accepted_photos(c, images)
        print(f"[{stamp()}] {len(usable)}/{len(images)} photos accepted; replicas {a.url} {b.url}", flush=True)
        cl = Clients(rs, images, usable, args)
        rng = random.Random(args.seed)
        threads = [threading.Thread(target=cl.run, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        try:
            for k in range(args.kills):
                time.sleep(rng.uniform(1.0, 5.0))
                for _ in range(100):  # then up to 5 s more for an enrolment in flight on A
                    if cl.in_flight[0]:
                        break
                    time.sleep(0.05)
                with cl.lock:
                    busy, done = cl.in_flight[0], len(cl.enrols)
                assert a.proc is not None
                a.proc.kill()
                a.proc.wait()
                restart = a.start()
                kills.append({"enrolments_in_flight_on_a": busy, "requests_before": done, "restart_s": restart})
                print(f"  [{stamp()}] kill {k + 1}: {busy} enrolling on A, up in {restart:.0f} s", flush=True)
            time.sleep(3.0)
        finally:
            cl.stop.set()
            for t in threads:
                t.join(timeout=args.timeout + 10)
        outcomes: dict[str, int] = {}
        for e in cl.creates + cl.enrols:
            key = f"{'AB'[e['replica']]} {e['status']}"
            outcomes[key] = outcomes.get(key, 0) + 1
        out.update(kills=kills, outcomes=dict(sorted(outcomes.items())), creates=len(cl.creates))
        out["enrol_requests"] = len(cl.enrols)
        with httpx.Client(base_url=b.url, headers={"X-API-Key": rs.token}, timeout=60) as c:
            out["verify"] = verify(cl, gallery_state(c))
        out["sql"] = sql_consistency(rs.url)
    finally:
        out["exit_codes"] = rs.close(keep=args.keep)
    v, q = out["verify"], out["sql"]
    b_errors = sum(n for k, n in out["outcomes"].items() if k.startswith("B") and k[2:] not in ("200", "201"))
    problems = v["lost_faces"] + v["half_written_requests"] + v["unknown_subjects"] + v["face_count_mismatch"]
    problems += v["empty_subjects_with_acknowledged_faces"] + b_errors + len(kills) != args.kills
    problems += sum(q[k] for k in q if k.startswith(("faces_without", "crops_without", "count_table")))
    out["verdict"] = "PASS" if problems == 0 else f"FAIL ({problems} problems)"
    print(f"outcomes {out['outcomes']}\nverify {json.dumps(v)}\nsql {q}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}\n{out['verdict']}")
    return 0 if problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
