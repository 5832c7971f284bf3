"""Domain errors raised by the pipeline. The service maps them to HTTP statuses; nothing here knows HTTP."""

from __future__ import annotations


class FaceRecError(Exception):
    """Base class: every error the library raises on purpose. ``code`` is a stable machine-readable name."""

    code = "facerec_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(FaceRecError):
    """The bytes are not a decodable image (empty, truncated, corrupt, unsupported format)."""

    code = "invalid_image"


class ImageTooLarge(InvalidImage):
    """The image's header declares more pixels than allowed; refused before decoding the pixels."""

    code = "payload_too_large"


class NoFace(FaceRecError):
    """No face was found where exactly one was required."""

    code = "no_face"


class MultipleFaces(FaceRecError):
    """Several faces were found where exactly one was required."""

    code = "multiple_faces"


class LowQuality(FaceRecError):
    """The face is below a quality minimum (size, confidence or sharpness); ``reasons`` lists which."""

    code = "low_quality"

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


class BadPose(LowQuality):
    """The face is turned too far from the camera to enrol (``reasons`` includes ``pose``, perhaps others)."""

    code = "pose"


class WeightsUnavailable(FaceRecError):
    """The FaceNet weights could not be found, fetched or verified."""

    code = "weights_unavailable"


class Overloaded(FaceRecError):
    """Too much work is already queued for a model; nothing was done. Retry shortly."""

    code = "overloaded"
