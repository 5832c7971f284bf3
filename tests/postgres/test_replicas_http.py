"""Two real ``facerec serve`` processes (real weights, real uvicorn) on one real PostgreSQL + pgvector.

- Read-your-writes: a face enrolled through one replica is identified by the other in the very next request;
  once DELETE returned on one, the other never returns that subject again.
- PostgreSQL stopped with ``pg_ctl -m immediate`` under load through both replicas: every request answers 503
  ``storage_unavailable`` (never 500) while it is down, both replicas serve again within 5 s of it being back
  (no restart), and every acknowledged enrolment is there.
- A key revoked through the CLI is refused by both replicas at their next request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from service.devdb import DevCluster
from tests.faults.helpers import PEOPLE, photos, variant
from tests.nulcheck import check_nul_refused
from tests.pgfixtures import new_cluster
from tests.replicacheck import check_read_your_writes, enrol
from tests.service.server import REPO, Server

pytestmark = pytest.mark.slow


class Replicas:
    def __init__(self, cluster: DevCluster, a: Server, b: Server) -> None:
        self.cluster, self.a, self.b = cluster, a, b
        self.env = {"FACEREC_DATABASE_URL": cluster.url()}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **self.env}
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    cluster = new_cluster()  # this module's own: the fault test stops it
    env = {
        "FACEREC_DATABASE_URL": cluster.url(),
        "FACEREC_DB_TIMEOUT_S": "1",
        "FACEREC_RATE_LIMIT_PER_MINUTE": "0",  # the load below is one caller (loopback) on purpose
    }
    root = tmp_path_factory.mktemp("replicas")
    a, b = Server(root / "a", env=env), Server(root / "b", env=env)
    try:
        started = [threading.Thread(target=s.start) for s in (a, b)]
        for t in started:
            t.start()
        for t in started:
            t.join()
        assert a.proc is not None and b.proc is not None, "a replica did not start (see its log)"
        yield Replicas(cluster, a, b)
    finally:
        a.stop()
        b.stop()
        cluster.destroy()


def test_read_your_writes_across_replicas(replicas: Replicas, celebrity_root: Path) -> None:
    check_read_your_writes(replicas.a.url, replicas.b.url, celebrity_root)


def test_postgres_immediate_stop_and_restart_under_load(replicas: Replicas, celebrity_root: Path) -> None:
    subjects: dict[str, str] = {}
    with httpx.Client(base_url=replicas.a.url, timeout=60) as a:
        for person in PEOPLE:
            subjects[person] = a.post("/v1/subjects", json={"name": person}).json()["id"]
    acked: list[tuple[str, int]] = []
    log: list[tuple[float, str, int, str, float]] = []  # (answered at, replica, status, error code, sent at)
    stop = threading.Event()

    def load(server: Server, seed: int) -> None:
        n = seed * 100_000
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                n += 1
                person = PEOPLE[n % len(PEOPLE)]
                pics = photos(celebrity_root, person)
                sent = time.monotonic()
                try:
                    if n % 2:
                        r = enrol(c, subjects[person], variant(pics[n % len(pics)], n))
                        if r.status_code == 201:
                            acked.extend((subjects[person], f["id"]) for f in r.json()["faces"])
                    else:
                        r = c.post("/v1/identify", files={"image": ("p.jpg", pics[0].read_bytes(), "image/jpeg")})
                except httpx.HTTPError as e:  # a replica must not drop connections
                    log.append((time.monotonic(), server.url, -1, type(e).__name__, sent))
                    continue
                code = r.json().get("error", {}).get("code", "") if r.status_code >= 400 else ""
                log.append((time.monotonic(), server.url, r.status_code, code, sent))
                if r.status_code >= 500:
                    time.sleep(0.1)

    threads = [threading.Thread(target=load, args=(s, i)) for i, s in enumerate([replicas.a, replicas.b] * 2)]
    for t in threads:
        t.start()
    try:
        time.sleep(4)
        stopping_at = time.monotonic()  # answers logged before this saw a running PostgreSQL
        replicas.cluster.stop("immediate")
        down_at = time.monotonic()
        time.sleep(3)
        replicas.cluster.start()
        back_at = time.monotonic()
        time.sleep(8)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    before = [e for e in log if e[0] < stopping_at]
    assert before and all(e[2] in (200, 201) for e in before), before[-5:]
    bad = [e for e in log if e[2] not in (200, 201) and not (e[2] == 503 and e[3] == "storage_unavailable")]
    assert not bad, f"only 2xx or 503 storage_unavailable, got {bad[:5]}"
    # sent after the stop and answered before the restart (a request sent earlier may have done its database
    # work before the stop, and a starved client thread may log its answer late)
    down = [e for e in log if down_at < e[4] and e[0] < back_at]
    wrong = [(round(e[4] - down_at, 2), round(e[0] - down_at, 2), e[2]) for e in down if e[2] != 503]
    assert down and not wrong, f"requests while PostgreSQL is down answer 503; (sent, answered) after the stop: {wrong}"
    for url in (replicas.a.url, replicas.b.url):
        first_ok = min(e[0] for e in log if e[1] == url and e[0] > back_at and e[2] in (200, 201))
        print(
            f"{url}: {sum(1 for e in log if e[1] == url and e[2] == 503)} x 503 while down, served again "
            f"{first_ok - back_at:.2f} s after PostgreSQL was back; {len(acked)} acknowledged faces, all stored"
        )
        assert first_ok - back_at <= 5.0, f"{url} served again {first_ok - back_at:.1f} s after PostgreSQL was back"
        late = [e for e in log if e[1] == url and e[0] > first_ok + 1.0 and e[2] not in (200, 201)]
        assert not late, late[:5]
    assert len(acked) > 0
    with httpx.Client(base_url=replicas.b.url, timeout=60) as b:
        stored = {
            (sid, f["id"]) for sid in subjects.values() for f in b.get(f"/v1/subjects/{sid}/faces").json()["items"]
        }
    assert set(acked) <= stored, "an acknowledged enrolment was lost"


def test_a_key_revoked_on_the_cli_is_refused_by_both_replicas(replicas: Replicas) -> None:
    made = replicas.cli("keys", "create", "--scope", "admin", "--name", "ops", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    # a second key stays active: with none left, loopback requests need no key at all (by design)
    assert replicas.cli("keys", "create", "--scope", "recognize", "--name", "other").returncode == 0
    with httpx.Client(timeout=30) as c:
        for server in (replicas.a, replicas.b):
            assert c.get(f"{server.url}/v1/subjects").status_code == 401  # a key exists now: required everywhere
            assert c.get(f"{server.url}/v1/subjects", headers={"X-API-Key": key["token"]}).status_code == 200
        revoked = replicas.cli("keys", "revoke", key["id"])
        assert revoked.returncode == 0, revoked.stderr
        for server in (replicas.a, replicas.b):
            r = c.get(f"{server.url}/v1/subjects", headers={"X-API-Key": key["token"]})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_nul_in_request_text_is_a_422_not_a_500(replicas: Replicas) -> None:
    """PostgreSQL refuses NUL in text and JSON: the guard answers 422 before any query (was a 500)."""
    made = replicas.cli("keys", "create", "--scope", "admin", "--name", "nul", "--json")
    assert made.returncode == 0, made.stderr
    headers = {"X-API-Key": json.loads(made.stdout)["token"]}
    with httpx.Client(base_url=replicas.a.url, headers=headers, timeout=60) as c:
        check_nul_refused(c)


def at_once(posts: list[tuple[str, bytes]], client: httpx.Client) -> list[httpx.Response]:
    """POST each ``(url, image)`` from its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(posts))

    def send(url: str, image: bytes) -> httpx.Response:
        barrier.wait()
        return client.post(url, files={"images": image})

    with ThreadPoolExecutor(len(posts)) as pool:
        return list(pool.map(lambda post: send(*post), posts))


def test_the_same_image_sent_to_both_replicas_at_once_is_stored_once(replicas: Replicas, celebrity_root: Path) -> None:
    """Each replica re-checks the image's sha256 before storing it; without a lock the two re-checks could both
    find nothing and store two faces (1 round in 3 before the subject lock)."""
    made = replicas.cli("keys", "create", "--scope", "admin", "--name", "dup", "--json")
    assert made.returncode == 0, made.stderr
    headers = {"X-API-Key": json.loads(made.stdout)["token"]}
    good = photos(celebrity_root, "ben_afflek")[0]
    with httpx.Client(headers=headers, timeout=120) as c:
        for n in range(12):
            sid = c.post(f"{replicas.a.url}/v1/subjects", json={"name": f"dup {n}"}).json()["id"]
            image = variant(good, 10_000 + n)
            answers = at_once([(f"{s.url}/v1/subjects/{sid}/faces", image) for s in (replicas.a, replicas.b)], c)
            assert sorted(r.status_code for r in answers) == [200, 201], [r.text for r in answers]
            refused = next(r.json() for r in answers if r.status_code == 200)
            assert [x["code"] for x in refused["rejected"]] == ["duplicate"]
            assert len(c.get(f"{replicas.b.url}/v1/subjects/{sid}/faces").json()["items"]) == 1, f"round {n}"
