"""Honest evaluation: metrics on masks at their ORIGINAL resolution, over a named subset.

Predictions come from :meth:`Segmenter.predict_many`, the path ``lungseg predict`` takes, with
the same threshold and post-processing, so a reported score is the score of the masks users
get (``postprocess=False`` measures the network's own masks). The numbers are comparable with
any other method evaluated on the same masks, whatever input size the network uses. Where a
pair has a heart mask and the weights a heart channel, the heart is scored too (Dice, HD95...)
and the cardiothoracic ratio is compared with the one the manual masks give
(:func:`lungseg.measure.cardiothoracic_extents`).

A file that cannot be read, a mask of another size than its image and a non-binary mask stop the
evaluation with an :class:`~lungseg.errors.InvalidInputError` naming the file. An empty or full
mask is scored as it is (the metrics define those cases) and logged as a warning naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lungseg.data.dataset import load_full_mask
from lungseg.data.discovery import Pair
from lungseg.data.masks import mask_problem, read_masks
from lungseg.inference import Segmentation, Segmenter
from lungseg.measure import CARDIOMEGALY_CTR, cardiothoracic_extents
from lungseg.metrics import MetricAccumulator, dice, selection_mean

log = logging.getLogger(__name__)

THRESHOLDS = tuple(np.round(np.arange(0.30, 0.71, 0.05), 2))


@dataclass
class PairPrediction:
    """One labelled pair and what the model made of it, both at the original resolution."""

    pair: Pair
    result: Segmentation
    truth: np.ndarray  # bool (H, W) lungs
    heart_truth: np.ndarray | None  # bool (H, W), where the pair has a heart mask


def predict_pairs(
    segmenter: Segmenter,
    pairs: Sequence[Pair],
    *,
    postprocess: bool = True,
    threshold: float | None = None,
    batch_size: int = 8,
    workers: int = 1,
    progress: bool = True,
    desc: str = "evaluate",
) -> Iterator[PairPrediction]:
    """Each pair's :class:`Segmentation` (from :meth:`Segmenter.predict_many`) and its truth."""
    results = segmenter.predict_many(
        [pair.image for pair in pairs],
        batch_size=batch_size,
        workers=workers,
        postprocess=postprocess,
        threshold=threshold,
        progress=progress,
        desc=desc,
    )
    for pair, result in zip(pairs, results, strict=True):
        assert isinstance(result, Segmentation)  # failures raise (skip_failed is off)
        truth = load_full_mask(pair)
        heart = None
        if pair.heart is not None:
            heart = read_masks(
                (pair.heart,),
                image_path=pair.image,
                image_size=truth.shape,
                refuse=("non_binary_mask",),
            )
        yield PairPrediction(pair, result, truth, heart)


@dataclass
class Evaluation:
    """Scores of one evaluation: the lungs, and the heart where it could be scored."""

    lungs: MetricAccumulator = field(default_factory=MetricAccumulator)
    heart: MetricAccumulator = field(default_factory=MetricAccumulator)
    ctr: list[dict[str, Any]] = field(default_factory=list)  # id, source, ctr, ctr_truth

    def aggregate(self) -> dict:
        """The lungs' summary (:meth:`MetricAccumulator.aggregate`)."""
        return self.lungs.aggregate()

    def rows(self) -> list[dict]:
        """One row per image: the lungs' metrics, then ``heart_dice``/``heart_hd95`` and the
        two CTRs where the heart was scored."""
        hearts = {row["id"]: row for row in self.heart.rows()}
        ctrs = {row["id"]: row for row in self.ctr}
        rows = []
        for row in self.lungs.rows():
            heart, ctr = hearts.get(row["id"]), ctrs.get(row["id"])
            if heart is not None:
                row = {**row, "heart_dice": heart["dice"], "heart_hd95": heart["hd95"]}
            if ctr is not None:
                row = {**row, "ctr": ctr["ctr"], "ctr_truth": ctr["ctr_truth"]}
            rows.append(row)
        return rows

    def heart_summary(self) -> dict[str, Any] | None:
        """Heart Dice/HD95 means, CTR mean absolute error and cardiomegaly agreement; None when
        no image had both a heart mask and a heart prediction."""
        if not self.heart.rows():
            return None
        heart = self.heart.aggregate()
        summary: dict[str, Any] = {
            "n": heart["n"],
            "dice": heart["mean"]["dice"],
            "hd95": heart["mean"]["hd95"],
            "iou": heart["mean"]["iou"],
        }
        measured = [r for r in self.ctr if r["ctr"] is not None and r["ctr_truth"] is not None]
        if measured:
            agree = ctr_agreement(
                np.array([r["ctr"] for r in measured]), np.array([r["ctr_truth"] for r in measured])
            )
            summary.update(
                {
                    "ctr_n": agree["n"],
                    "ctr_missing": len(self.ctr) - len(measured),
                    "ctr_mae": agree["mae"],
                    "ctr_bias": agree["bias"],
                    "cardiomegaly_agreement": agree["cardiomegaly_agreement"],
                }
            )
        return summary


def ctr_agreement(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How two series of CTRs agree: mean absolute error, bias, Bland-Altman 95% limits of
    agreement, the largest difference, and how often the cardiomegaly call (CTR > 0.5) is the
    same."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    spread = 1.96 * np.std(diff, ddof=1) if len(diff) > 1 else float("nan")
    return {
        "n": int(len(diff)),
        "mae": float(np.mean(np.abs(diff))),
        "bias": float(np.mean(diff)),
        "loa_low": float(np.mean(diff) - spread),
        "loa_high": float(np.mean(diff) + spread),
        "max_abs": float(np.max(np.abs(diff))),
        "cardiomegaly_agreement": float(
            np.mean((np.asarray(pred) > CARDIOMEGALY_CTR) == (np.asarray(truth) > CARDIOMEGALY_CTR))
        ),
    }


def evaluate(
    segmenter: Segmenter,
    pairs: Sequence[Pair],
    *,
    threshold: float | None = None,
    batch_size: int = 8,
    workers: int = 1,
    progress: bool = True,
    postprocess: bool = True,
) -> Evaluation:
    """All metrics per image at original resolution, on the masks ``lungseg predict`` writes.

    Args:
        threshold: overrides the weights' lung threshold.
        postprocess: as ``lungseg predict`` (default on: two largest lung components and the
            largest heart component, holes filled); off scores the network's raw masks.
    """
    scores = Evaluation()
    for item in predict_pairs(
        segmenter,
        pairs,
        postprocess=postprocess,
        threshold=threshold,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    ):
        pair, result = item.pair, item.result
        problem = mask_problem(item.truth)
        if problem is not None:
            log.warning(
                "%s: %s; scored as it is (lungseg.metrics defines the scores of empty masks)",
                ", ".join(str(path) for path in pair.masks),
                problem[1],
            )
        spacing = result.meta.pixel_spacing_mm if result.meta is not None else None
        scores.lungs.update(
            result.mask, item.truth, id=pair.id, source=pair.source, spacing=spacing
        )
        if item.heart_truth is not None and result.heart is not None:
            scores.heart.update(
                result.heart, item.heart_truth, id=pair.id, source=pair.source, spacing=spacing
            )
            extents = cardiothoracic_extents(item.heart_truth, item.truth)
            scores.ctr.append(
                {
                    "id": pair.id,
                    "source": pair.source,
                    "ctr": result.measurements.ctr,
                    "ctr_truth": None if extents is None else round(extents.ctr, 4),
                }
            )
    return scores


def tune_threshold(
    segmenter: Segmenter,
    predictions: Iterable[PairPrediction],
    candidates: Sequence[float] = THRESHOLDS,
    *,
    by_source: bool = False,
    postprocess: bool = True,
) -> tuple[float, dict[float, float]]:
    """The threshold with the best Dice at original resolution (run it on VAL, never test).

    Each candidate cuts the same probabilities through :meth:`Segmenter.lung_mask`, so the
    chosen threshold is the best for the masks users get. The score is the mean Dice over
    images or, with ``by_source``, the mean over sources of each source's mean Dice (the
    trainer's ``selection="source_mean"``), so the largest source does not choose alone.
    """
    thresholds = [float(t) for t in candidates]
    sums: dict[float, dict[str, float]] = {t: {} for t in thresholds}
    counts: dict[str, int] = {}
    for item in predictions:
        source = item.pair.source
        for t in thresholds:
            mask = segmenter.lung_mask(item.result.probabilities, t, postprocess=postprocess)
            sums[t][source] = sums[t].get(source, 0.0) + dice(mask, item.truth)
        counts[source] = counts.get(source, 0) + 1
    scores = {t: selection_mean(sums[t], counts, by_source=by_source) for t in thresholds}
    best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))
    return best, scores


def tune_heart_threshold(
    segmenter: Segmenter,
    predictions: Iterable[PairPrediction],
    candidates: Sequence[float] = THRESHOLDS,
) -> tuple[float, dict[float, dict[str, float]]]:
    """The heart threshold whose CTR is closest to the manual masks' on VAL (never test).

    The heart channel exists to measure the cardiothoracic ratio, so its cut is chosen by the
    mean absolute CTR error (the lungs cut at the segmenter's lung threshold, the heart at each
    candidate, against the CTR of the manual heart and lung masks), ties going to the better
    heart Dice. Only pairs with a heart mask count; a cut that leaves no heart counts as CTR 0.
    Without such pairs (or without a heart channel) the segmenter's own heart threshold comes
    back, with no scores.

    Returns:
        the chosen threshold and, per candidate, ``{"ctr_error": ..., "dice": ...}``.
    """
    thresholds = [float(t) for t in candidates]
    errors: dict[float, list[float]] = {t: [] for t in thresholds}
    dices: dict[float, list[float]] = {t: [] for t in thresholds}
    for item in predictions:
        probabilities, truth = item.result.heart_probabilities, item.heart_truth
        expected = None if truth is None else cardiothoracic_extents(truth, item.truth)
        if probabilities is None or truth is None or expected is None:
            continue
        lungs = segmenter.lung_mask(item.result.probabilities)
        for t in thresholds:
            heart = segmenter.heart_mask(probabilities, t)
            got = cardiothoracic_extents(heart, lungs)
            errors[t].append(abs((0.0 if got is None else got.ctr) - expected.ctr))
            dices[t].append(dice(heart, truth))
    if not errors[thresholds[0]]:
        return segmenter.heart_threshold, {}
    scores = {
        t: {"ctr_error": float(np.mean(errors[t])), "dice": float(np.mean(dices[t]))}
        for t in thresholds
    }
    best = min(
        scores, key=lambda t: (round(scores[t]["ctr_error"], 5), -scores[t]["dice"], abs(t - 0.5))
    )
    return best, scores


def quality_records(
    segmenter: Segmenter,
    pairs: Sequence[Pair],
    *,
    degradations: Sequence[str] = (),
    per_image: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Each pair's mask, clean and degraded (:mod:`lungseg.data.degrade`), with its true Dice
    and the quality signals (and ``estimated_dice`` when the weights are calibrated).

    Every pair is scored clean and in ``per_image`` of the ``degradations``, taken in turn
    (pair ``i`` gets kinds ``i, i+1, ...``), so each kind is met about equally often. Each
    copy is seeded by ``seed`` and the pair's position: the same call gives the same copies.
    Returns one dict per copy: ``id``, ``source``, ``variant``, ``dice``, ``estimated_dice``
    and the signals.
    """
    from tqdm import tqdm

    from lungseg.data.degrade import degrade
    from lungseg.data.io import read_image

    records: list[dict[str, Any]] = []
    per_image = min(per_image, len(degradations))
    chunk = max(1, batch_size // (1 + per_image))
    with tqdm(
        total=len(pairs), desc="quality", unit="img", disable=None if progress else True
    ) as bar:
        for start in range(0, len(pairs), chunk):
            images, truths, keys = [], [], []
            for index, pair in enumerate(pairs[start : start + chunk], start=start):
                image, truth = read_image(pair.image)[0], load_full_mask(pair)
                kinds = [degradations[(index + k) % len(degradations)] for k in range(per_image)]
                for number, variant in enumerate(["clean", *kinds]):
                    rng = np.random.default_rng([seed, index, number])
                    pixels, mask = (
                        (image, truth)
                        if variant == "clean"
                        else degrade(variant, image, truth, rng)
                    )
                    images.append(pixels)
                    truths.append(mask)
                    keys.append((pair, variant))
            results = segmenter.predict_many(images, batch_size=len(images), quality=True)
            for (pair, variant), truth, result in zip(keys, truths, results, strict=True):
                assert isinstance(result, Segmentation) and result.quality_signals is not None
                records.append(
                    {
                        "id": pair.id,
                        "source": pair.source,
                        "variant": variant,
                        "dice": dice(result.mask, truth),
                        "estimated_dice": result.measurements.estimated_dice,
                        **result.quality_signals,
                    }
                )
            bar.update(len(pairs[start : start + chunk]))
    return records
