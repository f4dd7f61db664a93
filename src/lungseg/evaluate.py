"""Honest evaluation: metrics on masks at their ORIGINAL resolution, over a named subset.

The network's logits are resized back to each manual mask's size before thresholding, so the
numbers are comparable with any other method evaluated on the same masks, whatever input size
the network uses. Decoding runs in DataLoader workers; the metrics come from
:mod:`lungseg.metrics`.

A file that cannot be read, a mask of another size than its image and a non-binary mask stop the
evaluation with an :class:`~lungseg.errors.InvalidInputError` naming the file. An empty or full
mask is scored as it is (the metrics define those cases) and logged as a warning naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lungseg.data.dataset import load_full_mask
from lungseg.data.discovery import Pair
from lungseg.data.io import mask_problem, read_image
from lungseg.errors import InvalidInputError
from lungseg.inference import Segmenter
from lungseg.metrics import MetricAccumulator, dice, selection_mean
from lungseg.postprocess import postprocess_mask

log = logging.getLogger(__name__)

THRESHOLDS = tuple(np.round(np.arange(0.30, 0.71, 0.05), 2))


class _PairDataset(Dataset):
    """Decodes a pair in a worker: the network input plus the full-resolution truth."""

    def __init__(self, pairs: Sequence[Pair], segmenter: Segmenter) -> None:
        self.pairs = list(pairs)
        self.input_size = segmenter.input_size
        self.prepare = segmenter.prepare

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        try:
            image, meta = read_image(pair.image)
            truth = load_full_mask(pair)
        except InvalidInputError as err:
            # Raised in a worker it would reach the caller as a RuntimeError holding a
            # traceback; hand over what is wrong and raise it again in the main process.
            return {"error": (str(err.path), err.reason)}
        return {
            "input": self.prepare(image),
            "truth": truth,
            "pair": pair,
            "spacing": meta.pixel_spacing_mm,
        }


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [item["error"] for item in items if "error" in item]
    if errors:
        return {"error": errors[0]}
    return {
        "input": torch.stack([item["input"] for item in items]),
        **{key: [item[key] for item in items] for key in ("truth", "pair", "spacing")},
    }


def predict_pairs(
    segmenter: Segmenter,
    pairs: Sequence[Pair],
    *,
    batch_size: int = 8,
    workers: int = 1,
    progress: bool = True,
    desc: str = "evaluate",
) -> Iterator[dict[str, Any]]:
    """Yield per pair: ``pair``, ``prob`` (original size), ``truth`` and ``spacing``."""
    loader = DataLoader(
        _PairDataset(pairs, segmenter),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
    )
    with tqdm(total=len(pairs), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in loader:
            if "error" in batch:
                raise InvalidInputError(*batch["error"])
            logits = segmenter.logits(batch["input"])
            for i, truth in enumerate(batch["truth"]):
                yield {
                    "pair": batch["pair"][i],
                    "prob": segmenter.probabilities_at(logits[i], truth.shape),
                    "truth": truth,
                    "spacing": batch["spacing"][i],
                }
                bar.update()


def evaluate(
    segmenter: Segmenter,
    pairs: Sequence[Pair],
    *,
    threshold: float | None = None,
    batch_size: int = 8,
    workers: int = 1,
    progress: bool = True,
    postprocess: bool = False,
) -> MetricAccumulator:
    """All metrics per image at original resolution; the threshold defaults to the weights'.

    With ``postprocess`` each thresholded mask goes through
    :func:`lungseg.postprocess.postprocess_mask` (two largest components, holes filled) before
    it is scored, as ``lungseg predict`` does by default, so its effect can be measured.
    """
    threshold = segmenter.threshold if threshold is None else threshold
    metrics = MetricAccumulator()
    for item in predict_pairs(
        segmenter, pairs, batch_size=batch_size, workers=workers, progress=progress
    ):
        pair = item["pair"]
        problem = mask_problem(item["truth"])
        if problem is not None:
            log.warning(
                "%s: %s; scored as it is (lungseg.metrics defines the scores of empty masks)",
                ", ".join(str(path) for path in pair.masks),
                problem[1],
            )
        mask = item["prob"] > threshold
        metrics.update(
            postprocess_mask(mask) if postprocess else mask,
            item["truth"],
            id=pair.id,
            source=pair.source,
            spacing=item["spacing"],
        )
    return metrics


def tune_threshold(
    segmenter: Segmenter,
    pairs: Sequence[Pair],
    candidates: Sequence[float] = THRESHOLDS,
    *,
    by_source: bool = False,
    **kwargs: Any,
) -> tuple[float, dict[float, float]]:
    """The threshold with the best Dice at original resolution (run it on VAL, never test).

    The score is the mean Dice over images or, with ``by_source``, the mean over sources of each
    source's mean Dice (the trainer's ``selection="source_mean"``), so the largest source does
    not choose alone.
    """
    thresholds = [float(t) for t in candidates]
    sums: dict[float, dict[str, float]] = {t: {} for t in thresholds}
    counts: dict[str, int] = {}
    for item in predict_pairs(segmenter, pairs, desc="tune threshold", **kwargs):
        source = item["pair"].source
        for t in thresholds:
            sums[t][source] = sums[t].get(source, 0.0) + dice(item["prob"] > t, item["truth"])
        counts[source] = counts.get(source, 0) + 1
    scores = {t: selection_mean(sums[t], counts, by_source=by_source) for t in thresholds}
    best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))
    return best, scores
