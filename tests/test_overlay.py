"""lungseg.overlay: each lung tinted in its side's colour with a full-colour contour, and the
X-ray left exactly as it was everywhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lungseg.data.dataset import load_full_mask
from lungseg.data.discovery import discover, load_split, select
from lungseg.data.io import read_image
from lungseg.measure import LEFT_LUNG, RIGHT_LUNG, lung_labels
from lungseg.overlay import LEFT_COLOR, RIGHT_COLOR, render_overlay

SIDES = ((RIGHT_LUNG, RIGHT_COLOR), (LEFT_LUNG, LEFT_COLOR))


def _grey(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _contour(labels: np.ndarray, label: int, width: int = 1) -> np.ndarray:
    """Lung pixels within ``width`` (chessboard distance) of a non-lung pixel or the image edge."""
    lung = labels == label
    inner = ndimage.binary_erosion(lung, np.ones((3, 3), bool), iterations=width, border_value=0)
    return lung & ~inner


def _synthetic(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A smooth grey image and two rectangular lungs."""
    rows, cols = np.mgrid[0:size, 0:size]
    image = (0.2 + 0.6 * (rows + cols) / (2 * size)).astype(np.float32)
    labels = np.zeros((size, size), dtype=np.uint8)
    labels[size // 8 : -size // 8, size // 10 : size * 4 // 10] = RIGHT_LUNG
    labels[size // 8 : -size // 8, size * 6 // 10 : size * 9 // 10] = LEFT_LUNG
    return image, labels


@pytest.fixture(scope="module")
def xray(data_root: Path, split_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """A real test-split X-ray and the side labels of its manual mask."""
    pair = select(discover(data_root).pairs, load_split(split_file), "test")[0]
    image, _ = read_image(pair.image)
    return image, lung_labels(load_full_mask(pair))


def _check_overlay(image: np.ndarray, labels: np.ndarray, opacity: float, width: int) -> None:
    before = image.copy()
    overlay = render_overlay(image, labels, opacity=opacity)
    assert np.array_equal(image, before)  # the input is not modified
    assert overlay.dtype == np.uint8 and overlay.shape == (*image.shape, 3)
    grey = _grey(image)
    outside = labels == 0
    for channel in range(3):
        assert np.array_equal(overlay[..., channel][outside], grey[outside])
    for label, colour in SIDES:
        contour = _contour(labels, label, width)
        inside = (labels == label) & ~contour
        assert contour.any() and inside.any()
        assert (overlay[contour] == colour).all()
        expected = (1 - opacity) * grey[inside][:, None] + opacity * np.asarray(colour)[None, :]
        assert np.abs(overlay[inside].astype(float) - expected).max() <= 0.5 + 1e-6


@pytest.mark.data
def test_real_xray_lungs_are_tinted_by_side_and_the_rest_untouched(
    xray: tuple[np.ndarray, np.ndarray],
) -> None:
    image, labels = xray
    _check_overlay(image, labels, opacity=0.45, width=1)
    overlay = render_overlay(image, labels).astype(int)
    # The patient's right lung (image left) turns orange (red > blue), the left sky blue.
    right, left = overlay[labels == RIGHT_LUNG], overlay[labels == LEFT_LUNG]
    assert (right[:, 0] > right[:, 2]).mean() > 0.99
    assert (left[:, 2] > left[:, 0]).mean() > 0.99
    assert np.nonzero(labels == RIGHT_LUNG)[1].mean() < image.shape[1] / 2


@pytest.mark.parametrize("opacity", [0.0, 0.45, 1.0])
def test_opacity_blends_grey_and_colour(opacity: float) -> None:
    image, labels = _synthetic()
    _check_overlay(image, labels, opacity=opacity, width=1)


def test_the_contour_thickens_with_the_image() -> None:
    image, labels = _synthetic(1024)  # 2 contour pixels at 1024 px
    _check_overlay(image, labels, opacity=0.45, width=2)


def test_a_lung_on_the_image_edge_is_outlined_along_the_edge() -> None:
    image, labels = _synthetic()
    labels[40:80, 0:20] = RIGHT_LUNG  # the right lung reaches the image's left edge
    overlay = render_overlay(image, labels)
    assert (overlay[40:80, 0] == RIGHT_COLOR).all()


def test_out_of_range_and_nan_pixels_are_clipped() -> None:
    image, labels = _synthetic(64)
    image[0, 0], image[0, 1], image[0, 2] = -0.5, 1.7, np.nan
    overlay = render_overlay(image, labels)
    assert overlay[0, 0].tolist() == [0, 0, 0]
    assert overlay[0, 1].tolist() == [255, 255, 255]
    assert overlay[0, 2].tolist() == [0, 0, 0]


def test_no_lungs_gives_the_grey_xray() -> None:
    image, _ = _synthetic(64)
    overlay = render_overlay(image, np.zeros(image.shape, dtype=np.uint8))
    assert np.array_equal(overlay, np.repeat(_grey(image)[..., None], 3, axis=2))


@pytest.mark.parametrize(
    ("image", "labels", "opacity"),
    [
        (np.zeros((8, 8, 3)), np.zeros((8, 8)), 0.5),
        (np.zeros((8, 8)), np.zeros((8, 9)), 0.5),
        (np.zeros((8, 8)), np.zeros((8, 8)), 1.5),
        (np.zeros((8, 8)), np.zeros((8, 8)), -0.1),
    ],
)
def test_bad_arguments_raise(image: np.ndarray, labels: np.ndarray, opacity: float) -> None:
    with pytest.raises(ValueError):
        render_overlay(image, labels, opacity=opacity)
