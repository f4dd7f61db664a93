"""Clean a predicted lung mask: keep the lungs, drop the rest, close the holes.

A network's thresholded output is right almost everywhere, but its errors have a typical shape:

* small spurious blobs outside the lungs (a gastric air bubble, a dark patch of soft tissue, the
  trachea) that count as extra lung area and ruin the surface distances (HD95);
* holes inside a lung where an opacity (a tuberculosis cavity wall, a nodule, consolidation,
  a pacemaker) looks unlike the aerated lung the network learned, although it IS lung.

A chest X-ray shows exactly two lungs, so :func:`postprocess_mask` keeps the two largest
connected components and fills the holes enclosed by them. The price: a lung that really is in
pieces (a pleural effusion can cut the lung field in two) loses all but its largest piece, so
``lungseg evaluate`` with and without ``--no-postprocess`` measures the trade-off on a labelled
set. Both steps are OpenCV passes (a connected-component labelling, then a flood fill of the
background from the border) rather than two ``scipy.ndimage`` labellings: they run twice for
every image ``lungseg predict`` segments (lungs, heart), inside the "finish" stage that
``benchmarks/pipeline_stages.py`` times.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["EIGHT_CONNECTED", "component_sizes", "postprocess_mask"]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
"""Structuring element for lung components (``scipy.ndimage.label``): pixels touching by a
corner belong together, so a lung drawn with a one-pixel diagonal neck is one lung, not two."""


def postprocess_mask(mask: np.ndarray, keep: int = 2) -> np.ndarray:
    """Keep the ``keep`` largest connected components of a lung mask and fill their holes.

    Why: spurious blobs outside the lungs add false area and dominate the Hausdorff distance,
    and opacities inside a lung (cavities, nodules, consolidation) leave holes that are lung all
    the same; two lungs, each without holes, is what every chest X-ray shows.

    Components use 8-connectivity (:data:`EIGHT_CONNECTED`); a hole is background that cannot
    be reached from the image border through 4-connected background (the complement of
    8-connected foreground), so a notch open to the outside of the lung is not filled:
    ``scipy.ndimage.label`` then ``binary_fill_holes`` give the same masks
    (tests/test_postprocess.py). Equal-sized components are ranked by their position in raster
    order, so the result is deterministic.

    Args:
        mask: lung mask (H, W); any non-zero value is lung.
        keep: how many of the largest components to keep (2: the two lungs).

    Returns:
        A new bool (H, W) mask; an empty input gives an empty output.

    Raises:
        ValueError: ``mask`` is not 2-D or ``keep`` is not a positive integer.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a lung mask is 2-D (H, W), got shape {mask.shape}")
    if isinstance(keep, bool) or not isinstance(keep, int | np.integer) or keep < 1:
        raise ValueError(f"keep must be a positive integer, got {keep!r}")
    foreground = (mask != 0).view(np.uint8)
    count, labels = _components(foreground)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    if count > keep:  # sizes only where there is something to drop: most masks are two lungs
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        largest = np.argsort(-sizes, kind="stable")[:keep] + 1
        kept = labels == largest[0]
        for label in largest[1:]:
            kept |= labels == label
        foreground = kept.view(np.uint8)
    return _fill_holes(foreground)


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """Pixels of each 8-connected component of a 2-D mask, in raster order of their first
    pixel (empty for an empty mask)."""
    count, labels = _components((np.asarray(mask) != 0).view(np.uint8))
    return np.bincount(labels.ravel(), minlength=count + 1)[1:]


def _components(foreground: np.ndarray) -> tuple[int, np.ndarray]:
    """The number of 8-connected components and their labels (int32: 0 = background, then
    1, 2, ... in raster order). OpenCV's statistics are left out: a ``bincount`` of the labels
    gives the sizes in a fraction of their time."""
    count, labels = cv2.connectedComponents(
        np.ascontiguousarray(foreground), connectivity=8, ltype=cv2.CV_32S
    )
    return count - 1, labels


def _fill_holes(foreground: np.ndarray) -> np.ndarray:
    """Fill what 4-connected background from the border cannot reach (uint8 0/1 in, bool out).

    The mask goes onto a canvas one pixel larger on every side, so one flood fill from a corner
    reaches all the background that touches the image border; what stays 0 is a hole.
    """
    height, width = foreground.shape
    canvas = np.zeros((height + 2, width + 2), dtype=np.uint8)
    canvas[1:-1, 1:-1] = foreground
    cv2.floodFill(canvas, None, (0, 0), 1, flags=4)
    return (canvas[1:-1, 1:-1] == 0) | (foreground != 0)
