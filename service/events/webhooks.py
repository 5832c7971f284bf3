"""Webhook deliveries of events: signed, retried with backoff, at least once, from a persistent outbox.

Each event is POSTed as JSON to ``FACEREC_WEBHOOK_URL`` with the headers

- ``X-Facerec-Event-Id``: the event id; the same event may arrive more than once, so receivers de-duplicate
  on it;
- ``X-Facerec-Timestamp``: Unix seconds when this attempt was signed;
- ``X-Facerec-Signature``: ``sha256=<hex>``, HMAC-SHA256 with ``FACEREC_WEBHOOK_SECRET`` over
  ``"<timestamp>." + body`` (receivers should also refuse timestamps far from their clock, against replays).

A 2xx status is a delivery (the answer's body is not read); anything else (an error status, a refused
connection, no status line and headers within the attempt's deadline) is retried after
``min(base * 2**attempts, max)`` seconds, with up to 25 % random jitter, for as long as the event is kept
(``FACEREC_EVENTS_RETENTION_DAYS``). The outbox lives in the event store, so a restart loses no delivery.

Each attempt has an overall deadline (``FACEREC_WEBHOOK_TIMEOUT_S``), not only a timeout per read: a receiver
that sends its answer one byte at a time, each within a read timeout, would otherwise hold the sender (and every
later delivery) for hours. A watchdog (:class:`Deadline`) shuts the attempt's connection down when it passes; the
receiver's (or proxy's) host name is looked up first, in a worker thread waited on until the same deadline
(:class:`HostLookup`), since a lookup blocked on an unanswering DNS server cannot be cut.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx

from service.events.store import CLAIM_S, Event, EventStore

log = logging.getLogger("facerec.webhooks")

SIGNATURE_HEADER = "X-Facerec-Signature"
TIMESTAMP_HEADER = "X-Facerec-Timestamp"
EVENT_ID_HEADER = "X-Facerec-Event-Id"
STORE_RETRY_S = 1.0
"""How long the sender waits before reading the outbox again after the event store failed, seconds."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``"<timestamp>." + body``)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def body_of(event: Event) -> bytes:
    """The JSON body of one delivery: ``{"type": "track.decision", "event": {...}}``."""
    return json.dumps({"type": "track.decision", "event": event.to_dict()}, separators=(",", ":")).encode()


class Deadline:
    """The watchdog of one delivery attempt (a context manager): when ``seconds`` have passed it shuts down the
    connections the attempt opened, which ends a read blocked on them at once; :meth:`expire` does it earlier.

    It learns the attempt's sockets from httpx's ``trace`` extension (pass :meth:`trace` as
    ``extensions={"trace": ...}``), so the client must open a connection for each attempt (no keep-alive). It
    keeps a duplicate of each socket (the same connection), which a TLS handshake does not detach, and closes
    those when the attempt ends. (A host name lookup has no socket to shut: :class:`HostLookup` bounds it.)
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.name, self._timer.daemon = "facerec-webhook-deadline", True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()
        self._timer.join()
        with self._lock:
            for sock in self._socks:
                sock.close()
            self._socks.clear()

    def trace(self, name: str, info: dict[str, Any]) -> None:
        """httpx's ``trace`` callback: keeps each socket the attempt connects (shut at once when expired)."""
        if not name.endswith(".connect_tcp.complete"):  # "connection." (or "socks." through a SOCKS proxy)
            return
        sock = info["return_value"].get_extra_info("socket")
        if not isinstance(sock, socket.socket):
            return
        try:
            sock = sock.dup()
        except OSError:  # no file descriptor left: the original still serves (but not through a TLS handshake)
            pass
        else:
            with self._lock:
                self._socks.append(sock)
        if self.expired:
            _shut(sock)

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it has passed or the attempt was cut)."""
        return 0.0 if self.expired else max(0.0, self._ends - time.monotonic())

    def expire(self) -> None:
        """Cut the attempt now (the timer calls this at the deadline; closing the sender calls it too)."""
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Shut the connection of ``sock`` down both ways: a ``recv`` or ``send`` blocked on it returns at once (which
    ``close`` does not do). A socket already closed or detached is left as it is."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the socket's own, under any TLS wrapper


class HostLookup:
    """Host name lookups of delivery attempts, bounded by their deadline: ``getaddrinfo`` runs in one worker thread
    and the attempt waits for it no longer than its :class:`Deadline`. A lookup that outlives the deadline keeps
    the worker until the resolver gives up; the next attempt's lookup queues behind it and, while DNS stays
    unanswering, runs into its own deadline too: never more than one lookup thread. The connection then looks the
    name up again (from the resolver's cache where there is one); a proxy's host is looked up instead of the
    receiver's when the environment routes the URL through one (as httpx does)."""

    def __init__(self) -> None:
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="facerec-webhook-lookup")

    @staticmethod
    def host_of(url: str) -> tuple[str, int] | None:
        """The host and port the connection for ``url`` is opened to (its proxy's, if any); None for an IP
        address, which needs no lookup."""
        target = httpx.URL(url)
        proxies = urllib.request.getproxies()
        proxy = proxies.get(target.scheme) or proxies.get("all")
        if proxy and not urllib.request.proxy_bypass(target.host):
            target = httpx.URL(proxy if "://" in proxy else f"http://{proxy}")
        host = target.host
        try:
            ipaddress.ip_address(host)
            return None
        except ValueError:
            pass
        return host, target.port or (443 if target.scheme == "https" else 80)

    def check(self, url: str, deadline: Deadline) -> str | None:
        """None once the lookup of the connection's host name has ended within ``deadline`` (a failed lookup too:
        the connection then reports it as before); else why not (the attempt fails)."""
        where = self.host_of(url)
        if where is None:
            return None
        future = self._worker.submit(socket.getaddrinfo, *where, type=socket.SOCK_STREAM)
        while not future.done() and deadline.remaining() > 0:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                future.result(timeout=min(0.1, deadline.remaining()))
        return None if future.done() else f"the lookup of {where[0]} took longer than the deadline"

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


def backoff_s(attempts: int, *, base_s: float, max_s: float) -> float:
    """Seconds to wait before attempt ``attempts + 1``: exponential from ``base_s``, capped, with jitter."""
    delay = min(base_s * (2.0 ** min(attempts, 30)), max_s)
    return delay * (1.0 + 0.25 * random.random())


class WebhookSender:
    """One thread that drains the outbox of ``store`` to ``url``; :meth:`wake` after adding events."""

    def __init__(
        self,
        store: EventStore,
        *,
        url: str,
        secret: str,
        timeout_s: float = 10.0,
        base_s: float = 1.0,
        max_s: float = 300.0,
        on_result: Callable[[bool], None] | None = None,
    ) -> None:
        self.store, self.url, self.secret = store, url, secret
        self.base_s, self.max_s = base_s, max_s
        self.on_result = on_result
        self.timeout_s = timeout_s
        # a connection per attempt (no keep-alive): the attempt's :class:`Deadline` must see it open to cut it
        limits = httpx.Limits(max_keepalive_connections=0)
        self._client = httpx.Client(timeout=timeout_s, limits=limits, follow_redirects=False)
        self._lookup = HostLookup()
        self._attempt: Deadline | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facerec-webhooks", daemon=True)

    @property
    def batch_size(self) -> int:
        """Deliveries taken at once: up to 50, but no more than can all run into their deadline within half of a
        shared store's claim (:data:`CLAIM_S`), so another replica does not take them over and send them twice."""
        return max(1, min(50, int(CLAIM_S / 2 // self.timeout_s)))

    def start(self) -> WebhookSender:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread; an attempt in flight is cut (its delivery stays in the outbox)."""
        self._stop.set()
        self._wake.set()
        attempt = self._attempt
        if attempt is not None:
            attempt.expire()
        self._thread.join(timeout_s)
        self._client.close()
        self._lookup.close()

    def deliver(self, event: Event) -> str | None:
        """One attempt, ended by its deadline (``timeout_s``) at the latest; None on a 2xx, else the reason."""
        body = body_of(event)
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event.id,
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(self.secret, ts, body),
        }
        deadline = self._attempt = Deadline(self.timeout_s)
        if self._stop.is_set():  # :meth:`close` may not have seen this attempt
            deadline.expire()
        try:  # the answer's body is never read: a receiver may send an endless one (memory, a stuck sender)
            with deadline:
                problem = self._lookup.check(self.url, deadline)
                if problem is not None:
                    return "stopped" if self._stop.is_set() else problem
                with self._client.stream(
                    "POST", self.url, content=body, headers=headers, extensions={"trace": deadline.trace}
                ) as r:
                    status = r.status_code
        except (httpx.HTTPError, OSError) as exc:
            if not deadline.expired:
                return type(exc).__name__
            return "stopped" if self._stop.is_set() else f"no answer within the {self.timeout_s:g} s deadline"
        finally:
            self._attempt = None
        return None if 200 <= status < 300 else f"HTTP {status}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._drain()
            except Exception as exc:  # the store away (a database restarting): the outbox keeps the deliveries
                log.warning("webhook outbox unavailable (%s); retrying in %.0f s", exc, STORE_RETRY_S)
                self._stop.wait(STORE_RETRY_S)

    def _drain(self) -> None:
        """Send the deliveries due now; when none is, wait until the next one is due (or :meth:`wake`)."""
        batch = self.store.due(time.time(), self.batch_size)
        for pending in batch:
            if self._stop.is_set():
                return
            error = self.deliver(pending.event)
            if self.on_result is not None:
                self.on_result(error is None)
            if error is None:
                self.store.delivered(pending.event.id)
            else:
                wait = backoff_s(pending.attempts, base_s=self.base_s, max_s=self.max_s)
                log.warning("webhook delivery of event %s failed (%s); retry in %.1f s", pending.event.id, error, wait)
                self.store.retry_later(pending.event.id, time.time() + wait, error)
        if batch:
            return
        nxt = self.store.next_due() if not self._stop.is_set() else None
        wait_s = self.max_s if nxt is None else min(max(nxt - time.time(), 0.05), self.max_s)
        self._wake.wait(wait_s)
        self._wake.clear()
