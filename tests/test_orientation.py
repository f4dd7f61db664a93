"""Mirrored and upside-down films are flagged, and with fix_orientation segmented upright."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.data.dataset import load_full_mask
from lungseg.data.io import read_image
from lungseg.data.masks import read_mask
from lungseg.inference import Segmenter
from lungseg.measure import LEFT_LUNG, RIGHT_LUNG
from lungseg.metrics import dice
from lungseg.orientation import apply_flip, check_orientation

pytestmark = pytest.mark.data


def test_manual_masks_are_upright_and_flipped_ones_are_not(test_split_pairs: list) -> None:
    masks = [load_full_mask(pair) for pair in test_split_pairs[::5]]
    upright = [check_orientation(mask).upside_down for mask in masks]
    flipped = [check_orientation(mask[::-1]).upside_down for mask in masks]
    assert not any(upright)
    assert np.mean(flipped) >= 0.9, np.mean(flipped)


def test_the_heart_side_tells_a_mirrored_film(data_root) -> None:
    from lungseg.data.discovery import discover

    pairs = [p for p in discover(data_root / "wingspan").pairs if p.heart is not None][::4]
    upright, mirrored = [], []
    for pair in pairs:
        lungs, heart = load_full_mask(pair), read_mask(pair.heart)
        upright.append(check_orientation(lungs, heart).mirrored)
        mirrored.append(check_orientation(lungs[:, ::-1], heart[:, ::-1]).mirrored)
    assert np.mean(upright) <= 0.02 and np.mean(mirrored) >= 0.9, (
        np.mean(upright),
        np.mean(mirrored),
    )
    assert check_orientation(lungs).mirrored is None  # no heart: not claimed


def test_flips_are_their_own_inverse() -> None:
    array = np.arange(12).reshape(3, 4)
    for flip in ("none", "horizontal", "vertical", "rotate180"):
        assert np.array_equal(apply_flip(apply_flip(array, flip), flip), array)


def test_an_upside_down_film_is_flagged_and_fixed(test_split_pairs: list) -> None:
    pair = test_split_pairs[0]
    image = read_image(pair.image)[0]
    truth = load_full_mask(pair)
    segmenter = Segmenter.from_pretrained()
    rotated = np.ascontiguousarray(image[::-1, ::-1])
    flagged = segmenter(rotated)
    assert flagged.measurements.quality == "check"
    assert "upside down" in flagged.measurements.reason

    fixed = segmenter(rotated, fix_orientation=True)
    assert "orientation corrected (rotated by 180 degrees)" in fixed.measurements.reason
    assert dice(fixed.mask, truth[::-1, ::-1]) > 0.9
    upright = segmenter(image)
    # The patient's right lung keeps its name: it is on the image's right in the rotated film.
    right = np.argwhere(fixed.labels == RIGHT_LUNG)[:, 1].mean()
    left = np.argwhere(fixed.labels == LEFT_LUNG)[:, 1].mean()
    assert right > left
    assert dice(fixed.labels[::-1, ::-1] == RIGHT_LUNG, upright.labels == RIGHT_LUNG) > 0.9
