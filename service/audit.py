"""An append-only audit log of changes to the gallery and the keys: ``<data>/audit.log``, one JSON object a line.

Each record says who (``actor``: the API key's id and name, ``"local"`` for the key-less loopback user, or
``"cli:<os user>"`` for the command line working on the data dir itself), what (``action``: ``subject.create``,
``subject.update``, ``subject.delete``, ``face.enroll``, ``face.delete``, ``key.create``, ``key.revoke``; and one
read: ``subject.export``, a person's data handed out), to what (``target``: ids only), how many (``count``, where it
applies), when (``ts``, ISO 8601 UTC) and through what (``via``: ``api`` or ``cli``). It never holds image bytes,
embeddings or tokens. Every record is flushed and fsynced before the request (or command) that made the change
answers, and lines are written whole under a lock (and ``O_APPEND``), so concurrent writers (the server and
``facerec keys``) do not interleave. A record that cannot be written (a full disk, a read-only or failing file
system) is :class:`StorageFull` (507) / :class:`StorageUnavailable` (503) saying that the change itself was made.
"""

from __future__ import annotations

import errno
import getpass
import json
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from service.gallery.errors import StorageError, StorageFull, StorageUnavailable
from service.keys import ApiKey
from service.sqlite_file import usable

log = logging.getLogger("facerec.audit")

AUDIT_FILE = "audit.log"
FULL_ERRNO = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""OS errors of a write that mean the disk (or the user's quota, or the largest file) is full."""

Action = Literal[
    "subject.create",
    "subject.update",
    "subject.delete",
    "face.enroll",
    "face.delete",
    "key.create",
    "key.revoke",
    "model.reindex",
    "model.switch",
    "photo.index",
    "photo.delete",
    "photo.erase_subject",
    "cluster.name",
    "subject.export",
]

READS: frozenset[str] = frozenset({"subject.export"})
"""The actions that record a read, not a change: their data is handed out only once the record is written."""


def actor_of(key: ApiKey | None) -> dict[str, str] | str:
    """``{"key_id", "name"}`` for a real key; ``"local"`` for the loopback user (or no key at all)."""
    if key is None or key.id == "local":
        return "local"
    return {"key_id": key.id, "name": key.name}


def cli_actor() -> str:
    """``"cli:<os user>"``: the actor of changes the command line makes on a local data dir (no key involved)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


def unrecorded(entry: dict[str, Any], *, full: bool, where: str, why: str) -> StorageError:
    """The error of an audit record (``entry``, logged here so that it is not lost) its storage (``where``)
    refused, after the change it records was made: :class:`StorageFull` (507) when it is full, else
    :class:`StorageUnavailable` (503). Its message says that the change was made (it must not be repeated: only
    its record is missing), unlike the storage's own errors; for a read (:data:`READS`), that nothing was sent."""
    log.error("the audit log (%s) cannot be written: %s; unrecorded: %s", where, why, entry)
    done = "nothing was sent" if entry.get("action") in READS else "the change was made"
    text = f"{done}, but its audit record cannot be written to {where}: {why}"
    return StorageFull(text) if full else StorageUnavailable(text)


class AuditStore(ABC):
    """An append-only audit log of changes (who, what, to what, when, through what); a record is durable when
    :meth:`record` returns. Never holds image bytes, embeddings or tokens. Thread-safe. Implementations:
    :class:`AuditLog` (``<data>/audit.log``) and the database's (:mod:`service.pgstores`)."""

    def record(
        self,
        action: Action,
        *,
        actor: dict[str, str] | str,
        target: dict[str, Any],
        count: int | None = None,
        via: Literal["api", "cli"] = "api",
    ) -> dict[str, Any]:
        """Append one record, durable on return: ``ts`` (now, ISO 8601 UTC, ms), ``actor``, ``action``,
        ``target``, ``via`` and ``count`` when given. Returns the record written."""
        entry: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "actor": actor,
            "action": action,
            "target": target,
            "via": via,
        }
        if count is not None:
            entry["count"] = count
        self._append(entry)
        return entry

    @abstractmethod
    def _append(self, entry: dict[str, Any]) -> None:
        """Store one record durably."""

    @abstractmethod
    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        """The last ``n`` records, oldest first."""


class AuditLog(AuditStore):
    """Appends records to ``<data_dir>/audit.log``; safe to share between threads."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / AUDIT_FILE
        self._lock = threading.Lock()

    def _append(self, entry: dict[str, Any]) -> None:
        """Append one line and fsync it; an OS error is :func:`unrecorded`'s 507/503."""
        line = (json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                why = exc.strerror or type(exc).__name__
                raise unrecorded(entry, full=exc.errno in FULL_ERRNO, where=AUDIT_FILE, why=why) from exc

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        """The last ``n`` records, oldest first (a line that is not a JSON object is skipped);
        :class:`StorageUnavailable` when the log cannot be read."""
        if not self.path.exists():
            return []
        out: list[dict[str, Any]] = []
        with usable(f"the audit log {self.path}"), open(self.path, encoding="utf-8", errors="replace") as f:
            for line in deque(f, maxlen=max(0, n)):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    out.append(record)
        return out
