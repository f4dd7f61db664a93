"""What a run leaves for people to read: a CSV log, TensorBoard events and two figures.

``loss_curves.png`` is the paper's Figure 4 (train and val loss per epoch) and
``val_predictions.png`` its Figure 5 (image | truth | prediction on validation images).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.atomic import atomic_write_bytes, atomic_write_text

COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "val_iou", "lr", "seconds")


def write_csv(path: Path, history: Sequence[dict[str, Any]]) -> None:
    """Rewrite the whole log from the history kept in the checkpoint (no duplicates on resume)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_columns(history), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, out.getvalue())


def _columns(history: Sequence[dict[str, Any]]) -> list[str]:
    """The fixed columns, then any others the rows carry (per-source val Dice), in first-seen
    order."""
    columns = list(COLUMNS)
    for row in history:
        columns += [key for key in row if key not in columns]
    return columns


class TensorBoardLog:
    """TensorBoard scalars per epoch; optional so a run works without tensorboard installed."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            self.writer = None
        else:
            self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key in _columns([row])[1:]:
            value = row.get(key)
            if value is not None and value == value:  # skip NaN (no validation that epoch)
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _save_figure(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def plot_loss_curves(path: Path, history: Sequence[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [row["train_loss"] for row in history], label="train loss")
    ax_loss.plot(epochs, [row["val_loss"] for row in history], label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("BCE + Dice loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    per_source = [key for key in _columns(history) if key.startswith("val_dice_")]
    label = "val Dice (selects the epoch)" if per_source else "val Dice"
    ax_dice.plot(epochs, [row["val_dice"] for row in history], color="black", label=label)
    for key in per_source:
        values = [row.get(key, float("nan")) for row in history]
        ax_dice.plot(epochs, values, linewidth=1, label=key.removeprefix("val_dice_"))
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("val Dice (network resolution)")
    ax_dice.grid(alpha=0.3)
    ax_dice.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def plot_predictions(
    path: Path,
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    titles: Sequence[str],
) -> None:
    """One row per image: the X-ray, the manual mask, the predicted mask (with its Dice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.6 * rows), squeeze=False)
    panels = zip(images, truths, preds, titles, strict=True)
    for row, (image, truth, pred, title) in enumerate(panels):
        for col, (panel, name) in enumerate(
            ((image, "image"), (truth, "truth"), (pred, "prediction"))
        ):
            ax = axes[row, col]
            ax.imshow(panel, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
        axes[row, 0].set_ylabel(title, fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
