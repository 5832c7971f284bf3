"""Two replicas on one PostgreSQL: concurrent clients mixing enrol, identify and erase through both, with
read-your-writes checked across replicas on every write and a ledger compared with the database at the end.

    python bench/replicas.py --duration 300 --clients 16 --out reports/replicas.json

Starts a local PostgreSQL 18 + pgvector (service/devdb.py) and ``--replicas`` real ``facerec serve`` processes on
its ``facerec`` database (loopback, free ports, each its own data dir, ``FACEREC_RATE_LIMIT_PER_MINUTE=0``), makes
an admin key with ``facerec keys create``, then runs ``--clients`` asyncio clients for ``--duration`` seconds. Each
client owns the subjects it creates and picks, per operation, a random replica W to write through and another, R,
to read from:

- ``identify``: a 5-celebrity val photo on a random replica;
- ``enrol`` (new subject): create a subject on W, enrol one train photo made unique (seeded pixel noise, so its
  embedding is its own) on W; then identify the same bytes on R (``identify_ryw``): the match must name that
  subject and its nearest face must be the acknowledged face;
- ``enrol`` (more faces): another photo of the same person into one of the client's subjects on W; on R the
  subject must be among the candidates with the acknowledged face as its nearest;
- ``erase``: DELETE one face (subjects with >= 2) or the subject on W; on R ``GET`` of it must answer 404
  (``check_gone``) and identify with one of its photos must not return it.

Every identify answer (of any kind) is also checked against every erase acknowledged before it was sent: a
subject or face returned after its DELETE returned is counted as resurrected. At the end the union of the
clients' ledgers (acknowledged, not erased) is compared with the gallery listed through the API (``GET
/v1/subjects`` and each subject's faces) and with SQL consistency checks. 429 ``overloaded`` answers are retried
after 1 s and counted apart. Exit 1 on any error, failed check, lost or resurrected write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import default_dataset, photos
from bench.replicaset import (
    Latencies,
    ReplicaSet,
    gallery_state,
    pick_other,
    sql_consistency,
    stamp,
    train_images,
    unique_photo,
)

KINDS = ("identify", "create_subject", "enrol", "identify_ryw", "erase_face", "erase_subject", "check_gone")
EXPECTED = {"create_subject": {201}, "enrol": {200, 201}, "erase_face": {204}, "erase_subject": {204}}
OPS = ("identify", "enrol_new", "enrol_more", "erase")


class Soak:
    """The clients' shared state: latencies, the erase log, the live ledger and every check's failures."""

    def __init__(self, clients: list[httpx.AsyncClient], timeout: float) -> None:
        self.clients, self.timeout = clients, timeout
        self.lat = Latencies(KINDS)
        self.erased_subjects: dict[str, float] = {}  # id -> monotonic time its DELETE returned
        self.erased_faces: dict[int, float] = {}
        self.live: dict[str, dict[str, Any]] = {}  # sid -> {"person", "faces": {face_id: jpeg bytes}}
        self.failures: list[dict[str, Any]] = []
        self.counts = {"ryw_checked": 0, "ryw_top_match": 0, "erase_checked": 0, "rejected": 0, "identify_hits": 0}
        self.n = 0

    def fail(self, what: str, **detail: Any) -> None:
        self.failures.append({"check": what, **detail})
        if len(self.failures) <= 20:
            print(f"  [{stamp()}] FAIL {what}: {json.dumps(detail)[:400]}", flush=True)

    async def call(self, kind: str, replica: int, method: str, url: str, **kw: Any) -> httpx.Response | None:
        """One request; 429 ``overloaded`` is recorded and retried after 1 s; None on a transport error."""
        c = self.clients[replica]
        while True:
            t = time.monotonic()
            try:
                r = await c.request(method, url, timeout=self.timeout, **kw)
            except httpx.HTTPError as e:
                self.lat.record(kind, f"transport {type(e).__name__}", time.monotonic() - t)
                self.fail("transport", kind=kind, replica=replica, error=str(e)[:200])
                return None
            status = str(r.status_code)
            if r.status_code == 429:
                status += " " + str(r.json().get("error", {}).get("code", "?"))
            self.lat.record(kind, status, time.monotonic() - t)
            if r.status_code == 429:
                await asyncio.sleep(1.0)
                continue
            ok = EXPECTED.get(kind, {404} if kind == "check_gone" else {200})
            if r.status_code not in ok:
                self.fail("status", kind=kind, replica=replica, status=r.status_code, body=r.text[:300])
                return None
            return r

    async def identify(self, kind: str, replica: int, image: bytes, top_k: int) -> list[dict[str, Any]] | None:
        """The candidates of the first face, after checking that no answer names anything erased before."""
        sent = time.monotonic()
        files = {"image": ("p.jpg", image, "image/jpeg")}
        r = await self.call(kind, replica, "POST", "/v1/identify", files=files, data={"top_k": str(top_k)})
        if r is None:
            return None
        faces = r.json()["faces"]
        for face in faces:
            for c in [face["match"], *face["candidates"]]:
                if c is None:
                    continue
                if self.erased_subjects.get(c["subject_id"], sent) < sent:
                    self.fail("resurrected_subject", kind=kind, replica=replica, subject=c["subject_id"])
                if c.get("face_id") is not None and self.erased_faces.get(int(c["face_id"]), sent) < sent:
                    self.fail("resurrected_face", kind=kind, replica=replica, face=c["face_id"])
        return [faces[0]["match"], *faces[0]["candidates"]] if faces else []

    async def enrol(self, w: int, r: int, sid: str, image: bytes, first: bool) -> None:
        multipart = [("images", ("e.jpg", image, "image/jpeg"))]
        resp = await self.call("enrol", w, "POST", f"/v1/subjects/{sid}/faces", files=multipart)
        if resp is None:
            return
        if resp.status_code == 200:  # rejected (e.g. low_quality): nothing stored, nothing to check
            self.counts["rejected"] += 1
            return
        fid = int(resp.json()["faces"][0]["id"])
        self.live[sid]["faces"][fid] = image
        got = await self.identify("identify_ryw", r, image, top_k=20)  # the very next request, other replica
        if got is None:
            return
        self.counts["ryw_checked"] += 1
        match, cands = got[0] if got else None, got[1:]
        mine = [c for c in cands if c["subject_id"] == sid]
        named = bool(match and match["subject_id"] == sid and match["face_id"] == fid)
        if not (named if first else mine and mine[0]["face_id"] == fid):
            self.fail("read_your_writes", replica=r, subject=sid, face=fid, match=match, candidate=mine[:1])
        self.counts["ryw_top_match"] += bool(match and match["subject_id"] == sid)

    async def erase(self, w: int, r: int, sid: str, rng: random.Random) -> None:
        faces = self.live[sid]["faces"]
        if len(faces) >= 2 and rng.random() < 0.5:
            fid = rng.choice(sorted(faces))
            if await self.call("erase_face", w, "DELETE", f"/v1/faces/{fid}") is None:
                return
            self.erased_faces[fid] = time.monotonic()
            image = faces.pop(fid)
            await self.call("check_gone", r, "GET", f"/v1/faces/{fid}")
        else:
            if await self.call("erase_subject", w, "DELETE", f"/v1/subjects/{sid}") is None:
                return
            self.erased_subjects[sid] = time.monotonic()
            entry = self.live.pop(sid)
            image = next(iter(entry["faces"].values()), b"")
            await self.call("check_gone", r, "GET", f"/v1/subjects/{sid}")
        self.counts["erase_checked"] += 1
        if image:
            await self.identify("identify_ryw", r, image, top_k=20)  # checked against the erase log inside


async def soak(rs: ReplicaSet, args: argparse.Namespace) -> dict[str, Any]:
    train = train_images(args.dataset)
    by_person: dict[str, list[int]] = {}
    for i, (person, _) in enumerate(train):
        by_person.setdefault(person, []).append(i)
    val = [p.read_bytes() for files in photos(args.dataset / "val").values() for p in files]
    headers = {"X-API-Key": rs.token}
    limits = httpx.Limits(max_connections=args.clients + 4)
    clients = [httpx.AsyncClient(base_url=s.url, headers=headers, limits=limits) for s in rs.servers]
    st = Soak(clients, args.timeout)
    rss: list[list[float]] = []
    start = time.monotonic()
    end = start + args.duration

    async def next_photo(person: str, rng: random.Random) -> bytes:
        st.n += 1
        return await asyncio.to_thread(unique_photo, train[rng.choice(by_person[person])][1], st.n)

    async def worker(i: int) -> None:
        rng = random.Random(args.seed * 1000 + i)
        mine: list[str] = []
        while time.monotonic() < end:
            op = rng.choices(OPS, [args.mix_identify, args.mix_enrol_new, args.mix_enrol_more, args.mix_erase])[0]
            w, r = pick_other(rs.servers, rng)
            mine[:] = [s for s in mine if s in st.live]
            if op == "identify":
                got = await st.identify("identify", rng.randrange(len(clients)), rng.choice(val), top_k=3)
                st.counts["identify_hits"] += bool(got and got[0])
            elif op == "enrol_new" or (op == "enrol_more" and not mine):
                person = rng.choice(sorted(by_person))
                resp = await st.call("create_subject", w, "POST", "/v1/subjects", json={"name": f"{person}-c{i}"})
                if resp is None:
                    continue
                sid = str(resp.json()["id"])
                st.live[sid] = {"person": person, "faces": {}}
                mine.append(sid)
                await st.enrol(w, r, sid, await next_photo(person, rng), first=True)
            elif op == "enrol_more":
                sid = rng.choice(mine)
                await st.enrol(w, r, sid, await next_photo(st.live[sid]["person"], rng), first=False)
            elif mine:
                await st.erase(w, r, rng.choice(mine), rng)

    async def sampler() -> None:
        while True:
            rss.append([round(time.monotonic() - start, 1), *rs.rss_mib()])
            if len(rss) % 12 == 1:
                done = sum(len(v) for v in st.lat.seconds.values())
                print(f"  [{stamp()}] t={rss[-1][0]:.0f}s rss={rss[-1][1:]} MiB requests={done}", flush=True)
            await asyncio.sleep(5.0)

    print(f"[{stamp()}] {args.clients} clients for {args.duration:.0f} s through {len(clients)} replicas", flush=True)
    sampling = asyncio.create_task(sampler())
    workers = [asyncio.create_task(worker(i)) for i in range(args.clients)]
    done, pending = await asyncio.wait(workers, timeout=args.duration + args.grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    crashed = [repr(t.exception()) for t in done if t.exception() is not None]
    elapsed = time.monotonic() - start
    sampling.cancel()
    rss.append([round(elapsed, 1), *rs.rss_mib()])
    for c in clients:
        await c.aclose()
    return {
        "elapsed_s": round(elapsed, 1),
        "cancelled_in_flight": len(pending),
        "client_crashes": crashed,
        "kinds": st.lat.table(),
        "checks": st.counts,
        "failures": st.failures,
        "erased": {"subjects": len(st.erased_subjects), "faces": len(st.erased_faces)},
        "ledger": {sid: sorted(v["faces"]) for sid, v in st.live.items()},
        "erased_ids": {"subjects": sorted(st.erased_subjects), "faces": sorted(st.erased_faces)},
        "rss_mib": rss,
    }


def compare(res: dict[str, Any], state: dict[str, dict[str, Any]]) -> dict[str, int]:
    """The acknowledged ledger against the gallery the API lists."""
    ledger: dict[str, list[int]] = res["ledger"]
    gone_s, gone_f = set(res["erased_ids"]["subjects"]), set(res["erased_ids"]["faces"])
    stored_faces = {f for s in state.values() for f in s["faces"]}
    want_faces = {f for faces in ledger.values() for f in faces}
    return {
        "ledger_subjects": len(ledger),
        "ledger_faces": len(want_faces),
        "listed_subjects": len(state),
        "listed_faces": len(stored_faces),
        "lost_subjects": sum(sid not in state for sid in ledger),
        "lost_faces": sum(f not in set(state.get(sid, {}).get("faces", {})) for sid, fs in ledger.items() for f in fs),
        "resurrected_subjects": len(gone_s & set(state)),
        "resurrected_faces": len(gone_f & stored_faces),
        "unexpected_subjects": len(set(state) - set(ledger) - gone_s),
        "unexpected_faces": len(stored_faces - want_faces - gone_f),
        "face_count_mismatch": sum(s["face_count"] != len(s["faces"]) for s in state.values()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--dataset", type=Path, default=default_dataset(), help="5-celebrity dataset root")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-request timeout, s")
    ap.add_argument("--grace", type=float, default=120.0, help="hard stop this long after --duration, s")
    ap.add_argument("--mix-identify", type=float, default=4.0)
    ap.add_argument("--mix-enrol-new", type=float, default=2.0)
    ap.add_argument("--mix-enrol-more", type=float, default=1.0)
    ap.add_argument("--mix-erase", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the cluster and the replicas' logs")
    ap.add_argument("--out", type=Path, default=Path("reports/replicas.json"))
    args = ap.parse_args()

    rs = ReplicaSet(args.replicas)
    out: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "clients": args.clients}
    try:
        out["ready_s"] = [round(t, 1) for t in rs.start()]
        print(f"[{stamp()}] replicas ready in {out['ready_s']} s: {[s.url for s in rs.servers]}", flush=True)
        out.update(asyncio.run(soak(rs, args)))
        with httpx.Client(base_url=rs.servers[-1].url, headers={"X-API-Key": rs.token}, timeout=60) as c:
            out["compare"] = compare(out, gallery_state(c))
        out["sql"] = sql_consistency(rs.url)
    finally:
        out["exit_codes"] = rs.close(keep=args.keep)
    errors = sum(n for k in out["kinds"].values() for s, n in k["status"].items() if s.startswith("transport"))
    cmp = out["compare"]
    problems = len(out["failures"]) + len(out["client_crashes"]) + errors
    problems += sum(cmp[k] for k in cmp if k.startswith(("lost", "resurrected", "unexpected", "face_count")))
    out["verdict"] = "PASS" if problems == 0 else f"FAIL ({problems} problems)"
    for kind, k in out["kinds"].items():
        print(f"  {kind:15} {k['requests']:6d}  p50 {k['p50_ms']} ms  p99 {k['p99_ms']} ms  {k['status']}")
    rss = out["rss_mib"]
    print(f"checks {out['checks']}\ncompare {cmp}\nsql {out['sql']}\nRSS MiB first {rss[0]} last {rss[-1]}")
    print(f"failures {len(out['failures'])}: {out['failures'][:5]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({k: v for k, v in out.items() if k not in ("ledger", "erased_ids")}, indent=1))
    print(f"wrote {args.out}\n{out['verdict']}")
    return 0 if problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
