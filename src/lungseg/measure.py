"""From lung (and heart) masks to the numbers a report needs: areas per side, the
cardiothoracic ratio and a plausibility flag.

Sides follow anatomy, not the image: in a PA (or AP) chest X-ray the patient faces the viewer,
so the patient's RIGHT lung is on the image's LEFT. :func:`lung_labels` therefore gives label 1
(right lung) to lung pixels left of the patient's midline and label 2 (left lung) to those right
of it. The midline is the middle of the mediastinum, the lung-free gap between the lungs in the
central half of the image (see :func:`midline_column` for a missing or bridged lung). Cutting
there rather than at the image's centre column matters: in 79 of the 704 manual masks of the
shared data a lung reaches across the image's centre column (patients are not centred to the
pixel), while no lung of any manual mask is cut by the midline found this way
(``scripts/lung_mask_stats.py``). Pixels are assigned by column, so a component that crosses
the midline (two lungs bridged by a prediction error) is split there: each lung keeps about its
own area, where assigning the whole component by majority would report one huge lung and a
missing one.

:func:`measure_lungs` adds the areas (cm2 when the pixel spacing is known) and flags a mask as
``"check"`` when it is implausible for a frontal chest X-ray. The normal ranges were MEASURED on
the 704 manual masks (see the constants) and set a margin beyond the extremes, so a flag means
"unlike any manual mask", not "unusual". Lungs cut by the image border (a field of view that
does not hold the whole chest) are not implausible but incomplete: the mask can match what is
visible, so the shape rules, which assume whole lungs, are not applied, and ``notes`` says that
the areas and the CTR cover only the visible part; whether such a mask can be trusted is then
the quality estimate's call (:mod:`lungseg.quality`).

The cardiothoracic ratio (:func:`cardiothoracic_extents`) is the heart's widest horizontal
extent over the thorax's, the thorax being the two lungs' outer horizontal extent (from the
right lung's outer edge to the left lung's), both in whole pixel columns. On the 221 Wingspan
images with an expert CTR (``wingspan/manifest.json``) this definition applied to the manual
heart and lung masks reproduces the expert's value with a mean absolute difference of 0.0012
(largest 0.0050; the expert measured on the full-size films, these masks are 512x512 copies),
``tests/test_measure.py`` checks it. A CTR over 0.5 on a PA film is the classic sign of
cardiomegaly; an AP or supine film magnifies the heart's shadow, so ``cardiomegaly`` there is a
prompt to look, not a finding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from lungseg.postprocess import component_sizes

__all__ = [
    "LEFT_LUNG",
    "RIGHT_LUNG",
    "CARDIOMEGALY_CTR",
    "CardiothoracicExtents",
    "LungMeasurements",
    "border_pixels",
    "cardiothoracic_extents",
    "lung_labels",
    "measure_lungs",
]

RIGHT_LUNG = 1
"""Label of the patient's right lung (on the image's left)."""
LEFT_LUNG = 2
"""Label of the patient's left lung (on the image's right)."""

# Normal ranges, measured on all 704 manual masks of ../shared/data (Montgomery 138 + Shenzhen
# 566) by `scripts/lung_mask_stats.py --data ../shared/data`, then widened beyond the extremes.
# With these values 9 manual masks are "check", each for a visible reason: 6 lungs cut by the
# image edge, a left lung drawn in two pieces (shenzhen/CHNCXR_0361_1) and two collapsed left
# lungs (shenzhen/CHNCXR_0603_1, _0606_1).
#
# Lung area fraction of the image: min 0.0835, p0.5 0.1172, p99.5 0.4003, max 0.4325.
AREA_FRACTION_RANGE = (0.06, 0.55)
# Right/left area ratio: min 0.458, p0.5 0.686, p99.5 2.635, max 9.80; above 3 only the two
# collapsed left lungs (3.78 and 9.80). The range is about symmetric in log around the usual
# 1.1-1.2 (the heart takes room from the left lung).
RIGHT_LEFT_RATIO_RANGE = (0.4, 3.0)
# A component is lung-sized from this fraction of the image on. The smaller lung (second-largest
# component) is never below 0.0182 of the image; the specks the upstream 128 cut left in 69
# masks are at most 0.00027; the one larger extra piece is CHNCXR_0361_1's (0.0127), a lung
# drawn in two pieces, rightly flagged.
MIN_LUNG_FRACTION = 0.005
# Border pixels a mask may cover before its lungs count as cut by the border. 6 manual masks
# reach it, with 8 to 62 border pixels: lungs cut by the image edge, whose area is then too
# small. Any contact is noted (``notes``), and the whole-lung shape rules are skipped.
MAX_BORDER_PIXELS = 0
# Total lung area (both lungs, cm2) a frontal chest film can show once the pixel spacing is known.
# Measured: the 138 Montgomery manual masks at their detector's 0.0875 mm pixels (4020x4892
# films, so 0.687 x 0.836 mm at 512x512) span 149-599 cm2 (median 387), adults and teenagers.
# Literature: total lung capacity grows by about 0.007 L per cm2 of planimetric PA + lateral
# lung area (del Cid Garcia et al., Rev Invest Clin 1991; 43:61-7, TLC 1.9-7.2 L), so adults'
# 2-9 L put the PA area (a bit over half the sum) at roughly 110-750 cm2; an AP or supine film
# magnifies by up to ~1.2 (x1.44 in area), hence the 1000 cm2 ceiling. A newborn's lungs are about
# 4 cm wide and 5-6 cm tall each, ~30 cm2 together (geometric estimate, no measured data here).
# Kept wide on purpose, it catches a wrong spacing (a downsampled copy that kept the detector's
# PixelSpacing, a resolution that is not physical), not an unusual patient.
LUNG_AREA_CM2_RANGE = (25.0, 1000.0)
CARDIOMEGALY_CTR = 0.5
"""A CTR above this on a PA film suggests an enlarged heart."""


@dataclass(frozen=True)
class LungMeasurements:
    """One mask's lung areas and plausibility, ready to become a CSV/JSON row.

    Attributes:
        area_px: lung pixels in total.
        right_area_px: pixels of the patient's right lung (image left).
        left_area_px: pixels of the patient's left lung (image right).
        area_cm2: total lung area in cm2, None when the pixel spacing is unknown.
        right_area_cm2: right lung area in cm2, or None.
        left_area_cm2: left lung area in cm2, or None.
        components: connected components (8-connectivity) of the mask as given, specks included.
        quality: ``"ok"``, or ``"check"`` when the mask is implausible.
        reason: ``""`` when ok, else the reasons in words, joined by ``"; "``.
        notes: what limits the measurements without making the mask untrustworthy (lungs cut
            by the image border), ``""`` when nothing does.
        heart_area_px: heart pixels; None without a heart mask (weights without a heart
            channel).
        heart_area_cm2: the heart's area in cm2, or None.
        ctr: cardiothoracic ratio (:func:`cardiothoracic_extents`); None when the heart or a
            lung is missing.
        cardiomegaly: ``ctr > 0.5`` (AP and supine films enlarge the heart's shadow); None
            without a CTR.
        estimated_dice: the Dice this mask is expected to score against a careful manual one
            (:mod:`lungseg.quality`); None when the weights carry no calibrated quality model.
    """

    area_px: int
    right_area_px: int
    left_area_px: int
    area_cm2: float | None
    right_area_cm2: float | None
    left_area_cm2: float | None
    components: int
    quality: str
    reason: str
    notes: str = ""
    heart_area_px: int | None = None
    heart_area_cm2: float | None = None
    ctr: float | None = None
    cardiomegaly: bool | None = None
    estimated_dice: float | None = None

    def as_row(self) -> dict[str, object]:
        """The fields as a flat dict, in declaration order (the CSV/JSON column order)."""
        return dataclasses.asdict(self)


def lung_labels(mask: np.ndarray) -> np.ndarray:
    """Label each lung pixel with its side: 1 = patient's right lung, 2 = patient's left lung.

    The mask is cut at the patient's midline (see the module docstring): columns left of it are
    the right lung, columns right of it the left lung. A component crossing the midline is split
    at the midline, by column.

    Args:
        mask: lung mask (H, W); any non-zero value is lung.

    Returns:
        uint8 (H, W): 0 background, 1 (:data:`RIGHT_LUNG`), 2 (:data:`LEFT_LUNG`).

    Raises:
        ValueError: ``mask`` is not 2-D.
    """
    mask = _as_mask(mask)
    image_left = np.arange(mask.shape[1]) < midline_column(mask)  # (W,)
    side = np.where(image_left, RIGHT_LUNG, LEFT_LUNG).astype(np.uint8)  # (W,)
    return mask * side[None, :]  # bool x uint8 -> uint8, one pass


@dataclass(frozen=True)
class CardiothoracicExtents:
    """The two horizontal extents of the CTR, as a radiologist draws them on the film.

    Columns are inclusive pixel columns; each line is drawn on one row: the heart's at the row
    where the heart is widest, the thorax's where the lungs are widest.
    """

    heart_columns: tuple[int, int]
    heart_row: int
    thorax_columns: tuple[int, int]
    thorax_row: int

    @property
    def ctr(self) -> float:
        heart = self.heart_columns[1] - self.heart_columns[0] + 1
        thorax = self.thorax_columns[1] - self.thorax_columns[0] + 1
        return heart / thorax


def cardiothoracic_extents(
    heart: np.ndarray, lungs: np.ndarray, *, sides: np.ndarray | None = None
) -> CardiothoracicExtents | None:
    """The heart's and the thorax's horizontal extents; None when the heart or a lung is missing.

    Args:
        heart: heart mask (H, W).
        lungs: lung mask (H, W), both lungs (sides are found with :func:`lung_labels`).
        sides: ``lung_labels(lungs)`` when the caller has it already (saves finding the
            midline again).
    """
    heart, lungs = _as_mask(heart), _as_mask(lungs)
    labels = lung_labels(lungs) if sides is None else sides
    if not heart.any() or not (labels == RIGHT_LUNG).any() or not (labels == LEFT_LUNG).any():
        return None
    heart_cols = np.flatnonzero(heart.any(0))
    lung_cols = np.flatnonzero(lungs.any(0))
    return CardiothoracicExtents(
        heart_columns=(int(heart_cols[0]), int(heart_cols[-1])),
        heart_row=_widest_row(heart),
        thorax_columns=(int(lung_cols[0]), int(lung_cols[-1])),
        thorax_row=_widest_row(lungs),
    )


def row_spans(mask: np.ndarray) -> np.ndarray:
    """Per row, the columns from the leftmost to the rightmost mask pixel (0 for an empty row)."""
    mask = _as_mask(mask)
    first = mask.argmax(1)
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(1)
    return np.where(mask.any(1), last - first + 1, 0)


def _widest_row(mask: np.ndarray) -> int:
    """The row whose leftmost-to-rightmost span of mask pixels is the longest."""
    return int(np.argmax(row_spans(mask)))


def measure_lungs(
    mask: np.ndarray,
    pixel_spacing_mm: tuple[float, float] | None = None,
    *,
    heart: np.ndarray | None = None,
    sides: np.ndarray | None = None,
) -> LungMeasurements:
    """Areas per side, component count and a plausibility flag for one lung mask.

    Args:
        mask: lung mask (H, W) at the image's original resolution; any non-zero value is lung.
        pixel_spacing_mm: (row_mm, col_mm) of a pixel, e.g. from DICOM ``PixelSpacing``; the
            cm2 fields stay None without it.
        heart: the heart mask (H, W), when the model segments it: adds its area and the CTR.
        sides: ``lung_labels(mask)`` when the caller has it already.

    Returns:
        The measurements; ``quality`` is ``"check"`` when the mask has no lung, or (with a pixel
        spacing) a total area in cm2 outside :data:`LUNG_AREA_CM2_RANGE`, which says the
        spacing is wrong, or, for lungs the image border does not cut (else ``notes`` says
        so), not exactly two lung-sized components, a total area outside
        :data:`AREA_FRACTION_RANGE` of the image or a right/left ratio outside
        :data:`RIGHT_LEFT_RATIO_RANGE` (or a side with no lung).

    Raises:
        ValueError: ``mask`` is not 2-D, or the spacing is not two positive finite numbers.
    """
    mask = _as_mask(mask)
    cm2_per_pixel = _cm2_per_pixel(pixel_spacing_mm)
    labels = lung_labels(mask) if sides is None else sides
    right = int(np.count_nonzero(labels == RIGHT_LUNG))
    left = int(np.count_nonzero(labels == LEFT_LUNG))
    sizes = component_sizes(mask)
    count = len(sizes)

    def cm2(pixels: int | None) -> float | None:
        return None if cm2_per_pixel is None or pixels is None else pixels * cm2_per_pixel

    border = border_pixels(mask)
    cut = border > MAX_BORDER_PIXELS
    reasons = _implausibilities(mask, right, left, sizes, cm2(right + left), whole=not cut)
    notes = (
        f"lungs cut by the image border ({border} border pixels): areas and CTR cover only the "
        "visible part"
        if cut
        else ""
    )

    heart_px = ctr = cardiomegaly = None
    if heart is not None:
        heart_mask = _as_mask(heart)
        if heart_mask.shape != mask.shape:
            raise ValueError(f"heart mask {heart_mask.shape} and lung mask {mask.shape} differ")
        heart_px = int(np.count_nonzero(heart_mask))
        extents = cardiothoracic_extents(heart_mask, mask, sides=labels)
        if extents is not None:
            ctr = round(extents.ctr, 4)
            cardiomegaly = ctr > CARDIOMEGALY_CTR

    return LungMeasurements(
        area_px=right + left,
        right_area_px=right,
        left_area_px=left,
        area_cm2=cm2(right + left),
        right_area_cm2=cm2(right),
        left_area_cm2=cm2(left),
        components=int(count),
        quality="check" if reasons else "ok",
        reason="; ".join(reasons),
        notes=notes,
        heart_area_px=heart_px,
        heart_area_cm2=cm2(heart_px),
        ctr=ctr,
        cardiomegaly=cardiomegaly,
    )


def _as_mask(mask: np.ndarray) -> np.ndarray:
    """``mask`` as bool (H, W); a bool mask comes back as it is (nothing here writes to it)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a lung mask is 2-D (H, W), got shape {mask.shape}")
    return mask if mask.dtype == bool else mask != 0


def _cm2_per_pixel(spacing: tuple[float, float] | None) -> float | None:
    if spacing is None:
        return None
    values = np.asarray(spacing, dtype=float)
    if values.shape != (2,) or not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(
            f"pixel spacing must be two positive numbers (row_mm, col_mm), got {spacing}"
        )
    return float(values[0] * values[1] / 100.0)  # mm2 -> cm2


def midline_column(mask: np.ndarray) -> float:
    """The patient's midline as a (fractional) column: the centre of the mediastinum.

    Only the central half of the image is searched (the mediastinum lies there in any PA view,
    and lateral background stays out). In that band, by case:

    1. a lung-free gap between lung columns: the mediastinum. The widest gap wins (a speck in
       the mediastinum only splits it), ties going to the one nearest the image centre;
    2. no lung in the band: the lungs lie laterally, the image centre separates them;
    3. lung reaching in from one end of the band only: a single lung; the centre of the
       lung-free rest of the band puts all of it on its side;
    4. otherwise the lungs are bridged (no gap): the narrowest column of the lung span, unless
       the mask lies wholly on one side of the image centre, which then separates it.
    """
    width = mask.shape[1]
    centre = (width - 1) / 2
    start = width // 4
    profile = np.count_nonzero(mask[:, start : width - start], axis=0)  # lung pixels per column
    lung_columns = np.flatnonzero(profile)
    if lung_columns.size == 0:
        return centre
    first, last = int(lung_columns[0]), int(lung_columns[-1])
    span = profile[first : last + 1]
    if span.min() == 0:
        return start + first + _widest_run_centre(span == 0, centre - start - first)
    free_before, free_after = first > 0, last < profile.size - 1
    if free_before and not free_after:
        return start + (first - 1) / 2
    if free_after and not free_before:
        return start + (last + 1 + profile.size - 1) / 2
    if not start + first <= centre <= start + last:
        return centre
    return start + first + _widest_run_centre(span == span.min(), centre - start - first)


def _widest_run_centre(flags: np.ndarray, centre: float) -> float:
    """Centre (index) of the longest run of True in ``flags``; ties: the run nearest ``centre``."""
    steps = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(steps == 1), np.flatnonzero(steps == -1)  # stops exclusive
    centres = (starts + stops - 1) / 2
    widest = max(
        range(starts.size), key=lambda i: (stops[i] - starts[i], -abs(centres[i] - centre))
    )
    return float(centres[widest])


def _implausibilities(
    mask: np.ndarray,
    right: int,
    left: int,
    sizes: np.ndarray,
    area_cm2: float | None = None,
    *,
    whole: bool = True,
) -> list[str]:
    """The reasons, in words, why a mask is unlike every manual mask; empty when it is plausible.

    ``area_cm2`` (the total, None without a pixel spacing) is checked against
    :data:`LUNG_AREA_CM2_RANGE`. ``whole=False`` (lungs cut by the image border) skips the
    rules that assume whole lungs: their count, share of the image and right/left ratio."""
    if right + left == 0:
        return ["no lung found"]
    reasons = []
    if whole:
        reasons += _whole_lung_implausibilities(mask, right, left, sizes)
    if area_cm2 is not None:
        low, high = LUNG_AREA_CM2_RANGE
        if not low <= area_cm2 <= high:
            reasons.append(
                f"lung area {area_cm2:.3g} cm2, outside any real chest's {low:.0f}-{high:.0f} "
                "cm2: the pixel spacing is probably wrong"
            )
    return reasons


def _whole_lung_implausibilities(
    mask: np.ndarray, right: int, left: int, sizes: np.ndarray
) -> list[str]:
    """The shape rules for two whole lungs: two lung-sized regions, area, right/left ratio."""
    reasons = []
    lungs = int(np.count_nonzero(sizes >= MIN_LUNG_FRACTION * mask.size))
    if lungs != 2:
        reasons.append(f"{lungs} lung-sized region{'s' if lungs != 1 else ''}, expected 2")
    fraction = (right + left) / mask.size
    low, high = AREA_FRACTION_RANGE
    if not low <= fraction <= high:
        reasons.append(
            f"lung area {fraction:.1%} of the image, outside the normal {low:.0%}-{high:.0%}"
        )
    if right == 0 or left == 0:
        reasons.append(f"no {'right' if right == 0 else 'left'} lung")
    else:
        ratio = right / left
        low, high = RIGHT_LEFT_RATIO_RANGE
        if not low <= ratio <= high:
            smaller, larger = ("right", "left") if ratio < low else ("left", "right")
            reasons.append(
                f"{smaller} lung much smaller than the {larger} (right/left area ratio "
                f"{ratio:.2f}, normal {low:.2f}-{high:.2f})"
            )
    return reasons


def border_pixels(mask: np.ndarray) -> int:
    """Lung pixels on the image's outermost rows and columns, each pixel counted once."""
    ring = mask.copy()
    ring[1:-1, 1:-1] = False
    return int(np.count_nonzero(ring))
