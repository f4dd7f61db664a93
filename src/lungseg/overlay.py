"""The picture a clinician looks at: the X-ray in grey with each lung tinted in its own colour.

The two colours come from the Okabe-Ito palette, chosen to stay distinct under the common forms
of colour blindness: orange for the patient's right lung, sky blue for the left. Both are light,
so they show on the dark lung fields, and neither is grey, so they stand out from the X-ray.
Each lung also gets a contour in full colour, so its border stays visible where the tint is
faint (bright ribs, a dense opacity). With a heart mask the heart is tinted and outlined in
Okabe-Ito reddish purple, and the cardiothoracic ratio's two horizontal extents are drawn as a
radiologist draws them: the heart's widest extent in the heart's colour, the thorax's (the lungs'
outer edges) in yellow, each with end ticks.

A table lookup and one OpenCV erosion per lung, no matplotlib: cheap enough for ``lungseg
predict`` and the web service to render one per image.
"""

from __future__ import annotations

import cv2
import numpy as np

from lungseg.measure import LEFT_LUNG, RIGHT_LUNG, cardiothoracic_extents

__all__ = ["HEART_COLOR", "LEFT_COLOR", "RIGHT_COLOR", "THORAX_COLOR", "render_overlay"]

RIGHT_COLOR: tuple[int, int, int] = (230, 159, 0)
"""RGB of the patient's right lung (image left): Okabe-Ito orange."""
LEFT_COLOR: tuple[int, int, int] = (86, 180, 233)
"""RGB of the patient's left lung (image right): Okabe-Ito sky blue."""

HEART_COLOR: tuple[int, int, int] = (204, 121, 167)
"""RGB of the heart and its extent line: Okabe-Ito reddish purple."""
THORAX_COLOR: tuple[int, int, int] = (240, 228, 66)
"""RGB of the thorax's extent line: Okabe-Ito yellow."""

_CONTOUR_PER_PIXELS = 512  # one contour pixel per this many pixels of the image's longer side


def _contour_width(shape: tuple[int, ...]) -> int:
    """Contour thickness in pixels for an image of ``shape``: 1 at 512 px, 6 at 3000 px.

    It grows with the image so the contour keeps about the same width on screen, where a full-size
    detector image is shown scaled down.
    """
    return max(1, round(max(shape[:2]) / _CONTOUR_PER_PIXELS))


def render_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    opacity: float = 0.45,
    *,
    heart: np.ndarray | None = None,
) -> np.ndarray:
    """The X-ray in grey with each lung tinted in its side's colour and outlined.

    Args:
        image: the grey X-ray (H, W), float in [0, 1] (values outside are clipped, NaN is black).
        labels: side labels (H, W) from :func:`lungseg.measure.lung_labels`: 0 background,
            1 the patient's right lung, 2 the left; other values are left untinted.
        opacity: weight of the colour in the tint, from 0 (contour only) to 1 (solid colour).
        heart: bool (H, W) heart mask: tinted and outlined in :data:`HEART_COLOR` (over the
            lungs where they overlap), with the two CTR extent lines when both lungs exist.

    Returns:
        uint8 RGB (H, W, 3). Outside the lungs it is the X-ray, untouched; inside, the grey
        blended with :data:`RIGHT_COLOR` or :data:`LEFT_COLOR`; on each lung's inner border
        (1 pixel per 512 of the longer side), the colour itself.

    Raises:
        ValueError: ``image`` is not 2-D, ``labels`` has another shape, or ``opacity`` is not in
            [0, 1].
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim != 2:
        raise ValueError(f"the X-ray must be a grey image (H, W), got shape {image.shape}")
    if labels.shape != image.shape:
        raise ValueError(f"labels have shape {labels.shape}, the image {image.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    if heart is not None and np.shape(heart) != image.shape:
        raise ValueError(f"the heart mask has shape {np.shape(heart)}, the image {image.shape}")
    # fmax turns NaN into 0 (black); convertScaleAbs scales, rounds and saturates at 255.
    grey = cv2.convertScaleAbs(np.fmax(image, 0.0), alpha=255.0)
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)  # (H, W, 3)
    kernel = np.ones((2 * _contour_width(image.shape) + 1,) * 2, dtype=np.uint8)
    levels = np.arange(256, dtype=np.float64)[:, None, None]  # (256, 1, 1): every grey level
    regions = [(labels == RIGHT_LUNG, RIGHT_COLOR), (labels == LEFT_LUNG, LEFT_COLOR)]
    if heart is not None:
        regions.append((np.asarray(heart, dtype=bool), HEART_COLOR))
    for region, colour in regions:
        lung = region.view(np.uint8)
        if not lung.any():
            continue
        # Only the region's bounding box is touched: outside it the region is background, as
        # the erosion below takes everything beyond the box's edge to be.
        left, top, width, height = cv2.boundingRect(lung)
        box = (slice(top, top + height), slice(left, left + width))
        lung, view = lung[box], rgb[box]
        # A tinted pixel depends only on its grey level: one 256-entry table per lung, applied
        # by OpenCV to the box and copied where the lung is, is several times faster than
        # blending the lung pixels in numpy.
        tint = np.round((1.0 - opacity) * levels + opacity * np.asarray(colour, dtype=np.float64))
        cv2.copyTo(cv2.LUT(view, tint.astype(np.uint8)), lung, view)
        # Outside the image counts as background, so a lung cut by the image edge is outlined
        # along the edge too.
        inner = cv2.erode(lung, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        view[cv2.subtract(lung, inner).view(bool)] = colour
    if heart is not None:
        _draw_ctr_lines(rgb, np.asarray(heart, dtype=bool), labels)
    return rgb


def _draw_ctr_lines(rgb: np.ndarray, heart: np.ndarray, labels: np.ndarray) -> None:
    """Draw the heart's and the thorax's horizontal extents (with end ticks) onto ``rgb``."""
    extents = cardiothoracic_extents(heart, labels > 0, sides=labels)
    if extents is None:
        return
    width = _contour_width(rgb.shape)
    tick = 6 * width
    for (first, last), row, colour in (
        (extents.thorax_columns, extents.thorax_row, THORAX_COLOR),
        (extents.heart_columns, extents.heart_row, HEART_COLOR),
    ):
        cv2.line(rgb, (first, row), (last, row), colour, width)
        for column in (first, last):
            cv2.line(rgb, (column, row - tick), (column, row + tick), colour, width)
