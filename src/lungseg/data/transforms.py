"""The one preprocessing path shared by training and inference, and the training augmentation.

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


def train_augmentation(soft_masks: bool = False):
    """Random geometry and exposure applied to ``{"image", "mask"}`` samples together.

    Works at the network size on the [0, 1] image, before :func:`normalize`. No horizontal flip:
    the heart makes the left lung smaller, and a flipped chest is not a plausible X-ray. The
    ranges are modest on purpose: frontal chest films are taken in a standard position.

    Args:
        soft_masks: the masks are lung fractions (float32, see :func:`lung_fraction`), which
            the geometry interpolates linearly; binary masks (uint8) take the nearest value.

    Returns:
        An ``albumentations.Compose``; call it as ``aug(image=float32 (h, w), mask=(h, w))``.
        Reseed it with ``set_random_seed`` for reproducible runs.
    """
    import albumentations as A
    import cv2

    return A.Compose(
        [
            A.Affine(
                scale=(0.85, 1.15),
                translate_percent=(-0.06, 0.06),
                rotate=(-10, 10),
                shear=(-4, 4),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_LINEAR if soft_masks else cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=0.8,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
            A.RandomGamma(gamma_limit=(80, 125), p=0.4),
            A.OneOf(
                [
                    A.GaussianBlur(blur_limit=(3, 5), p=1.0),
                    A.GaussNoise(std_range=(0.01, 0.03), p=1.0),
                ],
                p=0.2,
            ),
        ]
    )
