"""Recognition: verify, identify (recognize scope), detect (recognize) and embed (admin: embeddings leave)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service import recognition
from service.auth import AdmitFirst
from service.convert import detected, embedded, identify_response, verify_response
from service.deps import AdminKey, GalleryDep, ModelDep, RecognizeKey, SettingsDep
from service.errors import BadRequest
from service.query_check import reads_own_query
from service.routes.docs import errors, image_body
from service.schemas import (
    DetectParams,
    DetectResponse,
    EmbedParams,
    EmbedResponse,
    IdentifyParams,
    IdentifyResponse,
    VerifyParams,
    VerifyResponse,
)
from service.uploads import read_payload

router = APIRouter(prefix="/v1", tags=["recognition"], route_class=AdmitFirst)

IMAGE_ERRORS = errors(401, 403, 413, 415, 422, 429, 503)


def _require(image: bytes | None, name: str) -> bytes:
    if image is None:
        raise BadRequest(f"the `{name}` image is required")
    return image


@router.post(
    "/verify",
    response_model=VerifyResponse,
    summary="Are two faces the same person? (two images, or an image and an enrolled subject)",
    responses={**IMAGE_ERRORS, **errors(404)},
    openapi_extra=image_body(
        {
            "image_a": "First photo (two-image mode).",
            "image_b": "Second photo (two-image mode).",
            "image": "The photo to check against `subject_id` (subject mode).",
        },
        VerifyParams,
        {"threshold": 1.1},
    ),
)
@reads_own_query
async def verify(
    _: RecognizeKey, request: Request, model: ModelDep, gallery: GalleryDep, settings: SettingsDep
) -> VerifyResponse:
    """The largest face of each image is used. Against a subject the image is compared with *all* its faces
    and the median distance decides, so one bad enrolment photo does not.
    ``match`` is ``distance <= threshold``."""
    payload = await read_payload(request)
    params = payload.params(VerifyParams, images=("image_a", "image_b", "image"))
    threshold = settings.match_threshold if params.threshold is None else params.threshold
    if params.subject_id is not None:
        first = payload.one("image")
        image = _require(first if first is not None else payload.one("image_a"), "image")
        result = await model.call(
            "verify",
            lambda _: 1,
            recognition.verify_subject,
            gallery=gallery,
            image=image,
            subject_id=params.subject_id,
            threshold=threshold,
            aligned=params.face == "aligned",
        )
    else:
        image_a, image_b = (
            _require(payload.one("image_a"), "image_a"),
            _require(payload.one("image_b"), "image_b"),
        )
        result = await model.call(
            "verify",
            lambda _: 2,
            recognition.verify_images,
            image_a=image_a,
            image_b=image_b,
            threshold=threshold,
            aligned=params.face == "aligned",
        )
    return verify_response(result)


@router.post(
    "/identify",
    response_model=IdentifyResponse,
    summary="Who is in this photo? Every face with its match (or null = unknown) and candidates",
    responses={**IMAGE_ERRORS, **errors(409)},
    openapi_extra=image_body(
        {"image": "The photo to identify."},
        IdentifyParams,
        {"top_k": 3},
    ),
)
@reads_own_query
async def identify(
    _: RecognizeKey, request: Request, model: ModelDep, gallery: GalleryDep, settings: SettingsDep
) -> IdentifyResponse:
    """A face's ``match`` is its nearest subject when within ``threshold`` (L2), else null (unknown).
    ``candidates`` lists the nearest subjects (one entry each). A photo without faces gives ``faces: []``.

    Without a ``threshold`` in the request the service picks it: the fixed threshold, lowered as the gallery
    grows so that the estimated false-identification rate stays within ``FACEREC_MAX_FIR``. The response
    says the threshold used, ``threshold_source`` (`request`, `fixed` or `max_fir`) and the estimate."""
    payload = await read_payload(request)
    params = payload.params(IdentifyParams, images=("image",))
    image = _require(payload.one("image"), "image")
    top_k = settings.top_k if params.top_k is None else params.top_k
    result = await model.call(
        "identify",
        lambda r: len(r.faces),
        recognition.identify,
        gallery=gallery,
        image=image,
        threshold=params.threshold,
        top_k=top_k,
        fixed_threshold=settings.match_threshold,
        max_fir=settings.max_fir,
        aligned=params.face == "aligned",
    )
    return identify_response(result)


@router.post(
    "/detect",
    response_model=DetectResponse,
    summary="Find faces: boxes, landmarks and confidence",
    responses=IMAGE_ERRORS,
    openapi_extra=image_body({"image": "The photo."}, DetectParams, {}),
)
@reads_own_query
async def detect(_: RecognizeKey, request: Request, model: ModelDep) -> DetectResponse:
    """Every face, largest first. No face gives ``faces: []``."""
    payload = await read_payload(request)
    payload.params(DetectParams, images=("image",))
    image = _require(payload.one("image"), "image")
    (width, height), found = await model.call("detect", lambda r: len(r[1]), recognition.detect, image=image)
    return DetectResponse(width=width, height=height, faces=[detected(d) for d in found])


@router.post(
    "/embed",
    response_model=EmbedResponse,
    summary="Faces with their 128-d embeddings (admin)",
    responses=IMAGE_ERRORS,
    openapi_extra=image_body({"image": "The photo (or, with `face=aligned`, one aligned face crop)."}, EmbedParams, {}),
)
@reads_own_query
async def embed(_: AdminKey, request: Request, model: ModelDep) -> EmbedResponse:
    """Every face, largest first, with quality and its unit-norm float32 embedding (128 numbers). Admin only:
    embeddings are biometric templates. ``face=aligned``: the image is one already aligned face crop; detection
    is skipped, the crop is resized to 160x160 and encoded (its landmarks and confidence are null)."""
    payload = await read_payload(request)
    params = payload.params(EmbedParams, images=("image",))
    image = _require(payload.one("image"), "image")
    aligned = params.face == "aligned"
    faces = await model.call("embed", len, recognition.embed, image=image, aligned=aligned)
    return EmbedResponse(model_id=model.analyzer.model_id, faces=[embedded(f) for f in faces])
