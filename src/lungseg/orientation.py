"""Is this film the right way up and the right way round? Read from the masks themselves.

A mirrored or upside-down film is segmented with right and left swapped (or not at all), so it
must never pass as "ok". Two anatomical facts, measured on the manual masks of the shared data
(upright PA films; 80 per source for the lungs, all 259 Wingspan hearts):

* **the lungs are widest near their bases**: the band (a tenth of the lungs' height) where the
  two lungs span the most columns lies at 0.88 of the lungs' height (median of 485 val and
  test masks of ``splits/multi_source.json``, all four sources; top = 0), never above 0.37,
  95% below 0.34 once flipped. Upside down it moves to the top, so a widest band above
  :data:`UPSIDE_DOWN_BELOW` of the height is flagged.
* **the heart reaches further to the patient's left**, the image's right: its extent right of
  the lungs' midline is 1.93 times its extent left of it (median of the 259 Wingspan hearts;
  1st percentile 0.93, lowest 0.47; 95% above 1.22, so mirrored 95% fall below 0.82). A ratio
  below :data:`MIRRORED_BELOW` is flagged (a rare dextrocardia is flagged too, rightly: it is
  worth a look). Without a heart channel mirroring cannot be told, and is not claimed.

:func:`check_orientation` gives the verdict and the flip that would put the film upright;
``Segmenter`` flags such masks "check", and with ``fix_orientation`` segments the corrected
film instead and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungseg.measure import midline_column

__all__ = [
    "MIRRORED_BELOW",
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
    lungs = np.asarray(lungs, dtype=bool)
    rows = np.flatnonzero(lungs.any(1))
    upside_down = False
    if rows.size >= 8:
        band = lungs[rows[0] : rows[-1] + 1]
        present = band.any(1)
        first = band.argmax(1)
        last = band.shape[1] - 1 - band[:, ::-1].argmax(1)
        width = np.where(present, last - first + 1, 0).astype(np.float64)
        window = max(1, len(width) // 10)  # a band, not one row: a ragged edge must not decide
        smooth = np.convolve(width, np.ones(window) / window, mode="same")
        upside_down = int(np.argmax(smooth)) < UPSIDE_DOWN_BELOW * len(width)
    mirrored = None
    if heart is not None and np.any(heart) and lungs.any() and not upside_down:
        midline = midline_column(lungs)
        heart_columns = np.flatnonzero(np.asarray(heart, dtype=bool).any(0))
        right_reach = max(0.0, heart_columns[-1] - midline)
        left_reach = max(0.0, midline - heart_columns[0])
        mirrored = bool(right_reach < MIRRORED_BELOW * left_reach)
    return Orientation(upside_down, mirrored)


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
