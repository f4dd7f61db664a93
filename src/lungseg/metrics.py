"""Segmentation metrics for binary lung masks, per image and aggregated.

Every metric is a plain function of two masks at the ORIGINAL image resolution (numpy arrays of
shape (H, W); any non-zero value is foreground), and :class:`MetricAccumulator` collects them over
a test set the way MONAI's metrics do (``update`` / ``aggregate`` / ``reset``).

F1 is not reported separately: for one pair of masks F1 = 2PR / (P + R) = 2TP / (2TP + FP + FN),
which IS the Dice coefficient. (The MSAG-UNet paper's table lists F1 0.83 next to Dice 0.92, which
cannot both hold for the same masks; we report Dice once.)

Surface distances follow MONAI (``get_mask_edges`` + ``compute_hausdorff_distance`` /
``compute_average_surface_distance``), so numbers can be compared with it:

* boundary of a mask = mask XOR its binary erosion with the 3x3 cross (4-connectivity, scipy's
  default structure); pixels on the image border count as boundary (outside is background);
* distances are boundary-to-boundary, exact Euclidean in physical units (row * row_mm,
  col * col_mm), so anisotropic spacing is handled; they equal MONAI's
  ``distance_transform_edt(~edges, sampling=spacing)`` but come from a k-d tree over the boundary
  pixels (``scipy.spatial.KDTree``), whose cost follows the boundary length, not the image area;
* HD95 = max of the two DIRECTED 95th percentiles (pred -> truth and truth -> pred, linear
  interpolation), as MONAI's ``compute_hausdorff_distance(percentile=95)``; it is not the 95th
  percentile of the pooled distances;
* ASSD = mean of the pooled distances of both directions (sum of both / number of boundary
  pixels of both masks).

Empty masks. A ratio whose denominator counts no pixels (0/0) scores 1 when the prediction equals
the truth (FP = FN = 0) and 0 otherwise: there was nothing to measure, so the score says whether the
prediction was right. Specificity is recall of the background and follows the same rule. Surface
distances need a boundary on both sides; with one side empty they are undefined (NaN), and
aggregates leave them out of means and count them under ``"undefined"``.

==============================  =====  =====  =========  ======  ===========  =====  =====
case                            dice   iou    precision  recall  specificity  hd95   assd
==============================  =====  =====  =========  ======  ===========  =====  =====
both empty                      1 (a)  1 (a)  1 (a)      1 (a)   1            0      0
prediction empty, truth not     0      0      0 (a)      0       formula      NaN    NaN
truth empty, prediction not     0      0      0          0 (a)   formula      NaN    NaN
both all-foreground             1      1      1          1       1 (a)        0 [1]  0 [1]
truth all-foreground, pred not  formula                          0 (a)        formula / NaN
==============================  =====  =====  =========  ======  ===========  =====  =====

(a) the 0/0 case, settled by the rule above; "formula" means the ordinary definition applies.
[1] Both boundaries are the image border, so the distances are 0. Accuracy is always defined.
Arrays with no pixels at all, or that are not 2-D, raise ``ValueError``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
from scipy import ndimage
from scipy.spatial import KDTree

__all__ = [
    "METRIC_NAMES",
    "MetricAccumulator",
    "accuracy",
    "assd",
    "compute_metrics",
    "confusion",
    "dice",
    "hd95",
    "iou",
    "precision",
    "recall",
    "selection_mean",
    "specificity",
]

logger = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = (
    "dice",
    "iou",
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "hd95",
    "assd",
)
_OVERLAP_NAMES = METRIC_NAMES[:6]  # the ones that can be pooled from summed confusion counts
_COUNT_NAMES = ("tp", "fp", "fn", "tn")
_HD_PERCENTILE = 95.0
_CROSS = ndimage.generate_binary_structure(2, 1)  # 3x3 cross, MONAI's get_mask_edges default


def _as_mask_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays, checked to be 2-D, non-empty and the same shape."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction shape {pred.shape} differs from truth shape {truth.shape}; "
            "resize the prediction back to the original image size before scoring"
        )
    if pred.ndim != 2 or pred.size == 0:
        raise ValueError(
            f"masks must be non-empty 2-D arrays (H, W), got shape {pred.shape}; "
            "squeeze batch/channel axes first"
        )
    return pred.astype(bool, copy=False), truth.astype(bool, copy=False)


def confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel counts (tp, fp, fn, tn) of a predicted mask against the truth.

    Raises:
        ValueError: if the shapes differ or the masks are not non-empty 2-D arrays.
    """
    pred, truth = _as_mask_pair(pred, truth)
    tp = int(np.count_nonzero(pred & truth))
    predicted, actual = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    fp, fn = predicted - tp, actual - tp
    return tp, fp, fn, pred.size - tp - fp - fn


def _ratio(numerator: int, denominator: int, *, exact: bool) -> float:
    # 0/0: nothing to measure, so score whether the prediction was exactly right (module table).
    if denominator == 0:
        return 1.0 if exact else 0.0
    return numerator / denominator


def _overlap_scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """The six count-based metrics; shared by per-image scores and pooled aggregates."""
    exact = fp == 0 and fn == 0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, exact=exact),
        "iou": _ratio(tp, tp + fp + fn, exact=exact),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, exact=exact),
        "precision": _ratio(tp, tp + fp, exact=exact),
        "recall": _ratio(tp, tp + fn, exact=exact),
        "specificity": _ratio(tn, tn + fp, exact=exact),
    }


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2TP / (2TP + FP + FN); identical to F1, so F1 is not reported apart."""
    return _overlap_scores(*confusion(pred, truth))["dice"]


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union (Jaccard) TP / (TP + FP + FN)."""
    return _overlap_scores(*confusion(pred, truth))["iou"]


def accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pixel accuracy (TP + TN) / all pixels; the large background flatters it, so report Dice."""
    return _overlap_scores(*confusion(pred, truth))["accuracy"]


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """TP / (TP + FP): how much of the predicted lung is lung."""
    return _overlap_scores(*confusion(pred, truth))["precision"]


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """TP / (TP + FN) (sensitivity): how much of the lung was found."""
    return _overlap_scores(*confusion(pred, truth))["recall"]


def specificity(pred: np.ndarray, truth: np.ndarray) -> float:
    """TN / (TN + FP): how much of the background was left alone."""
    return _overlap_scores(*confusion(pred, truth))["specificity"]


def selection_mean(
    sums: Mapping[str, float], counts: Mapping[str, float], *, by_source: bool
) -> float:
    """Mean of a per-image score from its per-source sums and image counts.

    Over images, or with ``by_source`` the mean over sources of each source's mean, so a source
    with many images cannot hide a loss on one with few (a training config's
    ``selection="source_mean"``; the trainer and the threshold search choose by it).
    """
    if by_source:
        return sum(sums[s] / counts[s] for s in sums) / max(len(sums), 1)
    return sum(sums.values()) / max(sum(counts.values()), 1)


def _check_spacing(spacing: tuple[float, float] | None) -> tuple[float, float] | None:
    if spacing is None:
        return None
    if len(spacing) != 2:
        raise ValueError(f"pixel spacing must be (row_mm, col_mm), got {spacing}")
    row_mm, col_mm = float(spacing[0]), float(spacing[1])
    if not (row_mm > 0 and col_mm > 0 and np.isfinite(row_mm) and np.isfinite(col_mm)):
        raise ValueError(
            f"pixel spacing must be two positive numbers (row_mm, col_mm), got {spacing}"
        )
    return row_mm, col_mm


def _boundary_points(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(row, col) coordinates of both masks' boundary pixels; None if either mask is empty.

    Erosion runs on the union's bounding box only: that is several times cheaper and changes no
    boundary, since a mask pixel on the box edge borders background just outside it.
    """
    if not pred.any() or not truth.any():
        return None
    union = pred | truth
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    pred, truth = pred[box], truth[box]
    pred_edges = pred ^ ndimage.binary_erosion(pred, structure=_CROSS)
    truth_edges = truth ^ ndimage.binary_erosion(truth, structure=_CROSS)
    return np.argwhere(pred_edges), np.argwhere(truth_edges)


def _surface_scores(
    points: tuple[np.ndarray, np.ndarray] | None,
    both_empty: bool,
    spacing: tuple[float, float] | None,
) -> tuple[float, float]:
    """(HD95, ASSD) from boundary coordinates; one nearest-neighbour pass per direction serves both.

    Nearest boundary pixel by k-d tree over physical coordinates (row * row_mm, col * col_mm): the
    same exact Euclidean distances as MONAI's ``distance_transform_edt(~edges, sampling=spacing)``
    read at the other boundary, but the cost grows with the boundary length rather than the image
    area (about 4x faster at 512x512, far more on full-size originals).
    """
    if points is None:
        return (0.0, 0.0) if both_empty else (float("nan"), float("nan"))
    scale = np.asarray(spacing if spacing is not None else (1.0, 1.0))
    pred_points, truth_points = points[0] * scale, points[1] * scale
    pred_to_truth = KDTree(truth_points).query(pred_points)[0]
    truth_to_pred = KDTree(pred_points).query(truth_points)[0]
    hd = max(
        np.percentile(pred_to_truth, _HD_PERCENTILE), np.percentile(truth_to_pred, _HD_PERCENTILE)
    )
    mean = (pred_to_truth.sum() + truth_to_pred.sum()) / (pred_to_truth.size + truth_to_pred.size)
    return float(hd), float(mean)


def _surface_scores_of(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None
) -> tuple[float, float]:
    pred, truth = _as_mask_pair(pred, truth)
    both_empty = not pred.any() and not truth.any()
    return _surface_scores(_boundary_points(pred, truth), both_empty, _check_spacing(spacing))


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None = None) -> float:
    """95th-percentile Hausdorff distance, MONAI's definition (max of the directed percentiles).

    Args:
        pred: predicted mask (H, W), non-zero = lung.
        truth: reference mask of the same shape.
        spacing: pixel size (row_mm, col_mm); None gives pixels, otherwise millimetres.

    Returns:
        The distance; 0 if both masks are empty, NaN if exactly one is.
    """
    return _surface_scores_of(pred, truth, spacing)[0]


def assd(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None = None) -> float:
    """Average symmetric surface distance: mean over both boundaries' distances to the other.

    Args:
        pred: predicted mask (H, W), non-zero = lung.
        truth: reference mask of the same shape.
        spacing: pixel size (row_mm, col_mm); None gives pixels, otherwise millimetres.

    Returns:
        The distance; 0 if both masks are empty, NaN if exactly one is.
    """
    return _surface_scores_of(pred, truth, spacing)[1]


def _metrics_with_counts(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None
) -> tuple[dict[str, float], tuple[int, int, int, int]]:
    pred, truth = _as_mask_pair(pred, truth)
    spacing = _check_spacing(spacing)
    counts = confusion(pred, truth)
    scores = _overlap_scores(*counts)
    both_empty = counts[0] + counts[1] + counts[2] == 0
    points = _boundary_points(pred, truth)
    scores["hd95"], scores["assd"] = _surface_scores(points, both_empty, None)
    if spacing is not None:
        scores["hd95_mm"], scores["assd_mm"] = _surface_scores(points, both_empty, spacing)
    return scores, counts


def compute_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None = None
) -> dict[str, float]:
    """Every metric for one image, computing the boundaries once.

    Args:
        pred: predicted mask (H, W) at the original resolution, non-zero = lung.
        truth: reference mask of the same shape.
        spacing: pixel size (row_mm, col_mm); when given, ``hd95_mm`` and ``assd_mm`` are added.

    Returns:
        ``{name: value}`` for every name in :data:`METRIC_NAMES` (distances in pixels), plus
        ``hd95_mm`` and ``assd_mm`` when ``spacing`` is given.
    """
    return _metrics_with_counts(pred, truth, spacing)[0]


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = np.asarray([v for v in values if not np.isnan(v)], dtype=np.float64)
    if finite.size == 0:
        return float("nan"), float("nan")
    return float(finite.mean()), float(finite.std())


def _summarise(records: list[dict]) -> dict:
    """n, mean, std, pooled and undefined counts of a group of per-image records."""
    names = list(METRIC_NAMES) + sorted(
        {key for record in records for key in record if key.endswith("_mm")}
    )
    mean, std, undefined = {}, {}, {}
    for name in names:
        values = [record[name] for record in records if name in record]
        mean[name], std[name] = _mean_std(values)
        undefined[name] = sum(1 for v in values if np.isnan(v))
    totals = [sum(record[key] for record in records) for key in _COUNT_NAMES]
    return {
        "n": len(records),
        "mean": mean,
        "std": std,
        "pooled": _overlap_scores(*totals),
        "undefined": undefined,
    }


class MetricAccumulator:
    """Collects per-image metrics over a test set and summarises them (MONAI-style).

    Means and standard deviations (population std, numpy's default: the spread of THIS test set)
    are over images, skipping NaN distances, which are counted under ``"undefined"``. ``pooled``
    scores the summed confusion counts of all pixels, which weights large lungs more.

    Records are plain picklable dicts, so under DDP each rank accumulates its shard and rank 0
    combines them::

        shards = [None] * world_size
        torch.distributed.all_gather_object(shards, accumulator.state())
        merged = MetricAccumulator()
        for shard in shards:
            merged.extend(shard)
    """

    def __init__(self) -> None:
        self._records: list[dict] = []
        self._ids: set[str] = set()

    def update(
        self,
        pred: np.ndarray,
        truth: np.ndarray,
        *,
        id: str = "",
        source: str = "",
        spacing: tuple[float, float] | None = None,
    ) -> dict[str, float]:
        """Score one image and keep the result.

        Args:
            pred: predicted mask (H, W) at the original resolution.
            truth: reference mask of the same shape.
            id: image identifier (e.g. ``"montgomery/MCUCXR_0001_0"``); a non-empty id may be
                added only once, which catches a missing ``reset()`` between evaluations.
            source: dataset the image comes from, for the per-source split.
            spacing: pixel size (row_mm, col_mm), adds millimetre distances.

        Returns:
            That image's metrics, as :func:`compute_metrics`.
        """
        if id and id in self._ids:
            raise ValueError(f"image {id!r} was already scored; call reset() between evaluations")
        scores, counts = _metrics_with_counts(pred, truth, spacing)
        self._add(
            {"id": id, "source": source, **dict(zip(_COUNT_NAMES, counts, strict=True)), **scores}
        )
        return scores

    def _add(self, record: dict) -> None:
        self._records.append(record)
        if record["id"]:
            self._ids.add(record["id"])

    def rows(self) -> list[dict]:
        """One dict per image, in the order added: id, source and every metric."""
        return [
            {key: value for key, value in record.items() if key not in _COUNT_NAMES}
            for record in self._records
        ]

    def state(self) -> list[dict]:
        """Picklable per-image records, confusion counts included, for merging across processes."""
        return [dict(record) for record in self._records]

    def extend(self, records: Iterable[dict]) -> None:
        """Add records from :meth:`state` of another accumulator (e.g. another DDP rank).

        Records whose non-empty id is already present are skipped: ``DistributedSampler`` pads
        shards by repeating images, and those must not count twice.

        Raises:
            ValueError: if a record lacks the id, source, counts or a metric.
        """
        required = ("id", "source", *_COUNT_NAMES, *METRIC_NAMES)
        for record in records:
            missing = [key for key in required if key not in record]
            if missing:
                raise ValueError(f"not a metric record (missing {missing}): {record!r}")
            if record["id"] and record["id"] in self._ids:
                logger.debug("skipping duplicate record for image %r", record["id"])
                continue
            self._add(dict(record))

    def aggregate(self) -> dict:
        """Summary over all images and per source.

        Returns:
            ``{"n", "mean", "std", "pooled", "undefined", "per_source"}``: ``mean``/``std`` per
            metric over images (NaN excluded), ``pooled`` the six overlap metrics from the summed
            confusion counts, ``undefined`` the number of NaN images per metric, and
            ``per_source`` the same summary (without ``per_source``) for each source.

        Raises:
            ValueError: if nothing was accumulated (a summary of no images would be made up).
        """
        if not self._records:
            raise ValueError("no images were scored; call update() before aggregate()")
        summary = _summarise(self._records)
        sources = dict.fromkeys(record["source"] for record in self._records)
        summary["per_source"] = {
            source: _summarise([r for r in self._records if r["source"] == source])
            for source in sources
        }
        return summary

    def reset(self) -> None:
        """Forget every image, ready for the next evaluation."""
        self._records.clear()
        self._ids.clear()
