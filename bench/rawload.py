"""A light HTTP load client for the benchmarks: every request prepared once as bytes (multipart body included),
sent on keep-alive connections from one asyncio loop, and of each answer only the status, the length and the
number of ``"embedding"`` keys read, so that the client takes as little of a shared CPU as possible."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np


def multipart(image: bytes, fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with the file field ``image`` (and plain ``fields``); (body, content type)."""
    boundary = "facerecbench0123456789"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in (fields or {}).items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="i.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + image
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def requests_for(port: int, images: list[bytes], fields: dict[str, str] | None = None) -> list[bytes]:
    """Complete HTTP/1.1 ``POST /v1/embed`` requests (keep-alive), built once so the clients only send bytes."""
    out = []
    for image in images:
        body, ctype = multipart(image, fields)
        head = (
            f"POST /v1/embed HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """Send one prepared request on a keep-alive connection; (status, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def load(port: int, requests: list[bytes], clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    """``clients`` keep-alive connections in one asyncio loop, each posting the prepared ``requests`` back to back
    (client i starts at request i) for ``warmup + seconds``; figures from requests that started after the warm-up.
    The client side does no per-request encoding and parses only the status line, the length and the faces
    (counted as ``"embedding"`` keys), so it takes as little of the shared CPU as possible."""
    lat: list[float] = []
    faces = 0
    statuses: dict[int, int] = {}

    async def client(i: int, t0: float, t1: float) -> None:
        nonlocal faces
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        k = i
        try:
            while (s := time.perf_counter()) < t1:
                status, body = await _exchange(reader, writer, requests[k % len(requests)])
                e = time.perf_counter()
                k += clients
                if s < t0:
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    lat.append(e - s)
                    faces += body.count(b'"embedding"')
        finally:
            writer.close()

    async def run() -> float:
        start = time.perf_counter()
        t0, t1 = start + warmup, start + warmup + seconds
        await asyncio.gather(*(client(i, t0, t1) for i in range(clients)))
        return max(time.perf_counter(), t1) - t0  # requests in flight at t1 finish after it

    elapsed = asyncio.run(run())
    arr = np.asarray(lat) * 1000
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests_ok": len(lat),
        "statuses": statuses,
        "faces_per_s": round(faces / elapsed, 2),
        "requests_per_s": round(len(lat) / elapsed, 2),
        "p50_ms": round(float(np.percentile(arr, 50)), 1) if len(arr) else None,
        "p99_ms": round(float(np.percentile(arr, 99)), 1) if len(arr) else None,
        "latencies_ms": arr.tolist(),
    }


def latency(figs: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the latencies of several runs: p50/p99 ms, requests."""
    arr = np.concatenate([f["latencies_ms"] for f in figs])
    p50, p99 = np.percentile(arr, [50, 99])
    return {"clients": 1, "requests_ok": len(arr), "p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1)}
