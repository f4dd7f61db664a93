"""Is this film the right way up and the right way round? Read from the masks themselves.

A mirrored or upside-down film is segmented with right and left swapped (or not at all), so it
must never pass as "ok". Two anatomical facts, measured on the manual masks of the shared data
(upright PA films; ``scripts/orientation_stats.py`` reproduces every figure below):

* **the lungs are widest near their bases**: the band (a tenth of the lungs' height) where the
  two lungs span the most columns lies at 0.879 of the lungs' height (median of 486 val and
  test masks of ``splits/multi_source.json``, all four sources; top = 0), never above 0.373.
  Upside down it moves to the top, so a widest band above :data:`UPSIDE_DOWN_BELOW` of the
  height is flagged: none of the upright masks, 94.4% of them flipped.
* **the heart reaches further to the patient's left**, the image's right: its extent right of
  the lungs' midline is 1.933 times its extent left of it (median of the 259 Wingspan hearts;
  1st percentile 0.926, lowest 0.465). A ratio below :data:`MIRRORED_BELOW` is flagged: 0.8%
  of the upright hearts, 96.1% of them mirrored (a rare dextrocardia is flagged too, rightly: it is
  worth a look). Without a heart channel mirroring cannot be told, and is not claimed.

:func:`check_orientation` gives the verdict and the flip that would put the film upright;
``Segmenter`` flags such masks "check", and with ``fix_orientation`` segments the corrected
film instead and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungseg.measure import midline_column, row_spans

__all__ = [
    "MIRRORED_BELOW",
    "heart_reach_ratio",
    "widest_band_position",
    "THEN_MIRRORED",
    "UPSIDE_DOWN_BELOW",
    "Orientation",
    "apply_flip",
    "check_orientation",
]

UPSIDE_DOWN_BELOW = 0.33
"""Flag when the lungs' widest row lies above this fraction of their height (0 = top)."""
MIRRORED_BELOW = 0.85
"""Flag when the heart reaches less far right of the midline than this times its reach left."""


@dataclass(frozen=True)
class Orientation:
    """The verdict on one film.

    Attributes:
        upside_down: the lungs are widest near the top.
        mirrored: the heart lies on the image's left; None without a heart mask, and for an
            upside-down film (a network that knows upright films cannot place the heart on
            one: the side is judged again once the film is turned upright).
        flip: the array flip that puts the film upright: ``"none"``, ``"horizontal"``
            (mirrored) or ``"rotate180"`` (upside down: a film rotated in the reader, the
            usual case; if it then looks mirrored the caller undoes that too, see
            :data:`THEN_MIRRORED`).
    """

    upside_down: bool
    mirrored: bool | None

    @property
    def flip(self) -> str:
        if self.upside_down:
            return "rotate180"
        return "horizontal" if self.mirrored else "none"

    def reasons(self) -> list[str]:
        found = []
        if self.upside_down:
            found.append("the film looks upside down (the lungs are widest at the top)")
        if self.mirrored:
            found.append(
                "the film looks mirrored (the heart is on the image's left): right and left "
                "would be swapped"
            )
        return found


def check_orientation(lungs: np.ndarray, heart: np.ndarray | None = None) -> Orientation:
    """The orientation of a film from its lung mask (and heart mask, when there is one)."""
    position = widest_band_position(lungs)
    upside_down = position is not None and position < UPSIDE_DOWN_BELOW
    ratio = None if upside_down or heart is None else heart_reach_ratio(lungs, heart)
    return Orientation(upside_down, None if ratio is None else ratio < MIRRORED_BELOW)


def widest_band_position(lungs: np.ndarray) -> float | None:
    """Where the lungs are widest, as a fraction of their height (0 = top); None under 8 rows.

    The width is smoothed over a tenth of the height: a band, not one row, so a ragged edge
    does not decide.
    """
    lungs = np.asarray(lungs, dtype=bool)
    rows = np.flatnonzero(lungs.any(1))
    if rows.size < 8:
        return None
    width = row_spans(lungs[rows[0] : rows[-1] + 1]).astype(np.float64)
    window = max(1, len(width) // 10)
    smooth = np.convolve(width, np.ones(window) / window, mode="same")
    return int(np.argmax(smooth)) / len(width)


def heart_reach_ratio(lungs: np.ndarray, heart: np.ndarray) -> float | None:
    """How far the heart reaches right of the lungs' midline over how far it reaches left
    (inf when it does not cross to the left); None without a heart or lungs."""
    lungs, heart = np.asarray(lungs, dtype=bool), np.asarray(heart, dtype=bool)
    if not heart.any() or not lungs.any():
        return None
    midline = midline_column(lungs)
    columns = np.flatnonzero(heart.any(0))
    right, left = max(0.0, columns[-1] - midline), max(0.0, midline - columns[0])
    return right / left if left > 0 else float("inf")


THEN_MIRRORED = {"rotate180": "vertical"}
"""The flip to use instead when the film, turned upright by the first, still looks mirrored."""


def apply_flip(array: np.ndarray, flip: str) -> np.ndarray:
    """Flip the last two axes of ``array`` as ``flip`` says (each flip is its own inverse)."""
    if flip == "horizontal":
        return array[..., :, ::-1]
    if flip == "vertical":
        return array[..., ::-1, :]
    if flip == "rotate180":
        return array[..., ::-1, ::-1]
    return array
