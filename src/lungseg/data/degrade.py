"""Degraded copies of X-rays: what a quality estimate must catch.

A quality estimate calibrated and tested on clean films alone never sees a failure. These are
the corruptions a hospital pipeline meets (heavy detector noise, an extreme window, a large
occlusion, a thumbnail-sized export, a cropped field of view), at strengths that make the
network fail on a good share of images, as ``benchmarks/quality.py`` measures. Each takes a
seeded generator, so a calibration or a report is reproducible, and returns the degraded image
with the mask it now corresponds to (only cropping changes the mask).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

__all__ = ["DEGRADATIONS", "degrade"]


def _noise(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    sigma = rng.uniform(0.10, 0.30)
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0.0, 1.0), mask


def _contrast(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    if rng.random() < 0.5:  # a window far too narrow: most of the film saturates
        low = rng.uniform(0.0, 0.5)
        return np.clip((image - low) / rng.uniform(0.05, 0.15), 0.0, 1.0), mask
    return image ** rng.choice([rng.uniform(0.15, 0.3), rng.uniform(3.5, 6.0)]), mask


def _occlusion(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    height, width = image.shape
    h, w = int(height * rng.uniform(0.3, 0.5)), int(width * rng.uniform(0.25, 0.45))
    top, left = rng.integers(0, height - h), rng.integers(0, width - w)
    out = image.copy()
    out[top : top + h, left : left + w] = rng.choice([0.0, 1.0])
    return out, mask


def _low_resolution(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    side = int(rng.integers(24, 48))
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, image.shape[::-1], interpolation=cv2.INTER_LINEAR), mask


def _crop(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    height, width = image.shape
    keep_h, keep_w = int(height * rng.uniform(0.5, 0.7)), int(width * rng.uniform(0.5, 0.7))
    top, left = rng.integers(0, height - keep_h), rng.integers(0, width - keep_w)
    window = (slice(top, top + keep_h), slice(left, left + keep_w))
    return image[window].copy(), mask[window].copy()


DEGRADATIONS: dict[str, Callable] = {
    "noise": _noise,
    "contrast": _contrast,
    "occlusion": _occlusion,
    "low_resolution": _low_resolution,
    "crop": _crop,
}
"""Name -> ``f(image, mask, rng) -> (image, mask)``, images float [0, 1] (H, W)."""


def degrade(
    kind: str, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One degraded copy of ``image`` (float32 [0, 1]) and its mask.

    Raises:
        ValueError: ``kind`` is not one of :data:`DEGRADATIONS`.
    """
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; use one of {', '.join(DEGRADATIONS)}")
    out, truth = DEGRADATIONS[kind](np.asarray(image, dtype=np.float32), mask, rng)
    return np.asarray(out, dtype=np.float32), truth
