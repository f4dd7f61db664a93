"""The run folder of ``lungseg train``: one place that names its files and keeps its record.

A run folder holds everything a run needs to be resumed, inspected and shipped::

    config.json        the TrainConfig, written before any data is read
    run.json           where the data and split are, the preset and the command (RunRecord)
    last.pt            the resumable checkpoint, rewritten atomically after every epoch
    best.safetensors   the best epoch's weights so far (by val Dice)
    model.safetensors  the deployable model, with the threshold chosen on val
    metrics.csv, loss_curves.png, tensorboard/   the history, per epoch
    summary.json, val_predictions.png            written when the run ends

``train()`` writes the record whether it was called from the CLI or from Python, so every run
can be resumed with ``lungseg train --resume RUN_DIR``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from lungseg.atomic import atomic_write_text
from lungseg.config import TrainConfig
from lungseg.errors import InvalidInputError, LungsegError


@dataclass(frozen=True)
class RunRecord:
    """What ``--resume`` needs besides the config: the data, the split and how it started."""

    data: str
    split: str | None
    preset: str | None = None
    command: str | None = None


@dataclass(frozen=True)
class RunDir:
    """Paths of one run folder's files, and its config and record."""

    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def record_file(self) -> Path:
        return self.path / "run.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "last.pt"

    @property
    def best_weights(self) -> Path:
        return self.path / "best.safetensors"

    @property
    def final_weights(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def loss_figure(self) -> Path:
        return self.path / "loss_curves.png"

    @property
    def val_figure(self) -> Path:
        return self.path / "val_predictions.png"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def holds_run(self) -> bool:
        """Whether a run has checkpointed here (so a new run must not start over it)."""
        return self.checkpoint.exists()

    def write_start(self, config: TrainConfig, record: RunRecord) -> None:
        """Write config and record, atomically, before any data is read: a run stopped at
        any point after this can be resumed."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_file, config.pretty() + "\n")
        atomic_write_text(self.record_file, json.dumps(asdict(record), indent=2) + "\n")

    def read_start(self) -> tuple[TrainConfig, RunRecord]:
        """The config and record a run wrote when it started.

        Raises:
            LungsegError: the folder holds no run record (not a lungseg run folder).
            InvalidInputError: the record or config cannot be read.
        """
        if not self.record_file.is_file():
            raise LungsegError(
                f"{self.path}: not a lungseg run folder (no {self.record_file.name})"
            )
        try:
            record = RunRecord(**json.loads(self.record_file.read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise InvalidInputError(self.record_file, f"not a run record ({err})") from err
        try:
            config = TrainConfig.from_dict(json.loads(self.config_file.read_text()))
        except (OSError, ValueError) as err:
            raise InvalidInputError(self.config_file, f"not a training config ({err})") from err
        return config, record
