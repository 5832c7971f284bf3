"""Webhook deliveries of events: signed, retried with backoff, at least once, from a persistent outbox.

Each event is POSTed as JSON to ``FACEREC_WEBHOOK_URL`` with the headers

- ``X-Facerec-Event-Id``: the event id; the same event may arrive more than once, so receivers de-duplicate
  on it;
- ``X-Facerec-Timestamp``: Unix seconds when this attempt was signed;
- ``X-Facerec-Signature``: ``sha256=<hex>``, HMAC-SHA256 with ``FACEREC_WEBHOOK_SECRET`` over
  ``"<timestamp>." + body`` (receivers should also refuse timestamps far from their clock, against replays).

A 2xx status is a delivery (the answer's body is not read); anything else (an error status, a refused
connection, a timeout) is retried after ``min(base * 2**attempts, max)`` seconds, with up to 25 % random jitter,
for as long as the event is kept (``FACEREC_EVENTS_RETENTION_DAYS``). The outbox lives in the event store, so a
restart loses no delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Callable

import httpx

from service.events.store import Event, EventStore

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
        timeout_s: float = 5.0,
        base_s: float = 1.0,
        max_s: float = 300.0,
        on_result: Callable[[bool], None] | None = None,
    ) -> None:
        self.store, self.url, self.secret = store, url, secret
        self.base_s, self.max_s = base_s, max_s
        self.on_result = on_result
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facerec-webhooks", daemon=True)

    def start(self) -> WebhookSender:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        self._client.close()

    def deliver(self, event: Event) -> str | None:
        """One attempt; None on a 2xx, else the reason."""
        body = body_of(event)
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event.id,
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(self.secret, ts, body),
        }
        try:  # the answer's body is never read: a receiver may send an endless one (memory, a stuck sender)
            with self._client.stream("POST", self.url, content=body, headers=headers) as r:
                status = r.status_code
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}"
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
        batch = self.store.due(time.time(), 50)
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
