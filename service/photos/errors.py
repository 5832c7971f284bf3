"""Photo library errors: service errors with their HTTP status and stable code (mapped by service/errors.py's
``ServiceError`` handler, one envelope)."""

from __future__ import annotations

from service.errors import ServiceError


class PhotoLibraryDisabled(ServiceError):
    """The deployment has not opted in to keeping faces of people who never enrolled."""

    status, code = 403, "photo_library_disabled"

    def __init__(self) -> None:
        super().__init__(
            "the photo library is off on this server: it keeps the faces of everyone in indexed photos, so a "
            "deployment must opt in with FACEREC_PHOTO_LIBRARY=true"
        )


class PhotoNotFound(ServiceError):
    status, code = 404, "not_found"


class ObservationNotFound(ServiceError):
    status, code = 404, "not_found"


class ClusterNotFound(ServiceError):
    status, code = 404, "not_found"


class ClusterConflict(ServiceError):
    """A cluster operation that does not apply (e.g. a face that is not in that cluster, merging with itself)."""

    status, code = 409, "conflict"
