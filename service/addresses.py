"""Network address helpers shared by the settings, the app, authentication and the video sources: whether a
host is loopback, and a URL with its secrets hidden for logs, errors and API answers."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_PARAMS = re.compile(r"pass|pwd|token|key|secret|auth|sig", re.IGNORECASE)
"""Query parameters whose values :func:`redact_url` hides (``password=``, ``access_token=``, ``api_key=``...)."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (127.0.0.0/8, ::1); a wildcard such as 0.0.0.0 is not."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_url(url: str, *, bare_user_is_secret: bool = False) -> str:
    """``url`` with its password and the values of secret-looking query parameters (:data:`SECRET_PARAMS`)
    replaced by ``***`` and its fragment dropped (``postgresql://app:***@db:5432/facerec?sslmode=require``).
    ``bare_user_is_secret``: a user without a password is hidden too (``rtsp://***@cam/live``: cameras take a
    token there); else it is shown (a database user). Text that is not a URL with a host (a file path, a
    camera index) is returned as it is; a URL that does not parse keeps only what follows its last ``@``."""
    try:
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            return url
        netloc = parts.netloc
        if "@" in netloc:
            host = parts.hostname or ""
            host = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
            if parts.password is not None:
                netloc = f"{parts.username or ''}:***@{host}"
            elif bare_user_is_secret:
                netloc = f"***@{host}"
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = urlencode([(k, "***" if SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "***@" + url.rsplit("@", 1)[-1] if "@" in url else "***"
