"""Atomic snapshots of a model's index, so a restart does not rebuild HNSW (minutes at 1M faces).

File ``<data>/index/<model slug>.snap``::

    b"FRGSNAP1" | u32 header length | JSON header, zero-padded to 4096 bytes | payload

The header records the gallery uuid, schema version, model id, the last change the index contains
(``max_face_id``, ``max_deletion_seq``), each segment's kind and byte length, tombstone counts, and the
payload's length and CRC-32. The payload is each segment's FAISS serialisation followed by its tombstone ids
(int64). Writing: temp file in the same dir -> fsync -> ``os.replace`` -> fsync of the dir; a crash leaves
either the old or the new snapshot. Reading checks magic, sizes and CRC *before* FAISS parses anything;
any failure raises :class:`SnapshotInvalid` and the caller rebuilds from SQLite.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np

from service.gallery.errors import SnapshotInvalid
from service.gallery.index import ModelIndex
from service.gallery.segment import FLAT, HNSW, IndexParams, Segment

MAGIC = b"FRGSNAP1"
FORMAT = 1
SNAP_DIR = "index"
_READ_BLOCK = 1 << 22
HEADER_SLOT = 4096
_faiss: Any = faiss  # the callback IO classes are missing from the type stubs


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """What a snapshot says about itself."""

    gallery_uuid: str
    schema_version: int
    model_id: str
    max_face_id: int
    max_deletion_seq: int
    saved_at: float


def snapshot_path(data_dir: Path, model_id: str) -> Path:
    """``<data>/index/<readable slug>-<8 hex of sha1(model id)>.snap``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[:64]
    digest = hashlib.sha1(model_id.encode()).hexdigest()[:8]
    return Path(data_dir) / SNAP_DIR / f"{slug}-{digest}.snap"


class _CrcWriter:
    """File writer for FAISS' callback IO that counts bytes and updates a CRC-32."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.crc = 0
        self.n = 0

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.n += len(data)
        return len(data)


def save(path: Path, index: ModelIndex, header: SnapshotHeader) -> None:
    """Write ``index`` atomically to ``path``. The caller keeps the index from changing meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    segs: list[dict[str, Any]] = []
    try:
        with open(tmp, "wb") as f:
            f.write(bytes(len(MAGIC) + 4 + HEADER_SLOT))  # the header is known last; its slot comes first
            payload = _CrcWriter(f)
            for seg in index.segments:
                start = payload.n
                writer = _faiss.PyCallbackIOWriter(payload.write)
                faiss.write_index(seg.index, writer)
                del writer  # flushes
                nbytes = payload.n - start
                tomb = np.array(sorted(seg.tombstones), dtype="<i8").tobytes()
                payload.write(tomb)
                segs.append({"kind": seg.kind, "nbytes": nbytes, "tombstones": len(seg.tombstones)})
            meta = {
                "format": FORMAT,
                "gallery_uuid": header.gallery_uuid,
                "schema_version": header.schema_version,
                "model_id": header.model_id,
                "max_face_id": header.max_face_id,
                "max_deletion_seq": header.max_deletion_seq,
                "saved_at": header.saved_at,
                "segments": segs,
                "payload_len": payload.n,
                "payload_crc32": payload.crc,
            }
            head = json.dumps(meta).encode()
            if len(head) > HEADER_SLOT:
                raise ValueError(f"snapshot header of {len(head)} bytes does not fit its slot")
            f.seek(0)
            f.write(MAGIC + struct.pack("<I", len(head)) + head)
            f.flush()
            os.fsync(f.fileno())
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.replace(tmp, path)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """Parse and return the JSON header and the payload's offset; raises :class:`SnapshotInvalid`."""
    try:
        with open(path, "rb") as f:
            pre = f.read(len(MAGIC) + 4)
            if len(pre) < len(MAGIC) + 4 or pre[: len(MAGIC)] != MAGIC:
                raise SnapshotInvalid(f"{path}: not a gallery snapshot")
            (hlen,) = struct.unpack("<I", pre[len(MAGIC) :])
            if hlen > HEADER_SLOT:
                raise SnapshotInvalid(f"{path}: header length {hlen} is absurd")
            raw = f.read(hlen)
            meta = json.loads(raw)
    except FileNotFoundError:
        raise SnapshotInvalid(f"{path}: missing") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise SnapshotInvalid(f"{path}: unreadable header ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SnapshotInvalid(f"{path}: unknown format")
    return meta, len(MAGIC) + 4 + HEADER_SLOT


def load(path: Path, params: IndexParams) -> tuple[ModelIndex, SnapshotHeader]:
    """Verify and load a snapshot; raises :class:`SnapshotInvalid` on any inconsistency."""
    meta, offset = read_header(path)
    try:
        size = path.stat().st_size
        if size != offset + int(meta["payload_len"]):
            raise SnapshotInvalid(f"{path}: size {size}, expected {offset + int(meta['payload_len'])} (truncated?)")
        crc = 0
        with open(path, "rb") as f:
            f.seek(offset)
            while block := f.read(_READ_BLOCK):
                crc = zlib.crc32(block, crc)
        if crc != int(meta["payload_crc32"]):
            raise SnapshotInvalid(f"{path}: checksum mismatch (corrupt)")
        segments: list[Segment] = []
        with open(path, "rb") as f:
            f.seek(offset)
            for s in meta["segments"]:
                if s["kind"] not in (FLAT, HNSW):
                    raise SnapshotInvalid(f"{path}: unknown segment kind {s['kind']!r}")
                start = f.tell()
                reader = _faiss.PyCallbackIOReader(f.read)
                idx = faiss.read_index(reader)
                del reader
                if f.tell() != start + int(s["nbytes"]):
                    raise SnapshotInvalid(f"{path}: segment size mismatch")
                ntomb = int(s["tombstones"])
                tomb = np.frombuffer(f.read(8 * ntomb), dtype="<i8")
                if not isinstance(idx, faiss.IndexIDMap) or idx.d != 128:
                    raise SnapshotInvalid(f"{path}: unexpected index type")
                seg = Segment(idx, s["kind"], {int(t) for t in tomb})
                seg.set_ef_search(params.ef_search)
                segments.append(seg)
        header = SnapshotHeader(
            gallery_uuid=str(meta["gallery_uuid"]),
            schema_version=int(meta["schema_version"]),
            model_id=str(meta["model_id"]),
            max_face_id=int(meta["max_face_id"]),
            max_deletion_seq=int(meta["max_deletion_seq"]),
            saved_at=float(meta.get("saved_at", time.time())),
        )
    except SnapshotInvalid:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, OSError) as e:
        raise SnapshotInvalid(f"{path}: unreadable ({e})") from None
    index = ModelIndex(params, segments or None)
    return index, header
