"""lungseg.postprocess: blobs go, holes close, lungs stay; and `evaluate --postprocess` scores
exactly the post-processed masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lungseg.cli import build_parser
from lungseg.data.dataset import load_full_mask
from lungseg.data.discovery import Pair, discover, load_split, select
from lungseg.evaluate import evaluate, predict_pairs
from lungseg.inference import Segmenter
from lungseg.metrics import MetricAccumulator
from lungseg.postprocess import EIGHT_CONNECTED, postprocess_mask


def _two_lungs() -> np.ndarray:
    """Two rectangles standing in for the lungs on a 60x80 image."""
    mask = np.zeros((60, 80), dtype=bool)
    mask[10:50, 8:32] = True  # 960 px
    mask[12:48, 46:70] = True  # 864 px
    return mask


@pytest.fixture(scope="module")
def test_pairs(data_root: Path, split_file: Path) -> list[Pair]:
    return select(discover(data_root).pairs, load_split(split_file), "test")


@pytest.fixture(scope="module")
def clean_manual_mask(test_pairs: list[Pair]) -> np.ndarray:
    """The first test-split manual mask that already is two lungs without holes."""
    for pair in test_pairs:
        mask = load_full_mask(pair)
        if (
            ndimage.label(mask, EIGHT_CONNECTED)[1] == 2
            and (ndimage.binary_fill_holes(mask) == mask).all()
        ):
            return mask
    raise AssertionError("no clean manual mask in the test split")


def test_small_blobs_go_and_the_two_lungs_stay() -> None:
    lungs = _two_lungs()
    noisy = lungs.copy()
    noisy[55:58, 38:41] = True  # a 9-px blob below the mediastinum
    noisy[2, 2] = True
    assert np.array_equal(postprocess_mask(noisy), lungs)


def test_keep_chooses_how_many_components_survive() -> None:
    lungs = _two_lungs()
    only_largest = np.zeros_like(lungs)
    only_largest[10:50, 8:32] = True
    assert np.array_equal(postprocess_mask(lungs, keep=1), only_largest)
    assert np.array_equal(postprocess_mask(lungs, keep=5), lungs)


def test_holes_are_filled_but_an_open_notch_is_not() -> None:
    lungs = _two_lungs()
    holed = lungs.copy()
    holed[20:30, 15:25] = False  # a cavity inside the right lung
    holed[30, 50] = False  # a one-pixel hole in the left lung
    notched = lungs.copy()
    notched[40:50, 20:32] = False  # a bite out of the lung's outer edge: not a hole
    assert np.array_equal(postprocess_mask(holed), lungs)
    assert np.array_equal(postprocess_mask(notched), notched)


def test_diagonal_neighbours_are_one_component() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 2:5] = True
    mask[5:8, 5:8] = True  # touches the first square at one corner only
    speck = (8, 0)
    mask[speck] = True
    expected = mask.copy()
    expected[speck] = False
    assert np.array_equal(postprocess_mask(mask, keep=1), expected)


def test_empty_and_non_bool_input() -> None:
    empty = postprocess_mask(np.zeros((8, 9), dtype=np.uint8))
    assert empty.dtype == bool and empty.shape == (8, 9) and not empty.any()
    as_255 = _two_lungs().astype(np.uint8) * 255
    result = postprocess_mask(as_255)
    assert result.dtype == bool and np.array_equal(result, _two_lungs())


@pytest.mark.parametrize(
    ("mask", "keep"),
    [(np.zeros((4, 4, 3)), 2), (np.zeros(5), 2), (np.zeros((4, 4)), 0), (np.zeros((4, 4)), 1.5)],
)
def test_bad_arguments_raise(mask: np.ndarray, keep: object) -> None:
    with pytest.raises(ValueError):
        postprocess_mask(mask, keep=keep)  # type: ignore[arg-type]


@pytest.mark.data
def test_a_corrupted_manual_mask_is_restored(clean_manual_mask: np.ndarray) -> None:
    truth = clean_manual_mask
    assert np.array_equal(postprocess_mask(truth), truth)
    rows, cols = np.nonzero(truth)
    row, col = int(rows.mean()), int(cols[cols < truth.shape[1] // 2].mean())
    hole = (slice(row - 12, row + 12), slice(col - 8, col + 8))  # inside the image-left lung
    middle = truth.shape[1] // 2
    blob = (slice(-40, -20), slice(middle - 10, middle + 10))  # below the mediastinum
    assert truth[row - 14 : row + 14, col - 10 : col + 10].all()
    assert not truth[-42:-18, middle - 12 : middle + 12].any()
    corrupted = truth.copy()
    corrupted[hole] = False
    corrupted[blob] = True
    assert np.array_equal(postprocess_mask(corrupted), truth)


@pytest.mark.data
def test_manual_masks_lose_only_specks(test_pairs: list[Pair]) -> None:
    for pair in test_pairs[:12]:
        truth = load_full_mask(pair)
        cleaned = postprocess_mask(truth)
        assert (cleaned ^ truth).sum() < 0.001 * truth.sum(), pair.id


def _scipy_reference(mask: np.ndarray, keep: int) -> np.ndarray:
    """The definition in scipy.ndimage terms: label, keep the largest, binary_fill_holes."""
    labels, count = ndimage.label(mask, EIGHT_CONNECTED)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    largest = np.argsort(-sizes, kind="stable")[:keep] + 1
    return ndimage.binary_fill_holes(np.isin(labels, largest))


@pytest.mark.data
@pytest.mark.parametrize("keep", [1, 2, 3])
def test_same_masks_as_scipy_on_noisy_manual_masks(test_pairs: list[Pair], keep: int) -> None:
    """OpenCV's labelling and flood fill give scipy's masks, specks, holes and ties included."""
    rng = np.random.default_rng(keep)
    for pair in test_pairs[:8]:
        truth = load_full_mask(pair)
        noisy = truth ^ (rng.random(truth.shape) < 0.01)  # specks outside, holes inside
        for mask in (truth, noisy):
            reference = _scipy_reference(mask, keep)
            assert np.array_equal(postprocess_mask(mask, keep=keep), reference), pair.id
    ties = np.zeros((20, 30), dtype=bool)
    ties[2:6, 20:24] = ties[10:14, 2:6] = ties[15:19, 25:29] = True  # three 16-px squares
    assert np.array_equal(postprocess_mask(ties, keep=1), _scipy_reference(ties, 1))
    assert postprocess_mask(ties, keep=1)[2:6, 20:24].all()  # the first in raster order


def test_evaluate_post_processes_by_default_as_predict_does() -> None:
    parser = build_parser()
    assert parser.parse_args(["evaluate", "--data", "d"]).postprocess is True
    assert parser.parse_args(["evaluate", "--data", "d", "--no-postprocess"]).postprocess is False
    assert parser.parse_args(["predict", "x", "-o", "o"]).postprocess is True


@pytest.mark.data
def test_evaluate_postprocess_scores_the_postprocessed_masks(test_pairs: list[Pair]) -> None:
    segmenter = Segmenter.from_pretrained()
    pairs = test_pairs[:3]
    expected = MetricAccumulator()
    raw = MetricAccumulator()
    for item in predict_pairs(segmenter, pairs, progress=False, postprocess=False):
        spacing = item.result.meta.pixel_spacing_mm
        expected.update(
            postprocess_mask(item.result.probabilities > segmenter.threshold),
            item.truth,
            id=item.pair.id,
            source=item.pair.source,
            spacing=spacing,
        )
        raw.update(
            item.result.mask, item.truth, id=item.pair.id, source=item.pair.source, spacing=spacing
        )
    assert evaluate(segmenter, pairs, progress=False).rows() == expected.rows()
    assert evaluate(segmenter, pairs, progress=False, postprocess=False).rows() == raw.rows()
