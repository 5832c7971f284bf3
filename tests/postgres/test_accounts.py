"""Keys, audit log and rate limit shared by replicas through PostgreSQL (no per-replica cache)."""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable

import psycopg
import pytest

from service.gallery.errors import StorageUnavailable
from service.gallery.postgres.errors import runtime_error
from service.keys import KeyNotFound
from service.pgstores import PostgresBackend
from service.ratelimit import RateLimited

Replica = Callable[..., PostgresBackend]


def test_a_key_revoked_on_one_replica_is_refused_by_the_next_request_on_another(open_replica: Replica) -> None:
    a, b = open_replica(), open_replica()
    assert not b.keys.has_active()
    key, token = a.keys.create(scope="recognize", name="camera")
    assert b.keys.has_active()
    got = b.keys.authenticate(token)
    assert got is not None and got.id == key.id and got.allows("recognize") and not got.allows("admin")
    assert b.keys.authenticate(token[:-1] + ("x" if token[-1] != "x" else "y")) is None
    assert b.keys.authenticate("not-a-token") is None
    revoked = a.keys.revoke(key.id)
    assert revoked.revoked_at is not None
    assert b.keys.authenticate(token) is None
    assert not b.keys.has_active()
    assert [k.id for k in b.keys.list()] == [key.id] and b.keys.list()[0].revoked_at == revoked.revoked_at
    assert a.keys.revoke(key.id).revoked_at == revoked.revoked_at  # revoking twice keeps the first time
    with pytest.raises(KeyNotFound):
        a.keys.revoke("nope")
    with pytest.raises(ValueError):
        a.keys.create(scope="root", name="x")  # type: ignore[arg-type]


def test_tokens_are_stored_hashed(open_replica: Replica, pg_url: str) -> None:
    import psycopg

    _, token = open_replica().keys.create(scope="admin")
    with psycopg.connect(pg_url) as c:
        rows = c.execute("SELECT * FROM api_keys").fetchall()
    assert token not in repr(rows) and token.split("_", 2)[2] not in repr(rows)  # the secret may hold "_"


def test_audit_records_from_every_replica_in_order(open_replica: Replica) -> None:
    a, b = open_replica(), open_replica()
    a.audit.record("subject.create", actor={"key_id": "k1", "name": "n"}, target={"subject_id": "s1"})
    b.audit.record("face.enroll", actor="local", target={"subject_id": "s1"}, count=3, via="cli")
    tail = a.audit.tail(10)
    assert [r["action"] for r in tail] == ["subject.create", "face.enroll"]
    assert tail[1] == {
        "ts": tail[1]["ts"],
        "actor": "local",
        "action": "face.enroll",
        "target": {"subject_id": "s1"},
        "via": "cli",
        "count": 3,
    }
    assert [r["action"] for r in b.audit.tail(1)] == ["face.enroll"]


def test_an_audit_record_the_database_refuses_says_the_change_was_made(open_replica: Replica, pg_url: str) -> None:
    """The record is written after its change: the 503 used to be the gallery's "nothing was stored. Retry
    shortly", and a client that retried a POST /v1/subjects made a second subject."""
    backend = open_replica()
    with psycopg.connect(pg_url, autocommit=True) as c:  # the database refuses the record as a read-only one does
        c.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'read-only' USING ERRCODE = '25006'; END $$"
        )
        c.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse()")
    with pytest.raises(StorageUnavailable) as refused:
        backend.audit.record("subject.create", actor="local", target={"subject_id": "s1"})
    assert refused.value.code == "storage_unavailable"
    assert refused.value.message.startswith("the change was made, but its audit record cannot be written")
    assert "nothing was stored" not in refused.value.message and backend.audit.tail(5) == []


def test_rate_limit_is_one_bucket_per_caller_across_replicas(open_replica: Replica) -> None:
    a, b = open_replica(), open_replica()
    la = a.rate_limiter(per_minute=60, burst=4)  # 1 token a second, 4 at once
    lb = b.rate_limiter(per_minute=60, burst=4)
    assert [la.acquire("key:k"), lb.acquire("key:k"), la.acquire("key:k"), lb.acquire("key:k")] == [0.0] * 4
    wait = lb.acquire("key:k")  # the fifth in the same second, on either replica: refused
    assert 0.0 < wait <= 1.0
    with pytest.raises(RateLimited) as info:
        la.check("key:k")
    assert info.value.headers == {"Retry-After": "1"}
    assert la.acquire("key:other") == 0.0  # another caller has its own bucket
    time.sleep(1.1)
    assert lb.acquire("key:k") == 0.0  # refilled at the configured rate
    off = a.rate_limiter(per_minute=0, burst=1)
    assert not off.enabled and all(off.acquire("key:k") == 0.0 for _ in range(10))


def test_a_caller_id_of_any_length_has_a_bucket(open_replica: Replica) -> None:
    """A client address from ``X-Forwarded-For`` can be any string: a 7,000-character one (random, so that
    PostgreSQL cannot compress it under its btree's ~2.7 kB limit) is limited like any other (it was a 503)."""
    limiter = open_replica().rate_limiter(per_minute=60, burst=1)
    long_ip = "ip:" + "".join(random.Random(5).choices(string.ascii_letters, k=7000))
    limiter.check(long_ip)
    with pytest.raises(RateLimited):
        limiter.check(long_ip)
    limiter.check(long_ip[:-1] + "!")  # another long caller: its own bucket


def test_a_statement_over_a_postgres_limit_is_not_reported_as_an_outage() -> None:
    """SQLSTATE class 54 (e.g. an index row too large) is an OperationalError in psycopg, but a bug: a 500, not a
    503 saying the connection was lost."""
    assert runtime_error(psycopg.errors.ProgramLimitExceeded("index row size 7016 exceeds btree maximum")) is None
    assert runtime_error(psycopg.OperationalError("server closed the connection")) is not None
