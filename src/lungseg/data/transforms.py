"""The one preprocessing path shared by training and inference.

Training and inference must see images prepared identically, or a model trained here silently
degrades in use. So both call :func:`preprocess` (= :func:`resize_image` then
:func:`normalize`); the dataset only splits the two steps to cache the resized image and
augment it before normalising.
"""

from __future__ import annotations

import numpy as np

NORMALIZE_EPS = 1e-6


def _interpolation(from_size: tuple[int, int], to_size: tuple[int, int]) -> int:
    """Area averaging when shrinking (no aliasing), bilinear when any side grows (INTER_AREA
    degrades to nearest-neighbour when enlarging)."""
    import cv2

    shrinking = to_size[0] <= from_size[0] and to_size[1] <= from_size[1]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float (H, W) image to ``size`` = (height, width); returns float32."""
    import cv2

    image = np.asarray(image, dtype=np.float32)
    height, width = size
    if image.shape == (height, width):
        return image.copy()
    return cv2.resize(
        image, (width, height), interpolation=_interpolation(image.shape[:2], (height, width))
    )


def normalize(image: np.ndarray) -> np.ndarray:
    """Per-image z-score: ``(x - mean) / (std + 1e-6)`` as float32.

    Per image, not with data-set statistics, because X-rays from other hospitals and detectors
    differ in exposure and contrast; standardising each image removes most of that shift.
    """
    image = np.asarray(image, dtype=np.float32)
    return ((image - image.mean()) / (image.std() + NORMALIZE_EPS)).astype(np.float32)


def preprocess(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Prepare an image from :func:`lungseg.data.io.read_image` for the network.

    Args:
        image: float (H, W) in [0, 1].
        size: the network's input (height, width).

    Returns:
        float32 (height, width), zero mean and unit standard deviation.
    """
    return normalize(resize_image(image, size))


def lung_fraction(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """How much of each pixel of a ``size`` grid a bool (H, W) mask covers: float32 in [0, 1].

    The mask goes through the same interpolation as its image (area when shrinking, linear when
    enlarging), so mask and image stay aligned to the sub-pixel. Training on this "soft" mask
    keeps the boundary's sub-pixel position that cutting it at 0.5 discards
    (``scripts/resolution_ceiling.py`` measures how much Dice either can reach).
    """
    return resize_image(np.asarray(mask, dtype=np.float32), size)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a bool (H, W) mask to ``size`` = (height, width): its :func:`lung_fraction` cut at
    0.5, so a pixel is lung when most of it was lung."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == tuple(size):
        return mask.copy()
    return lung_fraction(mask, size) >= 0.5
