"""Network address helpers shared by the settings, the app and authentication: whether a host is loopback, and
a URL with its password hidden for logs and errors."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (127.0.0.0/8, ::1); a wildcard such as 0.0.0.0 is not."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """``url`` with the password replaced by ``***`` (``postgresql://app:***@db:5432/facerec``); the text
    before ``@`` is dropped whole when the URL does not parse."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "***@" + url.rsplit("@", 1)[-1] if "@" in url else "***"
