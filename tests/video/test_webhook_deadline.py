"""Webhook deliveries against receivers that answer one byte at a time: each attempt ends at its deadline
(``FACEREC_WEBHOOK_TIMEOUT_S``) however slowly the bytes come, is retried, and leaves no socket or thread
behind; one slow receiver holds the later deliveries for no longer than that."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.events.store import CLAIM_S, Event, SQLiteEventStore
from service.events.webhooks import HostLookup, WebhookSender

DEADLINE_S = 1.5
SLACK_S = 1.0
DRIP_S = 0.5
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def endless() -> Iterator[bytes]:
    """A status line and then a header line that never ends, one byte at a time."""
    return (bytes([b]) for b in itertools.chain(b"HTTP/1.1 200 OK\r\nX-Drip: ", itertools.repeat(ord("a"))))


def tls_context(folder: Path) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1, at ``folder/cert.pem``."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    args = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]
    args += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(["openssl", *args], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


class DripReceiver:
    """A TCP server (one thread per connection) that answers its first ``slow`` connections one byte every
    :data:`DRIP_S` seconds, for ever (each byte well within a read timeout), and the later ones at once; over
    TLS with ``tls`` (each byte its own TLS record)."""

    def __init__(self, *, slow: int = 1 << 30, tls: ssl.SSLContext | None = None) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.slow, self.tls = slow, tls
        self.accepted = 0
        self.answered: list[float] = []  # when each quick answer was sent (monotonic)
        self.hung_up: list[float] = []  # when the client closed each slow connection (monotonic)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self._spawn(self._serve)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                with self.lock:
                    self.accepted += 1
                    slow = self.accepted <= self.slow
                self._spawn(self._drip if slow else self._answer, conn)

    def _answer(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(ANSWER)
            with self.lock:
                self.answered.append(time.monotonic())

    def _drip(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn = self.tls.wrap_socket(conn, server_side=True) if self.tls else conn
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            for byte in endless():
                if self.stop.wait(DRIP_S):
                    return
                conn.sendall(byte)  # raises once the client has closed (reset) the connection
        with self.lock:
            self.hung_up.append(time.monotonic())

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone does not)
        self.server.close()
        for t in self.threads:
            t.join(5.0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    s = SQLiteEventStore(tmp_path)
    yield s
    s.close()


def event(i: int) -> Event:
    return Event(f"e{i}", time.time(), "stream:a", i, "s1", "s1", 0.5, 0.01, 0.0, 1.0, 5)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def soon(cond: Callable[[], bool], timeout_s: float) -> bool:
    """Whether ``cond`` holds within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def timed_deliver(sender: WebhookSender, ev: Event, limit_s: float) -> tuple[str | None, float]:
    """One :meth:`WebhookSender.deliver` in a thread, given up on after ``limit_s`` (the test fails then)."""
    result: list[str | None] = []
    t = threading.Thread(target=lambda: result.append(sender.deliver(ev)), daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"the delivery still runs {limit_s:.1f} s later (deadline {DEADLINE_S} s)"
    return result[0], time.monotonic() - t0


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_dripping_receiver_is_cut_at_the_deadline_and_nothing_is_left(
    store: SQLiteEventStore, scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status line and headers come one byte every 0.5 s, each within the read timeout (over TLS, one
    record each): the attempt still ends at the deadline, as a failure, and its connection is closed."""
    tls = tls_context(tmp_path) if scheme == "https" else None
    if tls is not None:  # httpx trusts the certificate (the variable is read when the client is made)
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    receiver = DripReceiver(tls=tls)
    sender = WebhookSender(store, url=receiver.url, secret="k", timeout_s=DEADLINE_S).start()  # empty outbox: idle
    try:
        timed_deliver(sender, event(0), DEADLINE_S + SLACK_S)  # loads what a first request loads (lazy imports)
        assert soon(lambda: len(receiver.hung_up) == 1, 2 * DRIP_S)
        time.sleep(0.1)  # the receiver's thread of that connection ends
        threads, fds = threading.active_count(), open_fds()  # the receiver's (in this process) included
        for i in range(1, 4):
            error, took = timed_deliver(sender, event(i), DEADLINE_S + SLACK_S)
            assert error is not None and "deadline" in error, error
            assert took >= DEADLINE_S - 0.1
        # the receiver sees each connection closed (its next byte is refused), and nothing is left here
        assert soon(lambda: len(receiver.hung_up) == 4, 2 * DRIP_S)
        assert soon(lambda: threading.active_count() == threads, 1.0), threading.enumerate()
        assert soon(lambda: open_fds() == fds, 1.0), (open_fds(), fds)
    finally:
        receiver.close()
        sender.close()


def test_a_cut_attempt_is_retried_and_holds_the_others_no_longer_than_the_deadline(store: SQLiteEventStore) -> None:
    """The first delivery meets a receiver that drips: it is cut at the deadline, counted as a failed attempt
    and retried with backoff; the delivery after it goes out at once after the cut."""
    receiver = DripReceiver(slow=1)
    store.add([event(1), event(2)], outbox=True)
    sender = WebhookSender(store, url=receiver.url, secret="k", timeout_s=DEADLINE_S, base_s=1.0, max_s=1.0)
    results: list[tuple[float, bool]] = []
    sender.on_result = lambda ok: results.append((time.monotonic(), ok))
    t0 = time.monotonic()
    sender.start()
    try:
        deadline = t0 + DEADLINE_S + SLACK_S
        while len(results) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(results) == 2, f"{len(results)} attempts ended {DEADLINE_S + SLACK_S:.1f} s after the start"
        (cut_at, cut_ok), (next_at, next_ok) = results
        assert not cut_ok and DEADLINE_S - 0.1 <= cut_at - t0 < DEADLINE_S + SLACK_S
        assert next_ok and next_at - t0 < DEADLINE_S + SLACK_S  # it waited for the first attempt's cut, no more
        [pending] = store.due(time.time() + 60, 10)  # the cut one, due again after the backoff
        assert pending.event.id == "e1" and pending.attempts == 1
        deadline = time.monotonic() + 5.0
        while store.pending_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.pending_count() == 0  # the retry reached the (now quick) receiver
    finally:
        sender.close()
        receiver.close()


def closes_at_once(sender: WebhookSender, store: SQLiteEventStore) -> None:
    """``sender.close()`` returns within a second with its thread ended, the delivery it cut still pending."""
    t0 = time.monotonic()
    sender.close()
    assert time.monotonic() - t0 < 1.0
    assert not sender._thread.is_alive()
    assert store.pending_count() == 1


def test_close_cuts_the_attempt_in_flight(store: SQLiteEventStore) -> None:
    """Stopping the server does not wait for a dripping receiver: the delivery stays in the outbox."""
    receiver = DripReceiver()
    store.add([event(1)], outbox=True)
    sender = WebhookSender(store, url=receiver.url, secret="k", timeout_s=30.0).start()
    try:
        deadline = time.monotonic() + 5.0
        while receiver.accepted < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(2 * DRIP_S)
        closes_at_once(sender, store)
    finally:
        sender.close()
        receiver.close()


def test_a_batch_runs_into_its_deadlines_within_half_the_claim(store: SQLiteEventStore) -> None:
    """Replicas on PostgreSQL claim the deliveries they take for :data:`CLAIM_S`: a batch whose every attempt ends
    at the deadline must still be recorded within the claim, or another replica sends them again."""
    for timeout_s, size in ((0.5, 50), (10.0, 3), (30.0, 1)):
        sender = WebhookSender(store, url="http://127.0.0.1:9/", secret="s", timeout_s=timeout_s)
        assert sender.batch_size == size
        assert sender.batch_size * timeout_s <= CLAIM_S / 2
    with pytest.raises(ValueError):
        Settings(webhook_timeout_s=CLAIM_S)


class HangingResolver:
    """``socket.getaddrinfo`` for the name ``receiver.test``: blocks (as on a DNS server that does not answer)
    until :meth:`answer`, then resolves it to 127.0.0.1; other names resolve as usual."""

    NAME = "receiver.test"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.original = socket.getaddrinfo
        self.answered = threading.Event()
        self.lookups = 0
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != self.NAME:
            return self.original(host, port, *args, **kwargs)
        self.lookups += 1
        self.answered.wait(30.0)
        return self.original("127.0.0.1", port, *args, **kwargs)

    def answer(self) -> None:
        self.answered.set()


def test_a_host_name_lookup_that_hangs_ends_at_the_deadline(
    store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver's name whose DNS server never answers: each attempt still ends at its deadline, saying so, and
    the lookups of later attempts queue behind the hung one (one lookup thread, not one per attempt); once DNS
    answers, deliveries go through."""
    resolver = HangingResolver(monkeypatch)
    receiver = DripReceiver(slow=0)
    port = receiver.url.rsplit(":", 1)[1].split("/")[0]
    sender = WebhookSender(store, url=f"http://{resolver.NAME}:{port}/hook", secret="k", timeout_s=DEADLINE_S).start()
    try:
        for i in range(2):
            error, took = timed_deliver(sender, event(i), DEADLINE_S + SLACK_S)
            assert error is not None and f"lookup of {resolver.NAME}" in error and "deadline" in error, error
            assert took >= DEADLINE_S - 0.1
        assert resolver.lookups == 1  # the second waited behind the first
        assert len([t for t in threading.enumerate() if t.name.startswith("facerec-webhook-lookup")]) == 1
        resolver.answer()
        error, _ = timed_deliver(sender, event(2), DEADLINE_S + SLACK_S)
        assert error is None
        assert len(receiver.answered) == 1
    finally:
        resolver.answer()
        receiver.close()
        sender.close()


def test_close_cuts_a_hanging_lookup(store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopping the server while the receiver's name is being looked up does not wait for DNS."""
    resolver = HangingResolver(monkeypatch)
    store.add([event(1)], outbox=True)
    sender = WebhookSender(store, url=f"http://{resolver.NAME}:9/hook", secret="k", timeout_s=30.0).start()
    try:
        assert soon(lambda: resolver.lookups == 1, 5.0)
        closes_at_once(sender, store)
    finally:
        resolver.answer()
        sender.close()


def test_the_name_looked_up_is_the_one_connected_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver's host, or its proxy's when the environment routes the URL through one (as httpx does); an IP
    address needs no lookup."""
    for var in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert HostLookup.host_of("https://hooks.example.com/x") == ("hooks.example.com", 443)
    assert HostLookup.host_of("http://hooks.example.com:8080/x") == ("hooks.example.com", 8080)
    assert HostLookup.host_of("http://127.0.0.1:9/x") is None
    assert HostLookup.host_of("http://[::1]:9/x") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.net:3128")
    assert HostLookup.host_of("https://hooks.example.com/x") == ("proxy.example.net", 3128)
    monkeypatch.setenv("NO_PROXY", "hooks.example.com")
    assert HostLookup.host_of("https://hooks.example.com/x") == ("hooks.example.com", 443)
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("ALL_PROXY", "http://all.example.net:8000")
    assert HostLookup.host_of("https://hooks.example.com/x") == ("all.example.net", 8000)
