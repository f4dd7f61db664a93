"""Training: the loop (trainer), resumable checkpoints, run reports and finalisation."""

from lungseg.training.trainer import Trainer, train

__all__ = ["Trainer", "train"]
