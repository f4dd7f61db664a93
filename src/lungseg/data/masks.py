"""Read lung masks, and the rules that say whether a mask file can be one.

A mask is any image file :mod:`lungseg.data.io` decodes; this module adds what only masks need:

* Grey levels are read as stored (:func:`read_mask_values`) and cut at half their maximum
  (:func:`binarize_mask`), so {0, 1}, {0, 255} and anti-aliased masks all give the same mask.
* A mask must have its image's size (:func:`check_mask_size`, :class:`MaskMismatchError`).
* :func:`mask_problem` says why stored levels cannot be a lung mask (empty, full, not binary);
  :func:`mask_note` reports harmless soft edges. ``lungseg data check`` prints both; training
  refuses every problem; evaluation refuses only non-binary masks.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from lungseg.data.io import read_grey_levels, read_meta
from lungseg.errors import InvalidInputError, LungsegError, MaskMismatchError

NON_BINARY_LIMIT = 0.01
"""Largest fraction of mask pixels that may be neither 0 nor the mask's maximum: soft,
anti-aliased edges stay under it; a probability map or a photo saved as a mask does not."""

MASK_PROBLEMS: tuple[str, ...] = ("empty_mask", "full_mask", "non_binary_mask")
"""What :func:`mask_problem` finds, by kind; callers choose which of them they refuse."""


def read_mask_values(path: str | Path) -> np.ndarray:
    """Read a mask's grey levels as stored (float32 (H, W), not rescaled, not thresholded).

    ``lungseg data check`` uses this to see how many pixels are neither background nor
    foreground; everyone else wants :func:`read_mask`.

    Raises:
        InvalidInputError: as :func:`lungseg.data.io.read_image`.
    """
    return read_grey_levels(path)


def binarize_mask(values: np.ndarray) -> np.ndarray:
    """Cut mask grey levels at half their maximum: ``values > values.max() / 2``.

    Works the same for {0, 1}, {0, 255} and anti-aliased grey masks; an all-zero mask stays an
    (empty) mask.
    """
    return values > values.max() / 2


def grey_fraction(values: np.ndarray) -> float:
    """The fraction of pixels that are neither 0 nor the mask's maximum (soft edges, noise)."""
    top = values.max()
    return float(np.mean((values != 0) & (values != top)))


def mask_problem(values: np.ndarray) -> tuple[str, str] | None:
    """Why stored mask grey levels cannot be a lung mask, as ``(kind, message)``; else None.

    A chest X-ray always shows lungs and never only lungs, so a mask that marks nothing
    (``empty_mask``) or everything (``full_mask``) is a data error, as is one with more than
    :data:`NON_BINARY_LIMIT` of its pixels neither 0 nor its maximum (``non_binary_mask``).
    ``lungseg data check`` reports all three; training refuses them; evaluation refuses only
    non-binary masks (empty and full ones have defined scores, see :mod:`lungseg.metrics`).
    """
    top = float(values.max())
    if top <= 0:
        return "empty_mask", "mask is empty: no pixel is marked as lung"
    grey = grey_fraction(values)
    if grey > NON_BINARY_LIMIT:
        return "non_binary_mask", f"{grey:.2%} of pixels are neither 0 nor {top:g}: not a mask?"
    if binarize_mask(values).all():
        return "full_mask", "mask marks every pixel as lung (an all-white image?)"
    return None


def mask_note(values: np.ndarray) -> tuple[str, str] | None:
    """A harmless finding about a mask without a :func:`mask_problem`, as ``(kind, message)``.

    ``grey_edges``: some pixels (at most :data:`NON_BINARY_LIMIT`) are neither 0 nor the
    maximum, as anti-aliased edges are; they are cut at half the maximum. None for a mask
    whose levels are exactly {0, max}.
    """
    top = values.max()
    grey = grey_fraction(values)
    if grey <= 0:
        return None
    return "grey_edges", f"{grey:.2%} of pixels are neither 0 nor {top:g}; cut at {top / 2:g}"


def check_mask_size(
    path: str | Path,
    size: tuple[int, ...],
    image_path: str | Path,
    image_size: tuple[int, int],
) -> None:
    """Raise :class:`MaskMismatchError` when a mask's (height, width) is not its image's.

    ``image_path`` is named in the message (``"(given size)"`` when only a size is known).
    """
    if tuple(size) != tuple(image_size):
        raise MaskMismatchError(path, size, image_path, image_size)  # type: ignore[arg-type]


def read_mask(
    path: str | Path,
    *,
    image_path: str | Path | None = None,
    image_size: tuple[int, int] | None = None,
    refuse: Collection[str] = (),
) -> np.ndarray:
    """Read a lung mask as bool (H, W), optionally checking it has its image's size.

    Args:
        path: the mask file, any format :func:`lungseg.data.io.read_image` reads.
        image_path: the mask's image; its size is read from its header (no decoding) unless
            ``image_size`` is given. Named in the error message either way.
        image_size: the image's (height, width), when the caller already knows it.
        refuse: kinds of :func:`mask_problem` (of :data:`MASK_PROBLEMS`) that raise.

    Raises:
        InvalidInputError: the mask file cannot be read, or has a problem ``refuse`` names.
        MaskMismatchError: the mask's size differs from the image's; names both files and sizes.
    """
    values = read_mask_values(path)
    expected = _expected_size(image_path, image_size)
    if expected is not None:
        reference = image_path if image_path is not None else "(given size)"
        check_mask_size(path, values.shape, reference, expected)
    _refuse_problems(path, values, refuse)
    return binarize_mask(values)


def read_masks(
    paths: Sequence[Path],
    *,
    image_path: str | Path | None = None,
    image_size: tuple[int, int] | None = None,
    refuse: Collection[str] = (),
) -> np.ndarray:
    """Read several masks of one image and return their union (e.g. Montgomery left + right).

    Every mask must have the image's size (when given) and the first mask's size otherwise;
    ``refuse`` applies to each file, as in :func:`read_mask`.

    Raises:
        LungsegError: ``paths`` is empty.
        InvalidInputError: a mask file cannot be read, or has a problem ``refuse`` names.
        MaskMismatchError: a mask's size differs from the image's or the first mask's.
    """
    if not paths:
        raise LungsegError("no mask file given")
    expected = _expected_size(image_path, image_size)
    reference = image_path if image_path is not None else "(given size)"
    union: np.ndarray | None = None
    for path in paths:
        values = read_mask_values(path)
        if expected is None:
            expected, reference = values.shape, path
        check_mask_size(path, values.shape, reference, expected)
        _refuse_problems(path, values, refuse)
        mask = binarize_mask(values)
        union = mask if union is None else union | mask
    return union


def _refuse_problems(path: str | Path, values: np.ndarray, refuse: Collection[str]) -> None:
    """Raise for a :func:`mask_problem` of one of the kinds in ``refuse``."""
    problem = mask_problem(values) if refuse else None
    if problem is not None and problem[0] in refuse:
        raise InvalidInputError(path, problem[1])


def _expected_size(
    image_path: str | Path | None, image_size: tuple[int, int] | None
) -> tuple[int, int] | None:
    if image_size is not None:
        return (int(image_size[0]), int(image_size[1]))
    if image_path is not None:
        meta = read_meta(image_path)
        return (meta.height, meta.width)
    return None
