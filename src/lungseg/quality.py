"""How good is this mask? A per-image estimate of the Dice a careful manual mask would give it.

A segmentation that is wrong but says "ok" is worse than none, so every mask carries
``estimated_dice``, predicted from signals the model already has, and a mask below the
threshold chosen on validation is flagged ``check``. The signals (:func:`quality_signals`):

* ``tta_dice``: agreement between the mask and the mask of a second pass on the same X-ray
  zoomed out by 10% (mapped back). A network that knows the anatomy answers the same; one that
  guesses (noise, an occlusion, a film unlike its training data) moves its border. The second
  pass may run on a smaller grid than the first (:attr:`QualityModel.pass_size`, chosen with
  the calibration): it only has to disagree where the network is unsure, and a smaller grid
  costs the network less (``benchmarks/pipeline_stages.py`` times both passes).
* ``uncertain``: the share of the mask's area where the probability is between 0.1 and 0.9,
  i.e. how wide the blurry border is compared with the lungs.
* ``postprocess_change``: ``1 - Dice(raw mask, post-processed mask)``: how much debris the
  post-processing had to remove or how many holes it had to fill.
* ``implausible``: 1 when :func:`lungseg.measure.measure_lungs` finds the shape unlike any
  manual mask (not two lungs, area or side ratio out of range).
* ``cut_by_border``: 1 when the mask reaches the image border (a field of view that cuts the
  lungs, :data:`lungseg.measure.MAX_BORDER_PIXELS`). There the zoomed-out pass sees replicated
  border pixels where the film ends, so its disagreement says less about the mask; without this
  signal a linear model takes the disagreement at face value and flags good masks of cropped
  films (``scripts/calibrate_quality.py`` prints the share of good val masks flagged).

:class:`QualityModel` maps them to an estimate with a linear model whose coefficients, and the
"check" threshold, are fitted on VALIDATION images (clean and degraded copies) by
``scripts/calibrate_quality.py`` and stored in the weights' header; ``benchmarks/quality.py``
reports how well it ranks and flags masks on the test subsets. The second pass doubles the
network time per image (the speed tables say what it costs).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lungseg.measure import MAX_BORDER_PIXELS, border_pixels
from lungseg.metrics import dice

__all__ = ["SIGNALS", "QualityModel", "quality_signals", "zoomed_out"]

SIGNALS = ("tta_dice", "uncertain", "postprocess_change", "implausible", "cut_by_border")
"""What :func:`quality_signals` measures; a model fitted before a signal was added uses the
ones it names (:attr:`QualityModel.signals`)."""
TTA_ZOOM = 0.9  # the second pass sees the image at 90% of its size, centred, borders replicated


def _zoom_grid(batch: torch.Tensor, zoom: float) -> torch.Tensor:
    """A sampling grid that shows ``batch`` scaled by ``zoom`` about its centre (one grid per
    size, expanded over the batch: building it costs as much as sampling with it)."""
    height, width = batch.shape[2], batch.shape[3]
    grid = _cached_grid(height, width, zoom, batch.dtype, batch.device)
    return grid.expand(batch.shape[0], -1, -1, -1)


@functools.lru_cache(maxsize=8)
def _cached_grid(
    height: int, width: int, zoom: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    with torch.inference_mode(False):  # a normal tensor: the cache outlives any inference_mode
        theta = torch.tensor([[[1.0 / zoom, 0.0, 0.0], [0.0, 1.0 / zoom, 0.0]]], dtype=dtype)
        return F.affine_grid(theta.to(device), [1, 1, height, width], align_corners=False)


def zoomed_out(
    batch: torch.Tensor, zoom: float = TTA_ZOOM, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """The network inputs ``(B, C, h, w)`` shrunk to ``zoom`` of their size, centred; with
    ``size``, on a grid of that ``(h, w)`` (resized with antialiasing first), so the second pass
    costs the network less than the first."""
    if size is not None and tuple(size) != tuple(batch.shape[2:]):
        batch = F.interpolate(
            batch, size=tuple(size), mode="bilinear", antialias=True, align_corners=False
        )
    grid = _zoom_grid(batch, zoom)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


def zoomed_back(
    logits: torch.Tensor, zoom: float = TTA_ZOOM, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Logits of a :func:`zoomed_out` input mapped back onto the original input's grid, of
    ``size`` ``(h, w)`` when the pass ran smaller."""
    back = zoomed_out(logits, 1.0 / zoom)
    if size is not None and tuple(size) != tuple(back.shape[2:]):
        back = F.interpolate(back, size=tuple(size), mode="bilinear", align_corners=False)
    return back


def quality_signals(
    logits: torch.Tensor,
    tta_logits: torch.Tensor,
    raw_mask: np.ndarray,
    mask: np.ndarray,
    implausible: bool,
) -> dict[str, float]:
    """The signals of one image (see the module docstring).

    Args:
        logits: the image's lung logits at the network's size, ``(h, w)``.
        tta_logits: those of the zoomed-out pass, already mapped back (:func:`zoomed_back`).
        raw_mask, mask: the thresholded mask at the original size, before and after
            post-processing.
        implausible: whether the measurements found the mask implausible.
    """
    first, second = logits > 0, tta_logits > 0
    prob = torch.sigmoid(logits)
    area = max(int(first.sum()), 1)
    return {
        "tta_dice": dice(first.cpu().numpy(), second.cpu().numpy()),
        "uncertain": float(((prob > 0.1) & (prob < 0.9)).sum()) / area,
        "postprocess_change": 1.0 - dice(raw_mask, mask),
        "implausible": float(implausible),
        "cut_by_border": float(border_pixels(mask) > MAX_BORDER_PIXELS),
    }


@dataclass(frozen=True)
class QualityModel:
    """``estimated_dice = clip(intercept + coef . signals, 0, 1)``, and the "check" cut.

    Attributes:
        coef: one weight per name in ``signals``.
        intercept: the constant term.
        threshold: masks estimated below it are flagged ``check``.
        fitted_on: what the calibration saw (for the model card).
        signals: the signals it weighs, a subset of :data:`SIGNALS` (all of them when fitted
            now; fewer in a weights file calibrated before a signal was added).
        pass_size: the ``(h, w)`` of the second pass's input the signals were measured with;
            None: the network's input size (weights calibrated before the size was a choice).
    """

    coef: tuple[float, ...]
    intercept: float
    threshold: float
    fitted_on: str = ""
    signals: tuple[str, ...] = SIGNALS
    pass_size: tuple[int, int] | None = None

    def estimate(self, signals: dict[str, float]) -> float:
        value = self.intercept + sum(
            w * signals[name] for w, name in zip(self.coef, self.signals, strict=True)
        )
        return float(np.clip(value, 0.0, 1.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "signals": list(self.signals),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "threshold": self.threshold,
            "fitted_on": self.fitted_on,
            **({"pass_size": list(self.pass_size)} if self.pass_size else {}),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> QualityModel:
        names = tuple(values.get("signals", ()))
        if not names or not set(names) <= set(SIGNALS) or len(names) != len(values["coef"]):
            raise ValueError(
                f"quality model for signals {list(names)} with {len(values['coef'])} "
                f"weights; lungseg measures {list(SIGNALS)}"
            )
        return cls(
            tuple(float(c) for c in values["coef"]),
            float(values["intercept"]),
            float(values["threshold"]),
            str(values.get("fitted_on", "")),
            names,
            tuple(int(v) for v in values["pass_size"]) if values.get("pass_size") else None,
        )

    @classmethod
    def fit(
        cls,
        signals: list[dict[str, float]],
        dice: list[float],
        *,
        failed_below: float = 0.85,
        fitted_on: str = "",
        pass_size: tuple[int, int] | None = None,
    ) -> QualityModel:
        """Least squares on (signals, true Dice); the threshold flags failed masks first.

        The threshold is the lowest that flags at least 90% of the failed masks
        (``Dice < failed_below``): of all thresholds that catch them, it flags the fewest good
        masks (``Dice >= good_from``). A wrong mask that says "ok" is the costly error, so the
        share of good masks flagged is reported, not traded against it.
        """
        x = np.array([[row[name] for name in SIGNALS] for row in signals], dtype=np.float64)
        y = np.asarray(dice, dtype=np.float64)
        design = np.hstack([np.ones((len(x), 1)), x])
        solution, *_ = np.linalg.lstsq(design, y, rcond=None)
        model = cls(tuple(solution[1:]), float(solution[0]), 0.0, fitted_on)
        estimates = np.array([model.estimate(row) for row in signals])
        failed = y < failed_below
        threshold = 0.0
        if failed.any():
            # The smallest cut above the 10% quantile of the failed masks' estimates.
            threshold = float(np.quantile(estimates[failed], 0.9, method="higher")) + 1e-4
        return cls(model.coef, model.intercept, round(threshold, 4), fitted_on, SIGNALS, pass_size)
