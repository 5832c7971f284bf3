"""Video and stream figures (docs/VIDEO.md), on scenes built from LFW people crossing a textured background.

    python bench/video.py accuracy [--lfw ../shared/data/lfw]   # 20 enrolled + 10 strangers, tracks vs truth
    python bench/video.py accuracy --live --fps 12               # the same with the live streams' pipeline
    python bench/video.py live --seconds 60                      # 720p MJPEG camera, 1-3 faces: fps and latency
    python bench/video.py faults                                 # camera killed/restarted; corrupt/truncated files
    python bench/video.py soak --seconds 300                     # RSS and open fds of the server over time

``accuracy`` runs the same pipeline as ``POST /v1/videos`` in this process (to map each track to the person
it followed); the others run ``facerec serve`` as a child and read its API. Reports go to ``reports/``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serverproc import free_port, serve_command, stop, wait_ready  # noqa: E402
from bench.video_scenes import Actor, MjpegServer, Scene, passes_served, write_video  # noqa: E402

LANES_720P = (20, 250, 480)
SPRITE_H = 220


def lfw_people(
    lfw: Path, *, enrolled: int, strangers: int, seed: int, min_photos: int = 6
) -> tuple[list[tuple[str, list[Path]]], list[Path]]:
    """``enrolled`` people with >= ``min_photos`` photos (up to 5 of all but the last to enrol, the last to
    appear) and ``strangers`` other people (one photo each), chosen at random with ``seed``."""
    root = lfw / "lfw-deepfunneled"
    people = sorted(p for p in root.iterdir() if p.is_dir())
    rng = random.Random(seed)
    many = [p for p in people if len(list(p.glob("*.jpg"))) >= min_photos]
    chosen = rng.sample(many, enrolled)
    others = rng.sample([p for p in people if p not in chosen], strangers)
    enrol = [(p.name, sorted(p.glob("*.jpg"))) for p in chosen]
    return enrol, [sorted(p.glob("*.jpg"))[0] for p in others]


def crossing_scene(actors_in: list[tuple[str, Path]], *, seed: int, fps: float = 25.0) -> Scene:
    """1280x720: each person crosses in one of three lanes in 2-4 s; lanes run at once, so 1-3 faces show."""
    rng = random.Random(seed)
    free = [0.3, 0.8, 1.5]
    actors = []
    for i, (label, photo) in enumerate(actors_in):
        lane = min(range(3), key=lambda k: free[k])
        start = free[lane] + rng.uniform(0.3, 1.0)
        length = rng.uniform(2.0, 4.0)
        actors.append(Actor(photo, start, start + length, LANES_720P[lane], SPRITE_H, i % 2 == 0, label))
        free[lane] = start + length
    return Scene(actors, width=1280, height=720, fps=fps, duration_s=max(a.exit_s for a in actors) + 1.0)


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    from embeddings import FaceAnalyzer
    from service.config import Settings
    from service.gallery import NewFace, open_gallery
    from service.media import pipeline_config, video_detector
    from service.video.decode import open_capture, sample_frames
    from service.video.pipeline import TrackDecision, TrackPipeline

    enrol, strangers = lfw_people(Path(args.lfw), enrolled=20, strangers=10, seed=args.seed, min_photos=args.min_photos)
    cast = [(name, photos[-1]) for name, photos in enrol] + [(f"stranger:{p.parent.name}", p) for p in strangers]
    random.Random(args.seed).shuffle(cast)
    scene = crossing_scene(cast, seed=args.seed)
    work = Path(tempfile.mkdtemp(prefix="facerec-video-bench-"))
    video = write_video(scene, work / ("lfw-crossing.avi" if args.codec == "mjpg" else "lfw-crossing.mp4"))
    settings = Settings(data=work / "data")
    analyzer = FaceAnalyzer(settings.analyzer_config(), threshold=settings.match_threshold)
    analyzer.warm_up()
    gallery = open_gallery(settings.data)
    ids: dict[str, str] = {}
    for name, photos in enrol:
        faces = []
        for p in photos[:-1][:5]:
            face = analyzer.single_face(p.read_bytes(), largest=True, check_quality=False)
            faces.append(NewFace(embedding=face.embedding, model_id=analyzer.model_id))
        subject = gallery.create_subject(name=name, metadata={})
        ids[subject.id] = name
        gallery.add_faces(subject.id, faces)
    config = pipeline_config(settings, analyzer, live=args.live, detector=video_detector(settings, analyzer))
    pipe = TrackPipeline(analyzer, lambda: gallery, config)
    centres: dict[int, list[tuple[float, float, float]]] = defaultdict(list)
    decisions: list[TrackDecision] = []
    cap = open_capture(str(video))
    started = time.perf_counter()
    frames = 0
    for t, rgb in sample_frames(cap, args.fps):
        result = pipe.process(rgb, t)
        frames += 1
        decisions.extend(result.decisions)
        for f in result.faces:
            centres[f.track_id].append((t, f.box.x + f.box.width / 2, f.box.y + f.box.height / 2))
    decisions.extend(pipe.finish())
    seconds = time.perf_counter() - started
    cap.release()

    def actor_of(track_id: int) -> str | None:
        votes: Counter[str] = Counter()
        for t, cx, cy in centres[track_id]:
            for a in scene.actors:
                pos = scene.position(a, t)
                if pos and pos[0] <= cx <= pos[0] + SPRITE_H * 2 and pos[1] <= cy <= pos[1] + SPRITE_H:
                    votes[a.label] += 1
        return votes.most_common(1)[0][0] if votes else None

    per_actor: dict[str, list[str | None]] = defaultdict(list)
    tracks_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    unmatched = 0
    misses = []
    for d in decisions:
        who = actor_of(d.track_id)
        if who is None:
            unmatched += 1
            continue
        named = ids.get(d.vote.subject_id or "") if d.vote.subject_id else None
        per_actor[who].append(named)
        seen = centres[d.track_id]
        tracks_of[who].append(
            {"track": d.track_id, "first_s": round(seen[0][0], 2), "last_s": round(seen[-1][0], 2), "frames": len(seen)}
        )
        if named != (None if who.startswith("stranger:") else who):
            v = d.vote
            dist = None if v.distance is None else round(v.distance, 3)
            misses.append(
                {
                    "person": who,
                    "named": named,
                    "votes": v.votes,
                    "views": v.views,
                    "frames": d.frames,
                    "distance": dist,
                    "threshold": round(v.threshold, 3),
                }
            )
    enrolled_tracks = [(who, n) for who, names in per_actor.items() if not who.startswith("stranger:") for n in names]
    stranger_tracks = [(who, n) for who, names in per_actor.items() if who.startswith("stranger:") for n in names]
    right = sum(1 for who, n in enrolled_tracks if n == who)
    report: dict[str, Any] = {
        "video": {"width": 1280, "height": 720, "seconds": round(scene.duration_s, 1), "sampled_fps": args.fps},
        "people": {"enrolled": len(enrol), "strangers": len(strangers), "seen": len(per_actor)},
        "enrolled_tracks": len(enrolled_tracks),
        "enrolled_tracks_named_right": sum(1 for who, n in enrolled_tracks if n == who),
        "enrolled_tracks_named_wrong": sum(1 for who, n in enrolled_tracks if n is not None and n != who),
        "enrolled_tracks_unknown": sum(1 for _, n in enrolled_tracks if n is None),
        "stranger_tracks": len(stranger_tracks),
        "stranger_tracks_named": sum(1 for _, n in stranger_tracks if n is not None),
        "max_tracks_per_person": max((len(v) for v in per_actor.values()), default=0),
        "people_in_several_tracks": {who: tracks for who, tracks in sorted(tracks_of.items()) if len(tracks) > 1},
        "people_never_tracked": sorted(a.label for a in scene.actors if a.label not in per_actor),
        "tracks_not_on_a_person": unmatched,
        "processing_fps": round(frames / seconds, 2),
        "codec": args.codec,
        "pipeline": "live" if args.live else "file",
        "frames_searched_whole": pipe.full_detections,
        "frames_searched_near_tracks": pipe.region_detections,
        "min_photos": args.min_photos,
        "threshold": decisions[0].vote.threshold if decisions else None,
        "not_right": misses,
    }
    report["enrolled_named_right_pct"] = round(100.0 * right / max(len(enrolled_tracks), 1), 1)
    gallery.close()
    return report


class ServerRun:
    """``facerec serve`` on a fresh data dir, with the LFW people enrolled through the API."""

    def __init__(self, lfw: Path, seed: int) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="facerec-stream-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (self.work / "server.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(
            serve_command(self.port, self.work / "data"), cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_ready(self.proc, self.url, timeout_s=300)
        self.client = httpx.Client(base_url=self.url, timeout=120)
        self.enrol, self.strangers = lfw_people(lfw, enrolled=20, strangers=10, seed=seed)
        for name, photos in self.enrol:
            sid = self.client.post("/v1/subjects", json={"name": name}).json()["id"]
            files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:-1][:5]]
            self.client.post(f"/v1/subjects/{sid}/faces", files=files, data={"face": "largest"}).raise_for_status()

    def scene(self, seed: int) -> Scene:
        cast = [(n, ph[-1]) for n, ph in self.enrol] + [(f"stranger:{p.parent.name}", p) for p in self.strangers]
        random.Random(seed).shuffle(cast)
        return crossing_scene(cast, seed=seed)

    def health(self, sid: str) -> dict[str, Any]:
        h: dict[str, Any] = self.client.get(f"/v1/streams/{sid}").json()["health"]
        return h

    def rss_fds(self) -> tuple[int, int]:
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
        return rss, len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def close(self) -> None:
        self.client.close()
        stop(self.proc)
        self.log.close()


def live(args: argparse.Namespace) -> dict[str, Any]:
    run = ServerRun(Path(args.lfw), args.seed)
    camera = MjpegServer(run.scene(args.seed)).start()
    try:
        sid = run.client.post("/v1/streams", json={"name": "bench", "url": camera.url, "fps": args.stream_fps}).json()[
            "id"
        ]
        time.sleep(args.warmup)
        before = run.health(sid)
        t0 = time.monotonic()
        time.sleep(args.seconds)
        after = run.health(sid)
        elapsed = time.monotonic() - t0
        events = run.client.get("/v1/events", params={"source": f"stream:{sid}", "limit": 1000}).json()["items"]
        passes = passes_served(camera.scene, [list(f) for f in camera.served])
        identify_ms = []
        photo = run.enrol[0][1][0].read_bytes()
        for _ in range(10):  # REST stays responsive while the stream runs
            s = time.perf_counter()
            r = run.client.post("/v1/identify", files={"image": ("p.jpg", photo, "image/jpeg")})
            identify_ms.append((time.perf_counter() - s) * 1000)
            assert r.status_code == 200
        named = Counter(e["name"] for e in events if e["name"])
        enrolled = [name for name, _ in run.enrol]
        return {
            "camera": {"width": 1280, "height": 720, "fps": camera.scene.fps},
            "passes_served": sum(passes.values()),
            "enrolled_passes": sum(passes[n] for n in enrolled),
            "enrolled_passes_named": sum(min(named[n], passes[n]) for n in enrolled),
            "extra_named_events": sum(max(named[n] - passes[n], 0) for n in enrolled),
            "named_events_of_strangers": sum(c for n, c in named.items() if n not in enrolled),
            "requested_fps": args.stream_fps,
            "seconds": round(elapsed, 1),
            "fps_in": round((after["frames_in"] - before["frames_in"]) / elapsed, 2),
            "fps_processed": round((after["frames_processed"] - before["frames_processed"]) / elapsed, 2),
            "frames_dropped": after["frames_dropped"] - before["frames_dropped"],
            "lag_ms_last": after["lag_ms"],
            "event_latency_ms_p50": after["event_latency_ms_p50"],
            "events": len(events),
            "named_events": sum(1 for e in events if e["name"]),
            "identify_ms_p50_during_stream": round(statistics.median(identify_ms), 1),
        }
    finally:
        camera.stop()
        run.close()


def faults(args: argparse.Namespace) -> dict[str, Any]:
    run = ServerRun(Path(args.lfw), args.seed)
    scene = run.scene(args.seed)
    camera = MjpegServer(scene).start()
    out: dict[str, Any] = {"reconnect_s": []}
    try:
        sid = run.client.post("/v1/streams", json={"name": "bench", "url": camera.url, "fps": 10}).json()["id"]
        time.sleep(15)
        for _ in range(3):
            camera.stop()
            while run.health(sid)["state"] == "running":
                time.sleep(0.1)
            time.sleep(3.0)
            camera.start()
            back = time.monotonic()
            while run.health(sid)["state"] != "running":
                time.sleep(0.05)
            out["reconnect_s"].append(round(time.monotonic() - back, 2))
            time.sleep(8)
        events = run.client.get("/v1/events", params={"source": f"stream:{sid}", "limit": 1000}).json()["items"]
        by_name = Counter(e["name"] for e in events if e["name"])
        out["events"] = len(events)
        out["reconnects"] = run.health(sid)["reconnects"]
        out["max_events_of_one_person"] = max(by_name.values(), default=0)
        out["server_alive"] = run.proc.poll() is None
        work = Path(tempfile.mkdtemp())
        good = write_video(Scene(scene.actors[:3], width=640, height=360, fps=10), work / "good.avi")
        data = good.read_bytes()
        (work / "truncated.avi").write_bytes(data[: len(data) // 3])
        (work / "corrupt.mp4").write_bytes(os.urandom(200_000))
        for name in ("truncated.avi", "corrupt.mp4"):
            with (work / name).open("rb") as f:
                vid = run.client.post("/v1/videos", files={"video": (name, f)}).json()["id"]
            while (job := run.client.get(f"/v1/videos/{vid}").json())["status"] not in ("done", "failed"):
                time.sleep(0.3)
            out[name] = {"status": job["status"], "error": job["error"]}
        out["readyz_after"] = run.client.get("/readyz").status_code
    finally:
        camera.stop()
        run.close()
    return out


def soak(args: argparse.Namespace) -> dict[str, Any]:
    run = ServerRun(Path(args.lfw), args.seed)
    camera = MjpegServer(run.scene(args.seed)).start()
    samples: list[dict[str, int]] = []
    try:
        sid = run.client.post("/v1/streams", json={"name": "soak", "url": camera.url, "fps": 10}).json()["id"]
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            time.sleep(10)
            rss, fds = run.rss_fds()
            samples.append({"t_s": round(time.monotonic() - start), "rss_kb": rss, "fds": fds})
        health = run.health(sid)
    finally:
        camera.stop()
        run.close()
    warm: list[dict[str, int]] = [s for s in samples if s["t_s"] >= args.warmup_s]
    first, last = warm[0], warm[-1]
    return {
        "seconds": args.seconds,
        "warmup_s": args.warmup_s,
        "rss_mb_after_warmup": round(first["rss_kb"] / 1024, 1),
        "rss_mb_end": round(last["rss_kb"] / 1024, 1),
        "rss_change_pct": round(100.0 * (last["rss_kb"] - first["rss_kb"]) / first["rss_kb"], 2),
        "rss_mb_max": round(max(s["rss_kb"] for s in warm) / 1024, 1),
        "fds_after_warmup": first["fds"],
        "fds_end": last["fds"],
        "fds_max": max(s["fds"] for s in warm),
        "frames_processed": health["frames_processed"],
        "events": health["events"],
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("accuracy", "live", "faults", "soak"))
    parser.add_argument("--lfw", default=str(REPO / ".." / "shared" / "data" / "lfw"))
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--fps", type=float, default=10.0, help="accuracy: frames/s of video analysed")
    parser.add_argument("--min-photos", type=int, default=6, help="accuracy: enrolled people have this many photos")
    parser.add_argument("--codec", choices=("mp4v", "mjpg"), default="mp4v", help="accuracy: how the video is encoded")
    parser.add_argument("--live", action="store_true", help="accuracy: the live streams' pipeline settings")
    parser.add_argument("--stream-fps", type=float, default=12.0, help="live: frames/s the stream asks for")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=20.0, help="live: seconds before measuring")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="soak: seconds before the RSS baseline")
    args = parser.parse_args()
    report = {"accuracy": accuracy, "live": live, "faults": faults, "soak": soak}[args.what](args)
    suffix = f"-{args.codec}{'-live' if args.live else ''}" if args.what == "accuracy" else ""
    out = REPO / "reports" / f"video-{args.what}{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
