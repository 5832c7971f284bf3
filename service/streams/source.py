"""Which camera a stream's URL reads: :func:`source_key`, equal for two URLs of the same source, so that one
camera is not added twice (each of its people would be announced twice).

Two URLs are the same source when they differ only in what does not change what FFmpeg reads: the credentials
(another user or password on the same camera), the case of the scheme and host, a port left out or given as the
scheme's default (rtsp 554, rtsps 322, http 80, https 443), an empty path or ``/``. The path and query are
compared as written (a camera may tell ``/Stream1`` from ``/stream1``). A local camera is its index: ``0``,
``00`` and ``/dev/video0`` are one camera. URLs are parsed as the stream URL validation parses them
(:func:`urllib.parse.urlsplit`, its ``hostname`` and ``port``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from service.video.decode import camera_index

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
"""The port FFmpeg connects to when a URL of this scheme names none."""


def source_key(url: str) -> str:
    """``url`` reduced to the source it reads (see the module docstring); a URL that does not parse (a row
    stored before the validation refused it) is its own key."""
    index = camera_index(url)
    if index is not None:
        return f"camera:{index}"
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return url
    if not host:
        return url
    where = f"[{host}]" if ":" in host else host
    key = f"{scheme}://{where}:{port or DEFAULT_PORTS.get(scheme, 0)}{parts.path or '/'}"
    return f"{key}?{parts.query}" if parts.query else key
