"""The end of a run: pick the decision thresholds on val and write the deployable model.

The best checkpoint (by val Dice at network resolution) is reloaded, its lung threshold is chosen
by mean val Dice at ORIGINAL resolution on the post-processed masks users get, its heart
threshold (where it has a heart channel) by the val CTR error on those masks, and
``model.safetensors`` + ``summary.json`` + ``val_predictions.png`` are written. Each val image
is decoded and run once. The test subset is never touched here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from lungseg.atomic import atomic_write_text
from lungseg.config import TrainConfig
from lungseg.data.discovery import Pair
from lungseg.evaluate import PairPrediction, predict_pairs, tune_heart_threshold, tune_threshold
from lungseg.inference import Segmenter
from lungseg.metrics import dice
from lungseg.training.reports import plot_predictions
from lungseg.training.run_dir import RunDir
from lungseg.weights import load_weights, save_weights

log = logging.getLogger(__name__)

N_FIGURE_ROWS = 6


def finalize_run(
    run: RunDir,
    config: TrainConfig,
    val: Sequence[Pair],
    *,
    split_name: str,
    fit: dict[str, Any],
    precision: str,
) -> dict[str, Any]:
    """Choose the thresholds for ``run``'s best weights on ``val`` and write the final model.

    Args:
        fit: what :meth:`Trainer.fit` returned (epochs, best_epoch, best_val_dice, seconds).
        precision: the autocast the run trained with, for the record.
    """
    model, info = load_weights(run.best_weights)
    segmenter = Segmenter(model, info, device="cpu", precision="fp32")
    shown_ids = {p.id for p in val[:: max(1, len(val) // N_FIGURE_ROWS)][:N_FIGURE_ROWS]}
    shown: list[PairPrediction] = []
    with_heart: list[PairPrediction] = []

    def one_pass() -> Any:  # keeps what the figure and the heart's threshold need on the way
        for item in predict_pairs(
            segmenter, val, workers=min(config.workers, 2), desc="tune threshold"
        ):
            if item.pair.id in shown_ids:
                shown.append(item)
            if item.heart_truth is not None and item.result.heart_probabilities is not None:
                with_heart.append(item)
            yield item

    threshold, scores = tune_threshold(
        segmenter, one_pass(), by_source=config.selection == "source_mean"
    )
    segmenter.threshold = info.threshold = threshold
    heart_threshold, heart_scores = tune_heart_threshold(segmenter, with_heart)
    info.heart_threshold = heart_threshold
    heart = (
        {
            "heart_threshold": heart_threshold,
            "val_heart_dice": round(heart_scores[heart_threshold]["dice"], 5),
            "val_ctr_error": round(heart_scores[heart_threshold]["ctr_error"], 5),
        }
        if heart_scores
        else {}
    )
    info.extra.update(
        {
            "run": str(run.path),
            "split": split_name,
            "best_epoch": fit["best_epoch"],
            "val_dice_network_res": round(fit["best_val_dice"], 5),
            "train_precision": precision,
            "val_dice_by_threshold": {f"{t:.2f}": round(s, 5) for t, s in scores.items()},
            **heart,
        }
    )
    save_weights(run.final_weights, model, info)

    images, truths, preds, titles = [], [], [], []
    for item in shown:
        pred = segmenter.lung_mask(item.result.probabilities, threshold)
        images.append(item.result.grey / 255.0)
        truths.append(item.truth)
        preds.append(pred)
        titles.append(f"{item.pair.id}\nDice {dice(pred, item.truth):.3f}")
    plot_predictions(run.val_figure, images, truths, preds, titles)

    summary = {
        "model": config.model,
        "model_config": model.config,
        "epochs": fit["epochs"],
        "best_epoch": fit["best_epoch"],
        "train_seconds": round(fit["seconds"], 1),
        "threshold": threshold,
        "val_dice_original_res": round(scores[threshold], 5),
        **heart,
        "split": split_name,
        "precision": precision,
        "weights": str(run.final_weights),
    }
    atomic_write_text(run.summary, json.dumps(summary, indent=2) + "\n")
    log.info(
        "threshold %.2f (val Dice %.4f at original resolution); wrote %s",
        threshold,
        scores[threshold],
        run.final_weights,
    )
    return summary
