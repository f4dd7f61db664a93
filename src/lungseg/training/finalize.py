"""The end of a run: pick the decision threshold on val and write the deployable model.

The best checkpoint (by val Dice at network resolution) is reloaded, its threshold is chosen by
mean val Dice at ORIGINAL resolution on the post-processed masks users get, and
``model.safetensors`` + ``summary.json`` + ``val_predictions.png`` are written. Each val image
is decoded and run once. The test subset is never touched here.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lungseg.atomic import atomic_write_text
from lungseg.evaluate import PairPrediction, predict_pairs, tune_threshold
from lungseg.inference import Segmenter
from lungseg.metrics import dice
from lungseg.training.reports import plot_predictions
from lungseg.weights import load_weights, save_weights

if TYPE_CHECKING:
    from lungseg.training.trainer import Trainer

log = logging.getLogger(__name__)

N_FIGURE_ROWS = 6


def finalize_run(trainer: Trainer) -> dict[str, Any]:
    from lungseg.training.trainer import BEST, FINAL

    out = trainer.out
    model, info = load_weights(out / BEST)
    segmenter = Segmenter(model, info, device="cpu", precision="fp32")
    val = trainer.data.val
    shown_ids = {p.id for p in val[:: max(1, len(val) // N_FIGURE_ROWS)][:N_FIGURE_ROWS]}
    shown: list[PairPrediction] = []
    heart_dice: list[float] = []

    def one_pass() -> Any:  # keeps what the figure and the heart score need on the way
        for item in predict_pairs(
            segmenter, val, workers=min(trainer.config.workers, 2), desc="tune threshold"
        ):
            if item.pair.id in shown_ids:
                shown.append(item)
            if item.heart_truth is not None and item.result.heart is not None:
                heart_dice.append(dice(item.result.heart, item.heart_truth))
            yield item

    threshold, scores = tune_threshold(
        segmenter, one_pass(), by_source=trainer.config.selection == "source_mean"
    )
    info.threshold = threshold
    info.extra.update(
        {
            "run": str(out),
            "split": trainer.data.split_name,
            "best_epoch": trainer.best_epoch,
            "val_dice_network_res": round(trainer.best_dice, 5),
            "train_precision": _precision_used(trainer),
            "val_dice_by_threshold": {f"{t:.2f}": round(s, 5) for t, s in scores.items()},
            **({"val_heart_dice": round(float(np.mean(heart_dice)), 5)} if heart_dice else {}),
        }
    )
    save_weights(out / FINAL, model, info)
    segmenter.threshold = threshold

    images, truths, preds, titles = [], [], [], []
    for item in shown:
        pred = segmenter.lung_mask(item.result.probabilities, threshold)
        images.append(item.result.grey / 255.0)
        truths.append(item.truth)
        preds.append(pred)
        titles.append(f"{item.pair.id}\nDice {dice(pred, item.truth):.3f}")
    plot_predictions(out / "val_predictions.png", images, truths, preds, titles)

    summary = {
        "model": trainer.config.model,
        "model_config": model.config,
        "epochs": trainer.epoch,
        "best_epoch": trainer.best_epoch,
        "train_seconds": round(trainer.elapsed, 1),
        "threshold": threshold,
        "val_dice_original_res": round(scores[threshold], 5),
        **({"val_heart_dice": round(float(np.mean(heart_dice)), 5)} if heart_dice else {}),
        "split": trainer.data.split_name,
        "precision": _precision_used(trainer),
        "weights": str(out / FINAL),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    log.info(
        "threshold %.2f (val Dice %.4f at original resolution); wrote %s",
        threshold,
        scores[threshold],
        out / FINAL,
    )
    return summary


def _precision_used(trainer: Trainer) -> str:
    """The autocast the run trained with, and why when ``auto`` measured it."""
    if trainer.precision_choice is not None:
        return f"auto: {trainer.precision_choice.describe()}"
    names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return names[trainer.runtime.dtype]
