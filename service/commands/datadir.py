"""Commands that only read the data dir refuse a missing one instead of creating it (with an empty gallery and
key store in it): a mistyped ``--data`` says so, and leaves nothing behind."""

from __future__ import annotations

from service.config import Settings
from service.gallery.errors import StorageUnavailable


def require_data_dir(settings: Settings) -> None:
    """:class:`StorageUnavailable` (``no data dir at <path>``) when ``settings`` select the embedded stores and
    their data dir does not exist. With ``FACEREC_DATABASE_URL`` the stores live in the database; a data dir that
    exists but cannot be used (a file, unreadable) is left to the stores to explain when they open it."""
    if settings.database_url:
        return
    try:
        settings.data.stat()
    except FileNotFoundError:
        raise StorageUnavailable(
            f"no data dir at {settings.data.absolute()} (choose one with --data or FACEREC_DATA)"
        ) from None
    except OSError:  # a parent that is a file, no permission...: the stores say which when they open it
        return
