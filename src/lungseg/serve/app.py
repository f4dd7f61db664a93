"""The lungseg web service: a REST API and a web page around one loaded :class:`Segmenter`.

:func:`create_app` builds the FastAPI app from one :class:`ServeSettings`. The model loads there,
once, on the settings' device and backend, so a missing file, a GPU that is not there or an
engine that is not installed fails in one line before the server starts. The routes are defined
once, at module level, on :data:`router`; they reach what the app holds (the model, the bounded
:class:`InferencePool`, the :class:`ResultStore`) through the :func:`get_service` dependency. The
app's lifespan creates the pool and the store, so a burst of requests queues and, beyond the
queue, gets 503 with ``Retry-After`` instead of exhausting memory; result PNGs live in one
temporary folder that the shutdown removes.

``/v1/model`` serves a model card built from the loaded weights' own header (their
:class:`~lungseg.weights.WeightsInfo`): name, architecture and its arguments, input size,
threshold, labels, version and the training record. A card file beside the weights
(``NAME.json``, as the shipped model has) may add what the header does not state (metrics, data
sources); for everything the header states, the header wins.

Every error is JSON ``{"detail": message}``: 413 for an upload or an image over the limits, 415
for content that is not an image (judged by content, not by name: also a DICOM without pixel data
or in a transfer syntax no installed decoder reads), 422 for a missing file, more than one, or an
image that cannot be decoded (empty, truncated, corrupt, too small), 408 for a body that does not
arrive within the read timeout, 400 for malformed multipart, 503 when busy, and 500, logged on the
server and without a stack trace in the answer, for anything unexpected. The reader's error
types (:mod:`lungseg.errors`) choose between 413, 415 and 422, never its wording.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from lungseg import __version__
from lungseg.data.io import ImageMeta
from lungseg.errors import ImageTooLargeError, InvalidInputError, UnsupportedFormatError
from lungseg.inference import Segmenter
from lungseg.measure import CARDIOMEGALY_CTR, CardiothoracicExtents
from lungseg.overlay import HEART_COLOR, LEFT_COLOR, RIGHT_COLOR, THORAX_COLOR
from lungseg.serve.body_limit import BodyLimitMiddleware
from lungseg.serve.pool import InferencePool, PoolBusyError
from lungseg.serve.results import ResultStore
from lungseg.serve.segment import PNG_VIEWS, SegmentedUpload, hex_colour, segment_upload
from lungseg.serve.settings import MULTIPART_ALLOWANCE, ServeSettings, describe_bytes
from lungseg.weights import WeightsInfo, shipped_weights_path

log = logging.getLogger(__name__)

CARDIOMEGALY_CAVEAT = (
    f"a CTR over {CARDIOMEGALY_CTR} suggests cardiomegaly on a PA film; AP and supine films "
    "enlarge the heart's shadow, so there the flag is a prompt to look, not a finding"
)
"""What ``heart.cardiomegaly`` means, sent with every answer so no client shows the flag bare."""


class ImageInfo(BaseModel):
    """The uploaded image as read."""

    width: int
    height: int
    format: str = Field(description="png, jpeg, tiff, bmp or dicom, from the content")
    bit_depth: int
    pixel_spacing_mm: tuple[float, float] | None = Field(
        description="(row, column) mm per pixel when the file states it (DICOM), else null"
    )
    modality: str | None = Field(
        default=None, description='DICOM Modality as stated ("" when missing); null otherwise'
    )
    view_position: str | None = Field(
        default=None, description="DICOM ViewPosition as stated; null for other formats"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what to know about the file: a lateral/oblique view (the mask is then "
        "'check'), an unusual Modality, a resolution dropped as implausible for a radiograph",
    )


class LungAreas(BaseModel):
    """Areas per side: ``right`` is the PATIENT's right lung, on the image's left (PA view)."""

    area_px: int
    right_area_px: int
    left_area_px: int
    area_cm2: float | None = Field(description="null when the pixel spacing is unknown")
    right_area_cm2: float | None
    left_area_cm2: float | None
    components: int = Field(description="connected regions of the mask")
    quality: Literal["ok", "check"]
    reason: str = Field(description="why the mask looks implausible; empty when ok")
    notes: str = Field(
        "",
        description="what limits the measurements without making the mask wrong (lungs cut by "
        "the image border: areas and CTR cover only the visible part); empty when nothing does",
    )
    estimated_dice: float | None = Field(
        None,
        description="the Dice this mask is expected to score against a careful manual one "
        "(0..1); null when the weights carry no calibrated quality model",
    )


class CtrExtents(BaseModel):
    """The cardiothoracic ratio's two horizontal lines, in pixels of the original image.

    Columns are inclusive; each line is drawn along one row (as a radiologist draws them).
    """

    heart_columns: tuple[int, int] = Field(
        description="first and last column of the heart's widest horizontal extent"
    )
    heart_row: int = Field(description="the row of the heart's line: where the heart is widest")
    thorax_columns: tuple[int, int] = Field(
        description="first and last column of the thorax: the lungs' outer edges"
    )
    thorax_row: int = Field(description="the row of the thorax's line: where the lungs are widest")


class HeartMeasurements(BaseModel):
    """The heart and the cardiothoracic ratio (CTR); null fields where unknown.

    Every value is null when the model has no heart channel (``model.has_heart`` false); ``ctr``,
    ``cardiomegaly`` and ``extents`` are also null when the heart or either lung is missing.
    """

    heart_area_px: int | None = Field(description="heart pixels; null without a heart channel")
    heart_area_cm2: float | None = Field(
        description="null without a heart channel or when the pixel spacing is unknown"
    )
    ctr: float | None = Field(
        description="heart's widest horizontal extent over the thorax's (the lungs' outer edges)"
    )
    cardiomegaly: bool | None = Field(
        description=f"ctr > {CARDIOMEGALY_CTR}; read it with cardiomegaly_caveat"
    )
    cardiomegaly_caveat: str = Field(
        description="why the flag is a prompt, not a finding (AP and supine films)"
    )
    extents: CtrExtents | None = Field(
        description="the two CTR lines for a client to draw; null without a ctr"
    )


class ModelInfo(BaseModel):
    name: str
    architecture: str
    lungseg_version: str
    threshold: float
    input_size: tuple[int, int]
    labels: tuple[str, ...] = Field(description="the weights' output channels, in order")
    has_heart: bool = Field(description="the model segments the heart: a 'heart' channel")
    quality_threshold: float | None = Field(
        default=None,
        description="masks whose estimated Dice is below this are 'check'; null when the "
        "weights carry no calibrated quality model",
    )


class ResultLinks(BaseModel):
    """URLs of the result PNGs; they stop working after ``expires_in_s`` seconds."""

    id: str
    expires_in_s: float
    mask: str = Field(description="0/255 mask at the image's original size")
    overlay: str = Field(
        description="the X-ray with the lungs tinted by side (and the heart, with the CTR lines)"
    )
    image: str = Field(description="the X-ray as 8-bit grey PNG")
    labels: str = Field(description="the lungs filled in their side colours; clear elsewhere")
    outline: str = Field(description="the lungs' contours in their side colours; clear elsewhere")
    heart: str | None = Field(
        None,
        description="the heart tinted and outlined with the two CTR lines; clear elsewhere; "
        "null when the model has no heart channel",
    )


class SegmentResponse(BaseModel):
    file: str
    image: ImageInfo
    lungs: LungAreas
    heart: HeartMeasurements
    colours: dict[str, str] = Field(
        description="right, left (the sides), heart and thorax (the CTR lines) -> #rrggbb, as "
        "drawn in overlay, labels and heart"
    )
    postprocess: bool
    model: ModelInfo
    timing_ms: dict[str, float] = Field(
        description="queue, decode, segment, encode, store (with images=url), total"
    )
    results: ResultLinks | None = Field(None, description="with images=url (the default)")
    mask_png_base64: str | None = Field(None, description="with images=base64")
    overlay_png_base64: str | None = Field(None, description="with images=base64")


COLOURS = {
    "right": hex_colour(RIGHT_COLOR),
    "left": hex_colour(LEFT_COLOR),
    "heart": hex_colour(HEART_COLOR),
    "thorax": hex_colour(THORAX_COLOR),
}
"""The side, heart and CTR-line colours of every answer, as drawn in the PNGs."""


@dataclass
class _Service:
    """What the routes use: the model (loaded by :func:`create_app`), the pool and the store
    (created by the lifespan), the settings and the page."""

    settings: ServeSettings
    segmenter: Segmenter
    card: dict[str, Any]
    model: ModelInfo
    page: str
    pool: InferencePool
    store: ResultStore


@dataclass(frozen=True)
class ServedModel:
    """The loaded model and what the API says about it; one per app, at ``app.state.served``.

    Attributes:
        segmenter: the model, on the settings' device and backend.
        card: what ``/v1/model`` answers (:func:`model_card`).
        info: the ``model`` part of every segment answer.
    """

    segmenter: Segmenter
    card: dict[str, Any]
    info: ModelInfo


router = APIRouter()
"""Every route of the service; :func:`create_app` includes it."""


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """Build the lungseg web service, loading its model now.

    Args:
        settings: the model, its device, precision and backend, and the limits, as
            :class:`~lungseg.serve.settings.ServeSettings` describes them (``read_timeout_s``
            bounds the body here; the server bounds the headers). None: the defaults (the
            shipped model, ``auto`` device and precision).

    Raises:
        InvalidInputError: a missing or unreadable weights file.
        LungsegError: a device, precision or backend this machine cannot run (e.g. ``cuda``
            without a GPU, onnxruntime not installed, onnxruntime without an ONNX file).
    """
    settings = settings if settings is not None else ServeSettings()
    served = load_model(settings)
    app = FastAPI(
        title="lungseg",
        version=__version__,
        description="Lung segmentation of chest X-rays (research software, not a medical device).",
        lifespan=_lifespan,
        docs_url=None,  # served by the router from local files: FastAPI's default pulls a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.served = served
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_upload_bytes + MULTIPART_ALLOWANCE,
        describe_limit=describe_bytes(settings.max_upload_bytes),
        body_timeout_s=settings.read_timeout_s,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(router)
    _mount_docs_assets(app)
    return app


def load_model(settings: ServeSettings) -> ServedModel:
    """Load the settings' weights on their device and backend, and build the model card."""
    segmenter = Segmenter.from_pretrained(  # None: the shipped model (torch only, with a hint)
        settings.weights,
        device=settings.device,
        precision=settings.precision,
        backend=settings.backend_or_none,
    )
    source = settings.weights if settings.weights is not None else shipped_weights_path()
    card = model_card(source, segmenter.info)
    log.info("lungseg serve: model %s loaded from %s", card["name"], source)
    return ServedModel(segmenter, card, _model_info(card, segmenter.info))


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the pool and the results folder while the app runs; remove them after."""
    settings: ServeSettings = app.state.settings
    served: ServedModel = app.state.served
    running = _Service(
        settings=settings,
        segmenter=served.segmenter,
        card=served.card,
        model=served.info,
        page=_page(settings),
        pool=InferencePool(settings.threads, settings.max_queue),
        store=ResultStore(settings.result_ttl_s, settings.max_results, parent=settings.temp_dir),
    )
    app.state.service = running
    try:
        yield
    finally:
        running.pool.shutdown()
        running.store.close()
        log.info("lungseg serve: stopped; results folder %s removed", running.store.folder)


async def get_service(request: Request) -> _Service:
    """The running app's :class:`_Service`: the routes' dependency (async: no thread hop)."""
    return request.app.state.service


Service = Annotated[_Service, Depends(get_service)]
"""A route's parameter type that FastAPI fills with :func:`get_service`."""


def _page(settings: ServeSettings) -> str:
    """The web page, with the upload limit filled in."""
    return (
        resources.files("lungseg.serve")
        .joinpath("static/index.html")
        .read_text(encoding="utf-8")
        .replace("__MAX_UPLOAD_BYTES__", str(settings.max_upload_bytes))
        .replace("__MAX_UPLOAD_TEXT__", describe_bytes(settings.max_upload_bytes))
    )


# --- the model card -------------------------------------------------------------------------


def model_card(weights_path: Path, info: WeightsInfo) -> dict[str, Any]:
    """The card served at ``/v1/model``: the weights' header, plus a card file's other fields.

    The header states the architecture, input size, preprocessing, threshold, labels, version
    and the training record (``info.extra``); the name is the weights file's stem. A card file
    beside the weights (``NAME.json``) may add fields the header does not state (metrics, data
    sources, licence) and keys to ``training``; where it disagrees with the header, the header
    wins and the disagreement is logged, so the card can never contradict the weights served.
    """
    card = header_card(weights_path.stem, info)
    card_path = weights_path.with_suffix(".json")
    sidecar = _read_card_file(card_path)
    if not sidecar:
        return card
    training = sidecar.get("training")
    training = {**training, **card["training"]} if isinstance(training, dict) else card["training"]
    conflicts = _conflicts(sidecar, card)
    if conflicts:
        log.warning(
            "model card %s disagrees with the weights' header on %s; the header wins",
            card_path,
            ", ".join(conflicts),
        )
    return {**sidecar, **card, "training": training}


def header_card(name: str, info: WeightsInfo) -> dict[str, Any]:
    """The card's fields that come from the weights: ``name`` (the file's stem) and what the
    header states. A card file beside the weights never changes these; ``training`` (the
    header's ``extra``: the training record) only gains the keys it does not state."""
    return {
        "name": name,
        "model": info.model_config.get("name"),
        "model_config": info.model_config,
        "input_size": list(info.image_size),
        "preprocessing": info.preprocessing,
        "threshold": info.threshold,
        "labels": list(info.labels),
        "has_heart": "heart" in info.labels,
        "lungseg_version": info.lungseg_version,
        "training": dict(info.extra),
    }


def _read_card_file(card_path: Path) -> dict[str, Any]:
    """A card file's fields; empty when there is none or it is unreadable (logged)."""
    if not card_path.is_file():
        return {}
    try:
        sidecar = json.loads(card_path.read_text())
    except (OSError, ValueError) as err:
        log.warning("model card %s is unreadable (%s); using the weights' header", card_path, err)
        return {}
    if not isinstance(sidecar, dict):
        log.warning("model card %s is not a JSON object; using the weights' header", card_path)
        return {}
    return sidecar


def _conflicts(sidecar: dict[str, Any], card: dict[str, Any]) -> list[str]:
    """The header's fields (and ``training`` keys) that the card file states otherwise."""
    found = [k for k in card if k != "training" and k in sidecar and sidecar[k] != card[k]]
    training = sidecar.get("training")
    if isinstance(training, dict):
        stated = card["training"].items()
        found += [f"training.{k}" for k, v in stated if k in training and training[k] != v]
    return found


def _model_info(card: dict[str, Any], info: WeightsInfo) -> ModelInfo:
    return ModelInfo(
        name=str(card["name"]),
        architecture=str(info.model_config.get("name")),
        lungseg_version=info.lungseg_version,
        threshold=info.threshold,
        input_size=tuple(info.image_size),
        labels=tuple(info.labels),
        has_heart="heart" in info.labels,
        quality_threshold=(info.extra.get("quality_model") or {}).get("threshold"),
    )


# --- routes -----------------------------------------------------------------------------------


@router.get("/", include_in_schema=False)
async def index(service: Service) -> HTMLResponse:
    return HTMLResponse(service.page)


@router.get("/healthz", summary="Liveness and load")
async def healthz(service: Service) -> dict[str, Any]:
    return {
        "status": "ok",
        "model": service.model.name,
        "lungseg_version": __version__,
        "in_flight": service.pool.admitted,
        "capacity": service.pool.capacity,
        "results_kept": len(service.store),
    }


@router.get(
    "/v1/model",
    summary="The model card of the served weights, with their labels and has_heart",
)
async def model(service: Service) -> dict[str, Any]:
    return service.card


@router.post(
    "/v1/segment",
    response_model=SegmentResponse,
    summary="Segment the lungs in one chest X-ray",
    responses={
        200: {"content": {"image/png": {}}, "description": "JSON, or the mask with format=png"},
        413: {"description": "upload or image over the limits"},
        415: {"description": "not an image (judged by content), or undecodable DICOM"},
        408: {"description": "the upload did not arrive within the read timeout"},
        422: {"description": "no file, more than one, or an image that cannot be decoded"},
        503: {"description": "busy: retry after the Retry-After header's seconds"},
    },
)
async def segment(
    request: Request,
    service: Service,
    file: Annotated[UploadFile, File(description="PNG, JPEG, TIFF, BMP (8/16-bit) or DICOM")],
    response_format: Annotated[
        Literal["json", "png"],
        Query(alias="format", description="png: answer with the mask PNG alone"),
    ] = "json",
    images: Annotated[
        Literal["url", "base64"],
        Query(description="result PNGs as expiring URLs, or inline as base64"),
    ] = "url",
    postprocess: Annotated[
        bool, Query(description="keep the two largest regions, fill their holes")
    ] = True,
) -> Any:
    await _check_upload(request, file, service.settings)
    options = _SegmentOptions(file.filename or "upload", response_format, images, postprocess)
    done = await _run_segmentation(service, file, options)
    if options.response_format == "png":
        return _mask_png(options.name, done.result)
    return _segment_answer(service, options, done)


@router.get(
    "/v1/results/{result_id}/{view}.png",
    summary="A result PNG (mask, overlay, image, labels, outline, heart) until it expires",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown or expired"}},
)
async def result_png(service: Service, result_id: str, view: str) -> Response:
    store = service.store
    data = store.get(result_id, f"{view}.png") if view in PNG_VIEWS else None
    if data is None:
        raise HTTPException(404, f"no result {result_id}/{view}.png: unknown or expired")
    max_age = int(store.expires_in(result_id))
    return Response(
        data, media_type="image/png", headers={"Cache-Control": f"private, max-age={max_age}"}
    )


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI 5 from the fastapi-offline package's files (:func:`_mount_docs_assets`)."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=root + (request.app.openapi_url or "/openapi.json"),
        title="lungseg API",
        swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
    )


DOCS_ASSETS_URL = "/docs-assets"
"""Where Swagger UI's own files are served, for ``/docs``."""


def docs_assets_folder() -> Path:
    """The folder of Swagger UI 5's files (``swagger-ui-bundle.js``, ``swagger-ui.css``), as the
    fastapi-offline package ships them.

    FastAPI emits an OpenAPI 3.1 schema, which Swagger UI 4 (the swagger-ui-bundle package)
    cannot read ("Unable to render this definition"); fastapi-offline bundles Swagger UI 5.

    Raises:
        RuntimeError: fastapi-offline is not installed, or lacks the files.
    """
    try:
        folder = Path(str(resources.files("fastapi_offline").joinpath("static")))
    except ModuleNotFoundError:
        raise RuntimeError(
            "lungseg serve needs the fastapi-offline package for /docs: "
            "pip install 'lungseg[serve]'"
        ) from None
    missing = [f for f in ("swagger-ui-bundle.js", "swagger-ui.css") if not (folder / f).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline has no {', '.join(missing)} in {folder}")
    return folder


def _mount_docs_assets(app: FastAPI) -> None:
    """Swagger UI's files at :data:`DOCS_ASSETS_URL`, so ``/docs`` works offline (a hospital
    network often has no internet), as FastAPI's guide to self-hosting them shows."""
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=docs_assets_folder()), name="docs-assets")


# --- the segment route's steps ------------------------------------------------------------------


@dataclass(frozen=True)
class _SegmentOptions:
    """What a ``POST /v1/segment`` asked for."""

    name: str
    response_format: Literal["json", "png"]
    images: Literal["url", "base64"]
    postprocess: bool

    @property
    def views(self) -> tuple[str, ...]:
        """The PNGs to encode: the mask alone for format=png, two inline, or every view."""
        if self.response_format == "png":
            return ("mask",)
        return ("mask", "overlay") if self.images == "base64" else PNG_VIEWS

    @property
    def keep(self) -> bool:
        """Whether the PNGs go in the result store (answered as URLs)."""
        return self.response_format == "json" and self.images == "url"


@dataclass
class _Segmented:
    """A finished segmentation: the result, its stored id (None when not kept), the total ms."""

    result: SegmentedUpload
    result_id: str | None
    total_ms: float


async def _check_upload(request: Request, file: UploadFile, settings: ServeSettings) -> None:
    """Refuse more than one file (422) and a file declared over the upload limit (413)."""
    form = await request.form()  # already parsed for `file`: this returns it again
    files = [value for _, value in form.multi_items() if not isinstance(value, str)]
    if len(files) > 1:
        raise HTTPException(422, "more than one file uploaded: send one X-ray per request")
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise HTTPException(
            413, f"upload too large: the limit is {describe_bytes(settings.max_upload_bytes)}"
        )


async def _run_segmentation(
    service: _Service, file: UploadFile, options: _SegmentOptions
) -> _Segmented:
    """Take a place in the pool (503 when full), then read and segment the upload on it."""
    started = time.perf_counter()
    try:
        with service.pool.admit():
            job = _segment_job(service, options)
            result, result_id = await service.pool.run(job, await file.read())
    except PoolBusyError as busy:
        raise HTTPException(
            503, str(busy), headers={"Retry-After": str(busy.retry_after_s)}
        ) from None
    except InvalidInputError as err:
        raise HTTPException(_input_error_status(err), str(err)) from None
    return _Segmented(result, result_id, (time.perf_counter() - started) * 1000)


def _segment_job(
    service: _Service, options: _SegmentOptions
) -> Callable[[bytes], tuple[SegmentedUpload, str | None]]:
    """The work an inference thread does: segment, encode and (with images=url) store."""

    def job(data: bytes) -> tuple[SegmentedUpload, str | None]:
        result = segment_upload(
            service.segmenter,
            data,
            options.name,
            max_pixels=service.settings.max_pixels,
            postprocess=options.postprocess,
            views=options.views,
        )
        if not options.keep:
            return result, None
        stored = time.perf_counter()
        result_id = service.store.put({f"{v}.png": png for v, png in result.pngs.items()})
        result.timing_ms["store"] = round((time.perf_counter() - stored) * 1000, 1)
        return result, result_id

    return job


def _mask_png(name: str, result: SegmentedUpload) -> Response:
    """The answer to format=png: the mask alone, named after the upload."""
    filename = f"{_safe_stem(name)}_mask.png"
    return Response(
        result.pngs["mask"],
        media_type="image/png",
        headers={"Content-Disposition": f'inline; filename="{filename}"'},
    )


def _segment_answer(
    service: _Service, options: _SegmentOptions, done: _Segmented
) -> SegmentResponse:
    """The JSON answer: the image, the areas, the heart, and the PNGs as URLs or inline."""
    result = done.result
    answer = SegmentResponse(
        file=options.name,
        image=_image_info(result.meta),
        lungs=LungAreas(**result.measurements.as_row()),
        heart=_heart_measurements(result),
        colours=dict(COLOURS),
        postprocess=options.postprocess,
        model=service.model,
        timing_ms=_timing(result, done.total_ms),
    )
    if done.result_id is not None:
        answer.results = _result_links(service.store, done.result_id, result)
    else:
        answer.mask_png_base64 = base64.b64encode(result.pngs["mask"]).decode()
        answer.overlay_png_base64 = base64.b64encode(result.pngs["overlay"]).decode()
    return answer


def _image_info(meta: ImageMeta) -> ImageInfo:
    return ImageInfo(
        width=meta.width,
        height=meta.height,
        format=meta.source_format,
        bit_depth=meta.bit_depth,
        pixel_spacing_mm=meta.pixel_spacing_mm,
        modality=meta.modality,
        view_position=meta.view_position,
        warnings=list(meta.warnings),
    )


def _timing(result: SegmentedUpload, total_ms: float) -> dict[str, float]:
    """The thread's laps, the time queued before them (the rest of the total), the total."""
    return {
        "queue": round(max(0.0, total_ms - sum(result.timing_ms.values())), 1),
        **result.timing_ms,
        "total": round(total_ms, 1),
    }


def _result_links(store: ResultStore, result_id: str, result: SegmentedUpload) -> ResultLinks:
    base = f"/v1/results/{result_id}"
    return ResultLinks(
        id=result_id,
        expires_in_s=round(store.expires_in(result_id), 1),
        **{view: f"{base}/{view}.png" for view in PNG_VIEWS if view in result.pngs},
    )


def _heart_measurements(result: SegmentedUpload) -> HeartMeasurements:
    """The heart part of the answer: areas, CTR, the flag with its caveat, the lines."""
    found = result.measurements
    extents: CardiothoracicExtents | None = result.extents
    return HeartMeasurements(
        heart_area_px=found.heart_area_px,
        heart_area_cm2=found.heart_area_cm2,
        ctr=found.ctr,
        cardiomegaly=found.cardiomegaly,
        cardiomegaly_caveat=CARDIOMEGALY_CAVEAT,
        extents=None
        if extents is None
        else CtrExtents(
            heart_columns=extents.heart_columns,
            heart_row=extents.heart_row,
            thorax_columns=extents.thorax_columns,
            thorax_row=extents.thorax_row,
        ),
    )


def _input_error_status(error: InvalidInputError) -> int:
    """The HTTP status for an upload the reader refused, by the error's type."""
    if isinstance(error, UnsupportedFormatError):
        return 415  # not image content (judged by content, not name), or an undecodable DICOM
    if isinstance(error, ImageTooLargeError):
        return 413  # too many pixels; refused before decoding
    return 422  # an image, but empty, truncated, corrupt or too small


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 as ``{"detail": message}``, like every other error, rather than a list of dicts."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query")]
        if location == ["file"] and error.get("type") == "missing":
            problems.append("no file uploaded: send the X-ray as multipart/form-data field 'file'")
        elif location == ["file"]:  # a text part: no filename in its Content-Disposition
            problems.append("field 'file' is not a file: send the X-ray as a file part")
        else:
            problems.append(f"{'.'.join(location) or 'request'}: {error.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """500 for a bug or a fault: logged here with its traceback, never sent to the client."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": "internal server error; the server log has the details"}, status_code=500
    )


def _safe_stem(name: str) -> str:
    """An upload's name reduced to a header-safe file stem."""
    stem = Path(name.replace("\\", "/")).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:100] or "upload"
