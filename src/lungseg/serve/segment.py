"""One upload in, one segmentation out: the work an inference thread does for a request.

The same steps as ``lungseg predict`` (decode by content, segment at original resolution, then
:meth:`Segmenter.finish`: post-process, sides, areas and quality), on bytes instead of files,
and ending in PNG bytes instead of files. Only the PNGs a request asked for are encoded:
``?format=png`` needs the mask alone.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from lungseg.data.io import ImageMeta, read_image_bytes
from lungseg.inference import Segmenter
from lungseg.measure import (
    LEFT_LUNG,
    RIGHT_LUNG,
    CardiothoracicExtents,
    LungMeasurements,
    cardiothoracic_extents,
)
from lungseg.overlay import HEART_COLOR, LEFT_COLOR, RIGHT_COLOR, render_overlay
from lungseg.png import encode_png

PNG_VIEWS = ("mask", "overlay", "image", "labels", "outline", "heart")
"""The PNGs a result can carry: ``mask`` (0/255), ``overlay`` (the X-ray with the lungs, and the
heart when the model segments it, tinted and outlined, as ``lungseg predict`` writes it),
``image`` (the X-ray as 8-bit grey, for browsers that cannot show DICOM or 16-bit TIFF), and
transparent layers that rebuild the overlay when stacked on ``image``: ``labels`` (each lung
filled in its side's colour, for any tint opacity), ``outline`` (each lung's contour in its
colour) and ``heart`` (the heart tinted and outlined with the two CTR extent lines; only from a
model with a heart channel, so a result of a lungs-only model has no ``heart`` view)."""

HEART_TINT_OPACITY = 0.45
"""The heart's tint in the ``heart`` layer: the overlay's default opacity, baked into the
layer's alpha so that one layer carries the tint, the contour and the lines."""


@dataclass
class SegmentedUpload:
    """What one upload became.

    Attributes:
        meta: the decoded image's facts (size, format, bit depth, pixel spacing).
        measurements: lung areas per side, components and the quality flag, and (from a model
            with a heart channel) the heart's area and the cardiothoracic ratio.
        pngs: the requested views (see :data:`PNG_VIEWS`) as PNG bytes; never ``heart`` when
            the model has no heart channel.
        timing_ms: milliseconds spent decoding, segmenting (model, post-processing, measuring)
            and encoding the PNGs.
        has_heart: the model segments the heart (its weights have a heart channel).
        extents: the CTR's heart and thorax extents (columns and rows at the image's size),
            for a client to draw the lines; None without a heart or without both lungs.
    """

    meta: ImageMeta
    measurements: LungMeasurements
    pngs: dict[str, bytes] = field(default_factory=dict)
    timing_ms: dict[str, float] = field(default_factory=dict)
    has_heart: bool = False
    extents: CardiothoracicExtents | None = None


def segment_upload(
    segmenter: Segmenter,
    data: bytes,
    name: str,
    *,
    max_pixels: int,
    postprocess: bool = True,
    views: Collection[str] = PNG_VIEWS,
) -> SegmentedUpload:
    """Decode an uploaded X-ray, segment it and encode the requested views as PNG.

    Args:
        segmenter: the loaded model.
        data: the uploaded file's bytes (any format lungseg reads; sniffed from the content).
        name: the upload's file name, used in error messages only.
        max_pixels: refuse images with more pixels than this, before decoding them.
        postprocess: keep the two largest components and fill their holes, as predict does.
        views: which of :data:`PNG_VIEWS` to encode; ``heart`` is skipped (not an error) when
            the model has no heart channel.

    Raises:
        InvalidInputError: the bytes are not a readable image, or it is too small or too large.
        ValueError: an unknown view was asked for.
    """
    unknown = set(views) - set(PNG_VIEWS)
    if unknown:
        raise ValueError(f"unknown views {sorted(unknown)}; choose from {PNG_VIEWS}")
    clock = _Stopwatch()
    image, meta = read_image_bytes(data, name, max_pixels=max_pixels)
    clock.lap("decode")
    # With the meta read from the upload, so the areas get cm2 when the file states its spacing.
    result = segmenter(image, meta=meta, postprocess=postprocess)
    mask, labels, heart = result.mask, result.labels, result.heart
    extents = cardiothoracic_extents(heart, mask) if heart is not None else None
    clock.lap("segment")
    render = {
        "mask": lambda: mask.astype(np.uint8) * 255,
        "overlay": lambda: render_overlay(image, labels, heart=heart),
        "image": lambda: np.round(image * 255).astype(np.uint8),
        "labels": lambda: label_layer(labels),
        "outline": lambda: outline_layer(labels),
        "heart": lambda: heart_layer(labels, heart),
    }
    available = [view for view in PNG_VIEWS if view != "heart" or heart is not None]
    pngs = {view: encode_png(render[view]()) for view in available if view in views}
    clock.lap("encode")
    return SegmentedUpload(
        meta,
        result.measurements,
        pngs,
        clock.laps,
        has_heart=heart is not None,
        extents=extents,
    )


def label_layer(labels: np.ndarray) -> np.ndarray:
    """Side labels (H, W) -> RGBA uint8 (H, W, 4): each lung in its colour, opaque; else clear."""
    rgba = np.zeros((*labels.shape, 4), dtype=np.uint8)
    for label, colour in ((RIGHT_LUNG, RIGHT_COLOR), (LEFT_LUNG, LEFT_COLOR)):
        rgba[labels == label] = (*colour, 255)
    return rgba


def outline_layer(labels: np.ndarray) -> np.ndarray:
    """Side labels (H, W) -> RGBA uint8 (H, W, 4): the overlay's lung contours alone.

    Drawn by :func:`render_overlay` itself (at opacity 0 it draws only the contours), on black,
    so the contours match ``overlay.png`` pixel for pixel; black becomes transparent.
    """
    drawn = render_overlay(np.zeros(labels.shape, dtype=np.float32), labels, opacity=0.0)
    alpha = np.where(drawn.any(axis=2), 255, 0).astype(np.uint8)
    return np.dstack([drawn, alpha])


def heart_layer(
    labels: np.ndarray, heart: np.ndarray, opacity: float = HEART_TINT_OPACITY
) -> np.ndarray:
    """Side labels and heart mask (H, W) -> RGBA uint8 (H, W, 4): the overlay's heart alone.

    The heart in :data:`~lungseg.overlay.HEART_COLOR` at alpha ``opacity`` (its tint), its
    contour and the two CTR extent lines opaque, clear elsewhere. The contour and the lines are
    what :func:`render_overlay` draws over the lungs' contours (on black, at opacity 0: the
    pixels that the heart changes), so stacked on ``image``, ``labels`` (at the same opacity)
    and ``outline`` they match ``overlay.png`` pixel for pixel, lines over lung contours
    included, and the tint to within rounding (alpha is whole 255ths).
    """
    heart = np.asarray(heart, dtype=bool)
    black = np.zeros(labels.shape, dtype=np.float32)
    lungs_only = render_overlay(black, labels, opacity=0.0)
    with_heart = render_overlay(black, labels, opacity=0.0, heart=heart)
    drawn = (with_heart != lungs_only).any(axis=2)
    rgba = np.zeros((*labels.shape, 4), dtype=np.uint8)
    rgba[heart] = (*HEART_COLOR, round(opacity * 255))
    rgba[drawn, :3] = with_heart[drawn]
    rgba[drawn, 3] = 255
    return rgba


def hex_colour(colour: tuple[int, int, int]) -> str:
    """(r, g, b) -> ``"#rrggbb"``, for the page's legend."""
    return "#" + "".join(f"{int(c):02x}" for c in colour)


class _Stopwatch:
    """Milliseconds between consecutive laps, by name."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round((now - self._last) * 1000, 1)
        self._last = now
