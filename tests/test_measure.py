"""lungseg.measure: sides by anatomy, areas in pixels and cm2, and the quality flag, on real
manual masks and on masks built to trip each reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lungseg.data.dataset import load_full_mask
from lungseg.data.discovery import Pair, discover, load_split, select
from lungseg.measure import (
    LEFT_LUNG,
    MIN_LUNG_FRACTION,
    RIGHT_LUNG,
    LungMeasurements,
    lung_labels,
    measure_lungs,
)
from lungseg.postprocess import EIGHT_CONNECTED

COLUMNS = (
    "area_px",
    "right_area_px",
    "left_area_px",
    "area_cm2",
    "right_area_cm2",
    "left_area_cm2",
    "components",
    "quality",
    "reason",
    "notes",
    "heart_area_px",
    "heart_area_cm2",
    "ctr",
    "cardiomegaly",
    "estimated_dice",
)
# Manual masks that scripts/lung_mask_stats.py reports as flagged, each for a visible reason.
FLAGGED_MANUAL = {
    "montgomery/MCUCXR_0022_0",
    "montgomery/MCUCXR_0030_0",
    "montgomery/MCUCXR_0031_0",
    "montgomery/MCUCXR_0089_0",
    "montgomery/MCUCXR_0090_0",
    "shenzhen/CHNCXR_0361_1",
    "shenzhen/CHNCXR_0533_1",
    "shenzhen/CHNCXR_0603_1",
    "shenzhen/CHNCXR_0606_1",
}


def _lungs(shape: tuple[int, int] = (200, 200)) -> np.ndarray:
    """Two rectangular 'lungs' either side of a mediastinum, 36% of a 200x200 image together."""
    mask = np.zeros(shape, dtype=bool)
    mask[30:170, 20:90] = True  # image left: the patient's right lung, 9800 px
    mask[40:170, 115:185] = True  # image right: the patient's left lung, 9100 px
    return mask


@pytest.fixture(scope="module")
def pairs(data_root: Path) -> dict[str, Pair]:
    return {pair.id: pair for pair in discover(data_root).pairs}


@pytest.fixture(scope="module")
def test_masks(pairs: dict[str, Pair], split_file: Path) -> dict[str, np.ndarray]:
    """The first 30 manual masks of the paper split's test subset."""
    test = select(list(pairs.values()), load_split(split_file), "test")[:30]
    return {pair.id: load_full_mask(pair) for pair in test}


@pytest.fixture(scope="module")
def manual(test_masks: dict[str, np.ndarray]) -> np.ndarray:
    """A plausible manual mask: the first test mask measured "ok" with exactly two components."""
    for mask in test_masks.values():
        if measure_lungs(mask).quality == "ok" and ndimage.label(mask, EIGHT_CONNECTED)[1] == 2:
            return mask
    raise AssertionError("no clean manual mask among the first 30 test masks")


# --- sides ---------------------------------------------------------------------------------


def test_the_image_left_lung_is_the_patients_right() -> None:
    mask = _lungs()
    labels = lung_labels(mask)
    assert labels.dtype == np.uint8 and labels.shape == mask.shape
    assert (labels[30:170, 20:90] == RIGHT_LUNG).all()
    assert (labels[40:170, 115:185] == LEFT_LUNG).all()
    assert (labels[~mask] == 0).all()


@pytest.mark.data
def test_real_masks_right_lung_on_image_left_and_flipping_swaps(
    test_masks: dict[str, np.ndarray],
) -> None:
    for pair_id, mask in test_masks.items():
        labels = lung_labels(mask)
        right_cols = np.nonzero(labels == RIGHT_LUNG)[1]
        left_cols = np.nonzero(labels == LEFT_LUNG)[1]
        assert right_cols.max() < left_cols.min(), pair_id  # no overlap: cut in the mediastinum
        components, _ = ndimage.label(mask, EIGHT_CONNECTED)
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            # every component, specks included, lies wholly on one side
            assert np.unique(labels[box][components[box] == index]).size == 1, pair_id
        swapped = np.choose(labels, [0, LEFT_LUNG, RIGHT_LUNG]).astype(np.uint8)
        assert np.array_equal(lung_labels(mask[:, ::-1]), swapped[:, ::-1]), pair_id


@pytest.mark.data
def test_a_lung_across_the_image_centre_is_not_split(pairs: dict[str, Pair]) -> None:
    # Its right lung reaches past the image's centre column; cutting there would split it.
    mask = load_full_mask(pairs["montgomery/MCUCXR_0002_0"])
    components, count = ndimage.label(mask, EIGHT_CONNECTED)
    centre = mask.shape[1] // 2
    assert any(
        (components[:, :centre] == i).any() and (components[:, centre:] == i).any()
        for i in range(1, count + 1)
    )
    labels = lung_labels(mask)
    for index in range(1, count + 1):
        assert np.unique(labels[components == index]).size == 1


def test_narrow_lungs_far_from_the_band_edges() -> None:
    # Lateral background inside the central band is wider than the mediastinum (as in the
    # framed montgomery/MCUCXR_0060_0): the gap between the lungs must still win.
    mask = np.zeros((200, 400), dtype=bool)
    mask[60:150, 130:185] = True
    mask[60:150, 205:250] = True
    labels = lung_labels(mask)
    assert (labels[:, 130:185][mask[:, 130:185]] == RIGHT_LUNG).all()
    assert (labels[:, 205:250][mask[:, 205:250]] == LEFT_LUNG).all()


@pytest.mark.parametrize("side", [RIGHT_LUNG, LEFT_LUNG])
def test_a_single_lung_keeps_its_side(side: int) -> None:
    mask = _lungs()
    single = mask & (lung_labels(mask) == side)
    # Widen it across the image centre: still one lung, on its own side.
    if side == RIGHT_LUNG:
        single[30:170, 90:110] = True
    else:
        single[40:170, 90:115] = True
    labels = lung_labels(single)
    assert (labels[single] == side).all()
    assert not (labels == (LEFT_LUNG if side == RIGHT_LUNG else RIGHT_LUNG)).any()


def test_bridged_lungs_are_split_at_the_narrowest_column() -> None:
    mask = _lungs()
    mask[150:160, 90:115] = True  # a bridge across the mediastinum: one component
    assert ndimage.label(mask, EIGHT_CONNECTED)[1] == 1
    labels = lung_labels(mask)
    assert (labels[30:170, 20:90] == RIGHT_LUNG).all()
    assert (labels[40:170, 115:185] == LEFT_LUNG).all()


def test_a_speck_in_the_mediastinum_does_not_move_the_cut() -> None:
    mask = _lungs()
    mask[100, 100] = True
    labels = lung_labels(mask)
    assert (labels[30:170, 20:90] == RIGHT_LUNG).all()
    assert (labels[40:170, 115:185] == LEFT_LUNG).all()


# --- areas ---------------------------------------------------------------------------------


def test_areas_in_pixels_and_cm2() -> None:
    mask = _lungs()
    plain = measure_lungs(mask)
    assert (plain.area_px, plain.right_area_px, plain.left_area_px) == (18900, 9800, 9100)
    assert plain.area_cm2 is plain.right_area_cm2 is plain.left_area_cm2 is None
    spaced = measure_lungs(mask, pixel_spacing_mm=(2.0, 1.0))  # 2 mm2 = 0.02 cm2 per pixel
    assert spaced.area_cm2 == pytest.approx(378.0)
    assert spaced.right_area_cm2 == pytest.approx(196.0)
    assert spaced.left_area_cm2 == pytest.approx(182.0)
    assert (spaced.components, spaced.quality, spaced.reason) == (2, "ok", "")


def test_as_row_is_flat_and_in_column_order() -> None:
    row = measure_lungs(_lungs(), (2.0, 1.0)).as_row()
    assert tuple(row) == COLUMNS
    assert row["area_px"] == 18900 and row["quality"] == "ok"
    assert all(not isinstance(value, dict | list) for value in row.values())


@pytest.mark.data
def test_real_mask_areas_add_up(manual: np.ndarray) -> None:
    result = measure_lungs(manual, (0.7, 0.7))
    assert result.area_px == manual.sum() == result.right_area_px + result.left_area_px
    assert result.area_cm2 == pytest.approx(manual.sum() * 0.0049)
    assert 0.6 < result.right_area_px / result.left_area_px < 1.7


# --- quality -------------------------------------------------------------------------------


@pytest.mark.data
def test_manual_masks_are_ok(test_masks: dict[str, np.ndarray]) -> None:
    checked = {pid: measure_lungs(m) for pid, m in test_masks.items() if pid not in FLAGGED_MANUAL}
    assert len(checked) >= 25
    not_ok = {pid: r.reason for pid, r in checked.items() if r.quality != "ok"}
    assert not_ok == {}


@pytest.mark.data
@pytest.mark.parametrize(
    ("pair_id", "reason"),
    [
        ("shenzhen/CHNCXR_0603_1", "left lung much smaller than the right"),
        ("shenzhen/CHNCXR_0361_1", "3 lung-sized regions, expected 2"),
    ],
)
def test_flagged_manual_masks_say_why(pairs: dict[str, Pair], pair_id: str, reason: str) -> None:
    result = measure_lungs(load_full_mask(pairs[pair_id]))
    assert result.quality == "check"
    assert reason in result.reason


def test_empty_mask() -> None:
    result = measure_lungs(np.zeros((64, 64), dtype=bool), (1.0, 1.0))
    assert result == LungMeasurements(0, 0, 0, 0.0, 0.0, 0.0, 0, "check", "no lung found")


@pytest.mark.data
def test_specks_count_as_components_but_not_as_lungs(manual: np.ndarray) -> None:
    middle = manual.shape[1] // 2
    assert not manual[-32:-28, middle - 2 : middle + 3].any()
    mask = manual.copy()
    mask[-30, middle] = True
    result = measure_lungs(mask)
    assert result.components == 3
    assert result.quality == "ok"


@pytest.mark.data
def test_a_third_lung_sized_region_is_flagged(manual: np.ndarray) -> None:
    mask = manual.copy()
    side = int(np.ceil(np.sqrt(MIN_LUNG_FRACTION * mask.size)))
    middle = mask.shape[1] // 2
    assert not mask[-side - 10 : -8, middle - side : middle + side].any()
    mask[-side - 8 : -8, middle - side // 2 : middle - side // 2 + side] = True
    result = measure_lungs(mask)
    assert result.quality == "check"
    assert result.reason == "3 lung-sized regions, expected 2"


@pytest.mark.data
def test_bridged_lungs_are_flagged_and_keep_their_areas(manual: np.ndarray) -> None:
    before = measure_lungs(manual)
    mask = manual.copy()
    labels = lung_labels(manual)
    row = int(np.nonzero(manual.any(axis=1))[0].mean())
    right_edge = np.nonzero(labels[row] == RIGHT_LUNG)[0].max()
    left_edge = np.nonzero(labels[row] == LEFT_LUNG)[0].min()
    gap = slice(right_edge, left_edge + 1)
    mask[row : row + 3, gap] = True  # join the lungs across the mediastinum
    result = measure_lungs(mask)
    assert result.components == 1 and result.quality == "check"
    assert result.reason == "1 lung-sized region, expected 2"
    assert result.right_area_px == pytest.approx(before.right_area_px, rel=0.02)
    assert result.left_area_px == pytest.approx(before.left_area_px, rel=0.02)


@pytest.mark.data
def test_a_missing_lung_is_flagged(manual: np.ndarray) -> None:
    mask = manual & (lung_labels(manual) == RIGHT_LUNG)
    result = measure_lungs(mask)
    assert result.left_area_px == 0 and result.right_area_px == mask.sum()
    assert result.quality == "check"
    assert "1 lung-sized region, expected 2" in result.reason
    assert "no left lung" in result.reason


@pytest.mark.data
def test_a_shrunken_lung_is_flagged(manual: np.ndarray) -> None:
    mask = manual.copy()
    left = lung_labels(manual) == LEFT_LUNG
    rows = np.nonzero(left.any(axis=1))[0]
    cut = rows[0] + (rows[-1] - rows[0]) // 5
    mask[cut:] &= ~left[cut:]  # keep only the top fifth of the left lung
    result = measure_lungs(mask)
    assert result.quality == "check"
    assert "left lung much smaller than the right (right/left area ratio" in result.reason


def test_area_far_outside_the_normal_range() -> None:
    small = np.zeros((400, 400), dtype=bool)
    small[150:200, 100:130] = True
    small[150:200, 270:300] = True  # 3000 px: 1.9% of the image
    assert measure_lungs(small).reason == ("lung area 1.9% of the image, outside the normal 6%-55%")
    large = np.zeros((100, 100), dtype=bool)
    large[2:98, 2:48] = True
    large[2:98, 52:98] = True  # 88% of the image
    assert "outside the normal 6%-55%" in measure_lungs(large).reason


def test_lungs_cut_by_the_border_are_noted_not_flagged() -> None:
    """A field of view that cuts the lungs makes the areas partial, not the mask wrong: a note,
    and the whole-lung rules (here: one lung cut away entirely) are not applied."""
    mask = _lungs()
    mask[0:31, 40:42] = True  # the right lung's apex reaches the top edge
    result = measure_lungs(mask)
    assert result.quality == "ok" and result.reason == ""
    assert result.notes.startswith("lungs cut by the image border (2 border pixels)")
    one_side = _lungs()[:, :100]  # a crop that keeps the right lung only, cut at the top
    one_side[0:30, 40:42] = True
    result = measure_lungs(one_side)
    assert result.quality == "ok" and "cut by the image border" in result.notes
    uncut = measure_lungs(_lungs()[:, :100])  # the same lung clear of the border: implausible
    assert uncut.quality == "check" and "1 lung-sized region, expected 2" in uncut.reason


@pytest.mark.data
def test_a_manual_mask_cut_by_the_border_gets_the_note(pairs: dict[str, Pair]) -> None:
    result = measure_lungs(load_full_mask(pairs["montgomery/MCUCXR_0030_0"]))
    assert result.quality == "ok"
    assert result.notes.startswith("lungs cut by the image border (57 border pixels)")


@pytest.mark.parametrize("spacing", [(0.0, 1.0), (1.0,), (1.0, float("nan")), (-1.0, 1.0)])
def test_bad_spacing_raises(spacing: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="pixel spacing"):
        measure_lungs(_lungs(), spacing)  # type: ignore[arg-type]


def test_non_2d_masks_raise() -> None:
    with pytest.raises(ValueError, match="2-D"):
        lung_labels(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="2-D"):
        measure_lungs(np.zeros(16))
