"""End-of-run checks and the summary of ``bench/soak_mixed.py`` (kept apart to keep each file short)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.soak_ops import Api, all_pages, pct, slope

if TYPE_CHECKING:
    from bench.soak_mixed import Soak

JPG = "image/jpeg"


def code(api: Api, path: str) -> int:
    r = api("check", "GET", path)
    return -1 if r is None else r.status_code


def consistency(soak: Soak, api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the server holds against what the clients were acknowledged; (report, snapshot to compare after a
    restart). ``report["problems"]`` lists every disagreement."""
    st = soak.st
    problems: list[dict[str, Any]] = []
    subjects = all_pages(api, "check", "/v1/subjects", 97) or []
    on_server = {s["id"]: s["face_count"] for s in subjects}
    believed = set(st.person)
    missing = sorted(believed - set(on_server) - st.uncertain)
    extra = sorted(set(on_server) - believed - st.uncertain)
    back = sorted(set(on_server) & set(st.deleted))
    if missing:
        problems.append({"acknowledged subjects missing": missing})
    if extra:
        problems.append({"subjects nobody was acknowledged": extra})
    if back:
        problems.append({"deleted subjects back": back})
    # Faces of subjects the clients made with POST /v1/subjects: exactly the acknowledged ones.
    wrong_faces = {}
    for sid in sorted(believed - st.uncertain):
        if sid not in on_server or not st.faces.get(sid):
            continue
        r = api("check", "GET", f"/v1/subjects/{sid}/faces", {200})
        got = {f["id"] for f in r.json()["items"]} if r is not None and r.status_code == 200 else set()
        if not st.faces[sid] <= got:
            wrong_faces[sid] = sorted(st.faces[sid] - got)
    if wrong_faces:
        problems.append({"acknowledged faces missing": wrong_faces})
    # Faces erased, and faces acknowledged to a subject whose deletion was acknowledged (in either order).
    late = {f for sid in st.deleted for f in st.faces.get(sid, set())}
    alive = [f for f in sorted(late) + sorted(st.deleted_faces)[:60] if code(api, f"/v1/faces/{f}") != 404]
    if alive:
        problems.append({"deleted faces still served": alive})
    # Identify still names each anchor (from the val photos that named it right after set-up).
    misses = []
    for person, img in soak.probes:
        r = api("check", "POST", "/v1/identify", {200}, files={"image": ("p.jpg", img, JPG)})
        faces = r.json()["faces"] if r is not None and r.status_code == 200 else []
        m = faces[0]["match"] if faces else None
        if m is None or st.person.get(m["subject_id"]) != person:
            misses.append({"person": person, "match": m and {k: m[k] for k in ("subject_id", "name", "distance")}})
    if misses:
        problems.append({"identify no longer names": misses})
    # Search and clusters: no erased photo face, no face named after a deleted subject.
    seen: set[int] = set()
    for person in soak.people:
        r = api(
            "check",
            "POST",
            "/v1/search",
            {200},
            files={"image": ("p.jpg", soak.val[person][0], JPG)},
            data={"top_k": "100"},
        )
        for h in r.json()["results"] if r is not None and r.status_code == 200 else []:
            seen.add(h["face"]["id"])
            if h["face"]["subject_id"] in st.deleted:
                problems.append({"search names a deleted subject": h["face"]})
    clusters = all_pages(api, "check", "/v1/clusters", 100) or []
    cluster_faces: dict[int, list[int]] = {}
    for c in clusters:
        r = api("check", "GET", f"/v1/clusters/{c['id']}", {200})
        if r is None or r.status_code != 200:
            problems.append({"cluster unreadable": c["id"]})
            continue
        cluster_faces[c["id"]] = sorted(f["id"] for f in r.json()["faces"])
        if len(cluster_faces[c["id"]]) != c["size"]:
            problems.append({"cluster size differs from its faces": c})
    in_clusters = {f for fs in cluster_faces.values() for f in fs}
    if in_clusters & st.erased_photo_faces or seen & st.erased_photo_faces:
        problems.append({"erased photo faces found": sorted((in_clusters | seen) & st.erased_photo_faces)[:50]})
    crops = [f for f in sorted(st.erased_photo_faces)[:40] if code(api, f"/v1/photos/faces/{f}/crop") != 404]
    if crops:
        problems.append({"erased photo faces still have a crop": crops})
    kept = [p for p in list(st.photos)[:40] if code(api, f"/v1/photos/{p}") != 200]
    if kept:
        problems.append({"acknowledged photos missing": kept})
    report = {
        "subjects_on_server": len(on_server), "subjects_believed": len(believed), "deleted_subjects": len(st.deleted),
        "uncertain": len(st.uncertain), "anchor_probes": len(soak.probes), "clusters": len(clusters),
        "faces_in_clusters": len(in_clusters), "photos_believed": len(st.photos),
        "erased_photo_faces": len(st.erased_photo_faces), "video_tracks": st.video_tracks, "problems": problems,
    }  # fmt: skip
    return report, {"subjects": on_server, "clusters": cluster_faces}


def log_problems(log: Path) -> dict[str, Any]:
    """Tracebacks and ERROR lines in the server's log."""
    text = log.read_text(errors="replace") if log.exists() else ""
    blocks = re.findall(r"Traceback \(most recent call last\):.*?(?=\n\S|\Z)\n?[^\n]*", text, flags=re.S)
    errors = [ln for ln in text.splitlines() if re.search(r"\bERROR\b|\bCRITICAL\b", ln)]
    return {"tracebacks": len(blocks), "traceback_samples": [b[-1500:] for b in blocks[:3]], "error_lines": errors[:20]}


def summary(soak: Soak, samples: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Requests and statuses by kind, p50/p95 latency (ms), the resource samples and their slopes after warm-up."""
    s = soak.stats
    kinds = {
        k: {
            "n": len(v),
            "p50_ms": round(1000 * (pct(v, 50) or 0), 1),
            "p95_ms": round(1000 * (pct(v, 95) or 0), 1),
            "status": dict(sorted(s.status[k].items())),
        }
        for k, v in sorted(s.latency.items())
    }
    statuses: dict[str, int] = {}
    for st in s.status.values():
        for code, n in st.items():
            statuses[code] = statuses.get(code, 0) + n
    warm_t = max(60.0, 0.15 * args.seconds)
    warm = [x for x in samples if x["t"] >= warm_t] or samples[-2:]
    res: dict[str, Any] = {"seconds": args.seconds, "clients": args.clients, "requests": s.total, "statuses": statuses}
    res["by_kind"] = kinds
    per_min = max(1, round(60.0 / args.sample_every))
    for key in ("rss_kib", "fds", "threads"):
        b = slope([float(x["requests"]) for x in warm], [float(x[key]) for x in warm])
        # The floor: each minute's lowest sample, so that one request's transient (a 30 MP decode) is not a trend.
        floor = [min(warm[i : i + per_min], key=lambda x: x[key]) for i in range(0, len(warm), per_min)]
        f = slope([float(x["requests"]) for x in floor], [float(x[key]) for x in floor])
        res[key] = {
            "start": samples[0][key], "warm": warm[0][key], "end": samples[-1][key],
            "max": max(x[key] for x in samples), "slope_per_1000_requests": None if b is None else round(1000 * b, 3),
            "floor": [x[key] for x in floor],
            "floor_slope_per_1000_requests": None if f is None else round(1000 * f, 3),
        }  # fmt: skip
    res.update(defects=s.defects, unexpected=s.unexpected, hung=s.hung, samples=samples, warm_t=warm_t)
    return res
