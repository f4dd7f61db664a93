"""lungseg.metrics: exact values on hand-made masks, the empty-mask table, surface distances
against an independent brute force, and the accumulator against plain numpy."""

from __future__ import annotations

import pickle
from fractions import Fraction

import numpy as np
import pytest
from scipy import ndimage

from lungseg import metrics
from lungseg.metrics import METRIC_NAMES, MetricAccumulator, compute_metrics

NAN = float("nan")

# 4x4 case: tp = 3, fp = 2, fn = 1, tn = 10.
TRUTH_4X4 = np.array(
    [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    dtype=bool,
)
PRED_4X4 = np.array(
    [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]],
    dtype=bool,
)


def _blob(seed: int, shape: tuple[int, int] = (40, 48), fraction: float = 0.3) -> np.ndarray:
    """A smooth random mask (several irregular components) covering about `fraction` of it."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma=3)
    return field > np.quantile(field, 1 - fraction)


def _brute_boundary(mask: np.ndarray) -> np.ndarray:
    """(row, col) of foreground pixels with a background 4-neighbour; outside is background."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return np.argwhere(mask & ~interior)


def _brute_surface(pred, truth, spacing=(1.0, 1.0)) -> tuple[float, float]:
    """HD95 (max of directed 95th percentiles) and ASSD from all pairwise boundary distances."""
    a = _brute_boundary(pred) * np.asarray(spacing)
    b = _brute_boundary(truth) * np.asarray(spacing)
    pairwise = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))
    a_to_b, b_to_a = pairwise.min(axis=1), pairwise.min(axis=0)
    hd = max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95))
    return float(hd), float(np.concatenate([a_to_b, b_to_a]).mean())


def _edt_surface(pred, truth, spacing=None) -> tuple[float, float]:
    """MONAI's algorithm: edges by erosion, distances read off distance_transform_edt."""
    pred_edges = pred ^ ndimage.binary_erosion(pred)
    truth_edges = truth ^ ndimage.binary_erosion(truth)
    a_to_b = ndimage.distance_transform_edt(~truth_edges, sampling=spacing)[pred_edges]
    b_to_a = ndimage.distance_transform_edt(~pred_edges, sampling=spacing)[truth_edges]
    hd = max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95))
    return float(hd), float(np.concatenate([a_to_b, b_to_a]).mean())


def _square(shift: tuple[int, int] = (0, 0), size: int = 12, shape=(40, 40)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    top, left = 10 + shift[0], 10 + shift[1]
    mask[top : top + size, left : left + size] = True
    return mask


def _flat(value, prefix: str = "") -> dict:
    """Nested dicts/lists as one flat dict, since pytest.approx does not recurse."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat = {}
    for key, item in items:
        flat |= _flat(item, f"{prefix}/{key}")
    return flat


def assert_close(actual, expected, rel: float = 1e-12) -> None:
    """Same keys and strings; numbers equal to `rel`, NaN equal to NaN."""
    actual, expected = _flat(actual), _flat(expected)
    strings = {key for key, value in expected.items() if isinstance(value, str)}
    assert {k: actual.get(k) for k in strings} == {k: expected[k] for k in strings}
    numbers = {k: v for k, v in actual.items() if k not in strings}
    assert numbers == pytest.approx({k: expected[k] for k in numbers}, rel=rel, nan_ok=True)
    assert actual.keys() == expected.keys()


def test_confusion_counts_the_4x4_case():
    assert metrics.confusion(PRED_4X4, TRUTH_4X4) == (3, 2, 1, 10)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dice", Fraction(6, 9)),
        ("iou", Fraction(3, 6)),
        ("accuracy", Fraction(13, 16)),
        ("precision", Fraction(3, 5)),
        ("recall", Fraction(3, 4)),
        ("specificity", Fraction(10, 12)),
    ],
)
def test_overlap_metrics_on_the_4x4_case(name, expected):
    function = getattr(metrics, name)
    assert function(PRED_4X4, TRUTH_4X4) == pytest.approx(float(expected), abs=1e-15)
    assert compute_metrics(PRED_4X4, TRUTH_4X4)[name] == pytest.approx(float(expected), abs=1e-15)


def test_any_nonzero_value_is_foreground():
    as_png = TRUTH_4X4.astype(np.uint8) * 255
    assert metrics.confusion(PRED_4X4.astype(np.float32), as_png) == (3, 2, 1, 10)


@pytest.mark.parametrize(
    ("pred", "truth", "spacing", "match"),
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), None, "differs from truth shape"),
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), None, "2-D"),
        (np.zeros((0, 4)), np.zeros((0, 4)), None, "non-empty"),
        (TRUTH_4X4, TRUTH_4X4, (1.0,), "row_mm, col_mm"),
        (TRUTH_4X4, TRUTH_4X4, (1.0, 0.0), "positive"),
        (TRUTH_4X4, TRUTH_4X4, (1.0, NAN), "positive"),
    ],
)
def test_bad_inputs_are_refused(pred, truth, spacing, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(pred, truth, spacing)


_EMPTY, _FULL = np.zeros((6, 6), bool), np.ones((6, 6), bool)
_SOME = np.zeros((6, 6), bool)
_SOME[1:4, 2:5] = True  # 9 pixels
_SOME_IN_FULL = _brute_surface(_SOME, _FULL)  # HD95, ASSD: no 0/0 there, just the formula


@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [
        pytest.param(
            _EMPTY, _EMPTY, dict.fromkeys(METRIC_NAMES[:6], 1.0) | {"hd95": 0.0, "assd": 0.0},
            id="both-empty",
        ),
        pytest.param(
            _EMPTY, _SOME,
            {"dice": 0, "iou": 0, "accuracy": 27 / 36, "precision": 0, "recall": 0,
             "specificity": 1, "hd95": NAN, "assd": NAN},
            id="prediction-empty",
        ),
        pytest.param(
            _SOME, _EMPTY,
            {"dice": 0, "iou": 0, "accuracy": 27 / 36, "precision": 0, "recall": 0,
             "specificity": 27 / 36, "hd95": NAN, "assd": NAN},
            id="truth-empty",
        ),
        pytest.param(
            _FULL, _EMPTY,
            {"dice": 0, "iou": 0, "accuracy": 0, "precision": 0, "recall": 0,
             "specificity": 0, "hd95": NAN, "assd": NAN},
            id="prediction-full-truth-empty",
        ),
        pytest.param(
            _FULL, _FULL, dict.fromkeys(METRIC_NAMES[:6], 1.0) | {"hd95": 0.0, "assd": 0.0},
            id="both-full",
        ),
        pytest.param(
            _SOME, _FULL,
            {"dice": 18 / 45, "iou": 9 / 36, "accuracy": 9 / 36, "precision": 1, "recall": 9 / 36,
             "specificity": 0, "hd95": _SOME_IN_FULL[0], "assd": _SOME_IN_FULL[1]},
            id="truth-full-prediction-not",
        ),
        pytest.param(
            _EMPTY, _FULL,
            {"dice": 0, "iou": 0, "accuracy": 0, "precision": 0, "recall": 0,
             "specificity": 0, "hd95": NAN, "assd": NAN},
            id="prediction-empty-truth-full",
        ),
    ],
)  # fmt: skip
def test_empty_and_full_mask_conventions(pred, truth, expected):
    assert compute_metrics(pred, truth) == pytest.approx(expected, nan_ok=True)
    assert metrics.hd95(pred, truth) == pytest.approx(expected["hd95"], nan_ok=True)
    assert metrics.assd(pred, truth) == pytest.approx(expected["assd"], nan_ok=True)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("axis", [0, 1])
def test_hd95_of_a_square_shifted_by_k_pixels_is_k(k, axis):
    shift = (k, 0) if axis == 0 else (0, k)
    assert metrics.hd95(_square(shift), _square()) == pytest.approx(k)
    assert metrics.hd95(_square(), _square(shift)) == pytest.approx(k)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize(("axis", "mm_per_pixel"), [(0, 2.0), (1, 0.5)])
def test_anisotropic_spacing_scales_each_axis_by_its_own_pixel_size(k, axis, mm_per_pixel):
    shift = (k, 0) if axis == 0 else (0, k)
    result = compute_metrics(_square(shift), _square(), spacing=(2.0, 0.5))
    assert result["hd95"] == pytest.approx(k)
    assert result["hd95_mm"] == pytest.approx(k * mm_per_pixel)
    assert metrics.hd95(_square(shift), _square(), (2.0, 0.5)) == pytest.approx(k * mm_per_pixel)
    expected_assd = _brute_surface(_square(shift), _square(), (2.0, 0.5))[1]
    assert result["assd_mm"] == pytest.approx(expected_assd)


def test_millimetre_keys_appear_only_with_a_spacing():
    assert set(compute_metrics(PRED_4X4, TRUTH_4X4)) == set(METRIC_NAMES)
    with_mm = compute_metrics(PRED_4X4, TRUTH_4X4, spacing=(0.5, 0.5))
    assert set(with_mm) == {*METRIC_NAMES, "hd95_mm", "assd_mm"}
    assert with_mm["hd95_mm"] == pytest.approx(0.5 * with_mm["hd95"])
    assert with_mm["assd_mm"] == pytest.approx(0.5 * with_mm["assd"])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spacing", [None, (2.0, 0.5), (0.7, 0.7)])
def test_surface_distances_match_brute_force_and_monai_style_edt(seed, spacing):
    pred, truth = _blob(seed), _blob(seed + 100)
    result = compute_metrics(pred, truth, spacing)
    hd_key, assd_key = ("hd95", "assd") if spacing is None else ("hd95_mm", "assd_mm")
    brute = _brute_surface(pred, truth, spacing or (1.0, 1.0))
    edt = _edt_surface(pred, truth, spacing)
    assert (result[hd_key], result[assd_key]) == pytest.approx(brute, rel=1e-9)
    assert (result[hd_key], result[assd_key]) == pytest.approx(edt, rel=1e-9)


def test_surface_distances_on_masks_touching_the_image_border():
    pred, truth = _blob(7, fraction=0.6), _blob(8, fraction=0.6)
    assert pred[0].any() and truth[:, -1].any()  # the border must count as boundary
    assert (metrics.hd95(pred, truth), metrics.assd(pred, truth)) == pytest.approx(
        _brute_surface(pred, truth), rel=1e-9
    )


@pytest.mark.parametrize("seed", range(5))
def test_f1_from_precision_and_recall_is_dice(seed):
    pred, truth = _blob(seed), _blob(seed + 50)
    result = compute_metrics(pred, truth)
    p, r = result["precision"], result["recall"]
    assert 2 * p * r / (p + r) == pytest.approx(result["dice"], rel=1e-12)


def _images() -> list[tuple[np.ndarray, np.ndarray, str, str]]:
    """Six scored images from two sources; one has an empty prediction (NaN distances)."""
    images = [(_blob(s), _blob(s + 10), f"a/{s}", "a") for s in range(3)]
    images += [(_blob(s, (30, 30), 0.5), _blob(s + 20, (30, 30), 0.4), f"b/{s}", "b")
               for s in range(2)]  # fmt: skip
    images.append((np.zeros((30, 30), bool), _blob(9, (30, 30)), "b/empty", "b"))
    return images


def _filled(images) -> MetricAccumulator:
    accumulator = MetricAccumulator()
    for pred, truth, image_id, source in images:
        accumulator.update(pred, truth, id=image_id, source=source)
    return accumulator


def _expected_summary(images) -> dict:
    per_image = [compute_metrics(pred, truth) for pred, truth, _, _ in images]
    table = {name: np.array([row[name] for row in per_image]) for name in METRIC_NAMES}
    tp = sum(int((p & t).sum()) for p, t, _, _ in images)
    fp = sum(int((p & ~t).sum()) for p, t, _, _ in images)
    fn = sum(int((~p & t).sum()) for p, t, _, _ in images)
    tn = sum(int((~p & ~t).sum()) for p, t, _, _ in images)
    return {
        "n": len(images),
        "mean": {name: np.nanmean(values) for name, values in table.items()},
        "std": {name: np.nanstd(values) for name, values in table.items()},
        "pooled": {
            "dice": 2 * tp / (2 * tp + fp + fn),
            "iou": tp / (tp + fp + fn),
            "accuracy": (tp + tn) / (tp + fp + fn + tn),
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "specificity": tn / (tn + fp),
        },
        "undefined": {name: int(np.isnan(values).sum()) for name, values in table.items()},
    }


def test_accumulator_matches_numpy_overall_and_per_source():
    images = _images()
    summary = _filled(images).aggregate()
    per_source = summary.pop("per_source")
    assert_close(summary, _expected_summary(images))
    assert summary["undefined"]["hd95"] == 1 and summary["undefined"]["dice"] == 0
    assert list(per_source) == ["a", "b"]
    for source, group in per_source.items():
        expected = _expected_summary([image for image in images if image[3] == source])
        assert_close(group, expected)


def test_accumulator_update_returns_and_rows_keep_each_image():
    images = _images()
    accumulator = MetricAccumulator()
    returned = [accumulator.update(p, t, id=i, source=s) for p, t, i, s in images]
    rows = accumulator.rows()
    assert [row["id"] for row in rows] == [image[2] for image in images]
    for row, image, result in zip(rows, images, returned, strict=True):
        assert_close(result, compute_metrics(image[0], image[1]))
        assert_close(row, {"id": image[2], "source": image[3], **result})


def test_accumulator_reports_millimetres_when_given_a_spacing():
    accumulator = MetricAccumulator()
    accumulator.update(_square((2, 0)), _square(), id="x", spacing=(2.0, 0.5))
    summary = accumulator.aggregate()
    assert summary["mean"]["hd95_mm"] == pytest.approx(4.0)
    assert summary["mean"]["hd95"] == pytest.approx(2.0)


def test_accumulator_refuses_a_repeated_id_and_forgets_on_reset():
    accumulator = _filled(_images())
    with pytest.raises(ValueError, match="already scored"):
        accumulator.update(PRED_4X4, TRUTH_4X4, id="a/0")
    accumulator.reset()
    assert accumulator.rows() == []
    with pytest.raises(ValueError, match="no images"):
        accumulator.aggregate()
    accumulator.update(PRED_4X4, TRUTH_4X4, id="a/0")
    assert accumulator.aggregate()["n"] == 1


def test_merged_shards_equal_one_accumulator():
    images = _images()
    shards = [_filled(images[:4]).state(), _filled(images[3:]).state()]  # a/0..b/0 and b/0 again
    shards = pickle.loads(pickle.dumps(shards))  # what all_gather_object does to them
    merged = MetricAccumulator()
    for shard in shards:
        merged.extend(shard)
    single = _filled(images)
    assert_close(merged.rows(), single.rows())
    assert_close(merged.aggregate(), single.aggregate())
    assert merged.aggregate()["n"] == len(images)  # the padded duplicate counted once


def test_extend_refuses_records_that_are_not_metric_records():
    with pytest.raises(ValueError, match="missing"):
        MetricAccumulator().extend([{"id": "x", "source": "a", "dice": 1.0}])


@pytest.mark.data
def test_real_masks_match_brute_force(data_root):
    from PIL import Image

    masks = sorted((data_root / "montgomery" / "masks").glob("*.png"))[:2]
    pred, truth = (np.asarray(Image.open(path)) > 0 for path in masks)
    result = compute_metrics(pred, truth, spacing=(0.35, 0.35))
    assert (result["hd95"], result["assd"]) == pytest.approx(_brute_surface(pred, truth), rel=1e-9)
    assert result["hd95_mm"] == pytest.approx(0.35 * result["hd95"])
    assert compute_metrics(truth, truth) == pytest.approx(
        dict.fromkeys(METRIC_NAMES[:6], 1.0) | {"hd95": 0.0, "assd": 0.0}
    )
