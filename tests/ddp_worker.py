"""Run by torchrun in test_training: one rank of a tiny DDP run that saves its final weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from lungseg.config import apply_overrides, get_preset
from lungseg.training import Trainer


def main() -> None:
    data, split, out = (Path(a) for a in sys.argv[1:4])
    config = apply_overrides(get_preset("smoke"), ["augment=true"])
    trainer = Trainer(config, data, split, out / "run")
    summary = trainer.fit()
    rank = int(os.environ["RANK"])
    torch.save(trainer.model.state_dict(), out / f"rank{rank}.pt")
    if trainer.dist.is_main:
        from lungseg.training.finalize import finalize_run

        finalize_run(
            trainer.run,
            config,
            trainer.data.val,
            split_name=trainer.data.split_name,
            fit=summary,
            precision=trainer.precision_used(),
        )
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
