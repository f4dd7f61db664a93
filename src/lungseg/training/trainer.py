"""``lungseg train``: one loop for a laptop CPU, a GPU and ``torchrun`` on many GPUs.

Reproducibility and resume: the data order and augmentation of epoch ``e`` are seeded from
``(seed, e, rank)`` alone, and a checkpoint is written atomically after every epoch, so a run
killed at any point and resumed with ``--resume`` replays exactly the epochs it lost.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from lungseg import __version__
from lungseg.atomic import remove_stale_temporaries
from lungseg.config import TrainConfig
from lungseg.data.dataset import SegmentationDataset
from lungseg.data.discovery import Pair, discover, load_split, select
from lungseg.distributed import (
    DistInfo,
    all_reduce_sum,
    average_buffers,
    barrier,
    broadcast_flag,
    cleanup,
    init_distributed,
)
from lungseg.errors import InvalidInputError, LungsegError
from lungseg.losses import build_loss
from lungseg.metrics import selection_mean
from lungseg.models import create_model
from lungseg.runtime import (
    PrecisionChoice,
    Runtime,
    measure_cpu_precision,
    resolve_runtime,
    seed_everything,
)
from lungseg.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from lungseg.training.finalize import finalize_run
from lungseg.training.reports import TensorBoardLog, plot_loss_curves, write_csv
from lungseg.training.run_dir import RunDir, RunRecord
from lungseg.training.sampling import SourceWeightedSampler, expected_shares
from lungseg.weights import LABELS, LABELS_WITH_HEART, WeightsInfo, save_weights

log = logging.getLogger(__name__)


@dataclass
class RunData:
    train: list[Pair]
    val: list[Pair]
    split_name: str


def prepare_data(data: Path, split: Path | None, seed: int) -> RunData:
    """Train/val pairs from a split file, or a seeded 85/15 division when none is given."""
    found = discover(data)
    if not found.pairs:
        raise LungsegError(f"{data}: no image/mask pairs found")
    if split is not None:
        ids = load_split(split)
        return RunData(
            select(found.pairs, ids, "train"), select(found.pairs, ids, "val"), str(split)
        )
    pairs = sorted(found.pairs, key=lambda p: p.id)
    random.Random(seed).shuffle(pairs)
    n_val = max(1, round(0.15 * len(pairs)))
    return RunData(pairs[n_val:], pairs[:n_val], f"seeded 85/15 division (seed {seed})")


def lr_at(
    config: TrainConfig, step: int, total_steps: int, warmup_steps: int, elapsed: float
) -> float:
    """Linear warm-up, then cosine decay to ``min_lr``.

    With a time budget the cosine follows whichever is further along, steps or elapsed time, so
    the schedule ends when the budget does.
    """
    if step < warmup_steps:
        return config.lr * (0.05 + 0.95 * step / warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if config.time_budget_min > 0:
        progress = max(progress, elapsed / (60.0 * config.time_budget_min))
    progress = min(1.0, progress)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """Owns one run folder: builds everything from the config, trains, checkpoints, resumes."""

    def __init__(self, config: TrainConfig, data: Path, split: Path | None, out: Path) -> None:
        self.config = config
        self.run = RunDir(Path(out))
        self.out = self.run.path
        self.dist: DistInfo = init_distributed("cuda" if _wants_cuda(config) else "cpu")
        self.runtime: Runtime = resolve_runtime(
            config.device, config.precision, self.dist.local_rank
        )
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        seed_everything(config.seed)

        self.data = prepare_data(Path(data), split, config.seed)
        self.train_set, self.val_set = self._build_datasets()
        self.model = self._build_model()
        self.precision_choice = self._choose_precision()
        self.val_sources = sorted({pair.source for pair in self.data.val})
        self.ddp = self._wrap_ddp()
        self.optimizer = self._build_optimizer()
        self.scaler = torch.amp.GradScaler("cuda") if self.runtime.needs_grad_scaler else None
        self.loss_fn = build_loss(config.loss)
        self.sampler = SourceWeightedSampler(
            [pair.source for pair in self.data.train],
            config.source_weights,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            seed=config.seed,
        )
        self.steps_per_epoch = len(self.sampler) // config.batch_size
        if self.steps_per_epoch == 0:
            raise LungsegError(
                f"{len(self.data.train)} training images are fewer than one batch of "
                f"{config.batch_size} per process; lower batch_size"
            )
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = round(config.warmup_epochs * self.steps_per_epoch)

        # State a checkpoint restores; the best epoch is read from the history.
        self.epoch = 0
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict[str, Any]] = []

    def _best_row(self) -> dict[str, Any] | None:
        """The first epoch with the highest val Dice; None before any validation."""
        scored = [row for row in self.history if not math.isnan(row["val_dice"])]
        return max(scored, key=lambda row: (row["val_dice"], -row["epoch"])) if scored else None

    @property
    def best_epoch(self) -> int:
        """The epoch whose weights are ``best.safetensors`` (0 before any validation)."""
        row = self._best_row()
        return row["epoch"] if row else 0

    @property
    def best_dice(self) -> float:
        """The best epoch's val Dice (-1 before any validation)."""
        row = self._best_row()
        return row["val_dice"] if row else -1.0

    # ----------------------------------------------------------------------------- building
    def _build_datasets(self) -> tuple[SegmentationDataset, SegmentationDataset]:
        """Decode and resize every train and val pair once (see :class:`SegmentationDataset`)."""
        cfg = self.config
        train_set = SegmentationDataset(
            self.data.train,
            cfg.image_size,
            augment=cfg.augment,
            augmentation=cfg.augmentation,
            soft_masks=cfg.soft_masks,
            heart=cfg.heart,
        )
        val_set = SegmentationDataset(self.data.val, cfg.image_size, heart=cfg.heart)
        if cfg.heart and not any(pair.heart is not None for pair in self.data.train):
            raise LungsegError(
                f"heart=true but none of the {len(self.data.train)} training pairs has a heart "
                "mask (a heart/ folder beside masks/, or a 'heart' manifest column)"
            )
        for dataset in (train_set, val_set):
            dataset.preload(progress=self.dist.is_main)
        return train_set, val_set

    def _build_model(self) -> torch.nn.Module:
        cfg = self.config
        model_args = {**cfg.model_args, **({"out_channels": 2} if cfg.heart else {})}
        model = create_model(cfg.model, **model_args).to(self.runtime.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _choose_precision(self) -> PrecisionChoice | None:
        """With ``precision="auto"`` on a CPU, time fp32 and bf16 steps and keep the faster."""
        cfg = self.config
        if cfg.precision != "auto" or self.runtime.device.type != "cpu":
            return None
        choice = measure_cpu_precision(
            self.model,
            (cfg.batch_size, 1, *cfg.image_size),
            training=True,
            channels_last=cfg.channels_last,
        )
        # Every rank runs rank 0's choice (each measured its own, on a machine they share).
        bf16 = broadcast_flag(choice.dtype == torch.bfloat16, self.dist)
        self.runtime = Runtime(self.runtime.device, torch.bfloat16 if bf16 else None)
        return choice

    def _wrap_ddp(self) -> torch.nn.Module:
        if not self.dist.enabled:
            return self.model
        on_cuda = self.runtime.device.type == "cuda"
        return DistributedDataParallel(
            self.model, device_ids=[self.dist.local_rank] if on_cuda else None
        )

    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=cfg.lr)
        if cfg.optimizer == "adam":
            return torch.optim.Adam(groups, lr=cfg.lr)
        raise LungsegError(f"unknown optimizer {cfg.optimizer!r}; use adamw or adam")

    def _loader(self, dataset: Any, epoch: int, train: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(
            self.config.seed * 100_003 + epoch * 1_009 + self.dist.rank
        )
        if train:
            self.sampler.set_epoch(epoch)
            sampler: Any = self.sampler
        else:  # each rank validates its own shard, no padding, sums are all-reduced
            sampler = None
            dataset = Subset(
                dataset, list(range(self.dist.rank, len(dataset), self.dist.world_size))
            )
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=train,
            num_workers=self.config.workers,
            generator=generator,
            pin_memory=self.runtime.device.type == "cuda",
        )

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "schedule": {"step": self.step, "elapsed": self.elapsed},
            "epoch": self.epoch,
            "history": self.history,
            "rng": rng_state(),
            "config": json.dumps(self.config.to_dict()),
            "lungseg_version": __version__,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = state["schedule"]["step"]
        self.elapsed = state["schedule"]["elapsed"]
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        set_rng_state(state["rng"])

    def resume(self) -> None:
        if not self.run.holds_run():  # killed before its first checkpoint: nothing lost
            if self.dist.is_main:
                log.info("%s has no checkpoint yet: starting from the first epoch", self.out)
            return
        state = load_checkpoint(self.run.checkpoint)
        try:
            self.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            raise InvalidInputError(
                self.run.checkpoint, f"not a checkpoint of this run ({reason})"
            ) from err
        if self.dist.is_main:
            log.info(
                "resumed %s at epoch %d (best val Dice %.4f)", self.out, self.epoch, self.best_dice
            )

    def precision_used(self) -> str:
        """The autocast the run trained with, and why when ``auto`` measured it."""
        if self.precision_choice is not None:
            return f"auto: {self.precision_choice.describe()}"
        names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        return names[self.runtime.dtype]

    def weights_info(self, **extra: Any) -> WeightsInfo:
        """Metadata for a weights file; the threshold is chosen later, on val (finalize)."""
        return WeightsInfo(
            model_config=self.model.config,
            image_size=tuple(self.config.image_size),
            labels=LABELS_WITH_HEART if self.config.heart else LABELS,
            extra=extra,
        )

    # ----------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        cfg = self.config
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in remove_stale_temporaries(self.out):
                log.info("removed %s, left by a run killed while writing it", stale)
            tb = TensorBoardLog(self.run.tensorboard)
        stop = self._budget_spent() or self.epoch >= cfg.epochs
        while not stop:
            seed_everything(cfg.seed * 1_000_003 + self.epoch * 7_919 + self.dist.rank)
            started = time.perf_counter()
            train_loss = self._train_epoch()
            val = self._validate() if (self.epoch + 1) % cfg.val_every == 0 else None
            self.elapsed += time.perf_counter() - started
            self.epoch += 1
            row = {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "val_loss": val["loss"] if val else float("nan"),
                "val_dice": val["dice"] if val else float("nan"),
                "val_iou": val["iou"] if val else float("nan"),
                **{
                    f"val_dice_{source}": val[f"dice_{source}"] if val else float("nan")
                    for source in self.val_sources
                },
                **(
                    {"val_dice_heart": val["dice_heart"] if val else float("nan")}
                    if cfg.heart
                    else {}
                ),
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": round(self.elapsed, 1),
            }
            self.history.append(row)
            improved = val is not None and self.best_epoch == self.epoch
            if self.dist.is_main:
                if improved:
                    info = self.weights_info(epoch=self.epoch)
                    save_weights(self.run.best_weights, self.model, info)
                save_checkpoint(self.run.checkpoint, self.state_dict())
                write_csv(self.run.metrics, self.history)
                tb.log(row)
                plot_loss_curves(self.run.loss_figure, self.history)
                log.info(
                    "epoch %d  train %.4f  val %.4f  Dice %.4f  IoU %.4f  lr %.2e  %.0fs%s",
                    self.epoch,
                    train_loss,
                    row["val_loss"],
                    row["val_dice"],
                    row["val_iou"],
                    row["lr"],
                    self.elapsed,
                    "  *best*" if improved else "",
                )
            patience_out = (
                cfg.early_stop_patience > 0
                and self.epoch - self.best_epoch >= cfg.early_stop_patience
            )
            stop = (
                broadcast_flag(self._budget_spent() or patience_out, self.dist)
                or self.epoch >= cfg.epochs
            )
            barrier(self.dist)
        if self.dist.is_main:
            tb.close()
        return {
            "epochs": self.epoch,
            "best_val_dice": self.best_dice,
            "best_epoch": self.best_epoch,
            "seconds": self.elapsed,
        }

    def _budget_spent(self) -> bool:
        return (
            self.config.time_budget_min > 0 and self.elapsed >= 60.0 * self.config.time_budget_min
        )

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.runtime.device, non_blocking=True)
        if self.config.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _train_epoch(self) -> float:
        self.ddp.train()
        loader = self._loader(self.train_set, self.epoch, train=True)
        total, count = 0.0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {self.epoch + 1}",
            unit="batch",
            leave=False,
            disable=None if self.dist.is_main else True,  # None: only on a terminal
            dynamic_ncols=True,
        )
        started = time.perf_counter()
        for batch in bar:
            lr = lr_at(
                self.config,
                self.step,
                self.total_steps,
                self.warmup_steps,
                self.elapsed + time.perf_counter() - started,
            )
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            images = self._to_device(batch["image"])
            targets, labelled = self._targets(batch)
            with self.runtime.autocast():
                logits = self.ddp(images)
            loss = self.loss_fn(logits, targets, labelled)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.step += 1
            total += loss.item() * len(images)
            count += len(images)
            seen = count * self.dist.world_size
            bar.set_postfix(
                loss=f"{total / count:.4f}", img_s=f"{seen / (time.perf_counter() - started):.1f}"
            )
        average_buffers(self.model, self.dist)
        summed, n = all_reduce_sum([total, float(count)], self.dist)
        return summed / max(n, 1.0)

    def _targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Targets ``(B, C, h, w)`` and which channels are labelled ``(B, C)`` (None: all)."""
        masks = self._to_device(batch["mask"])
        if not self.config.heart:
            return masks, None
        targets = torch.cat([masks, self._to_device(batch["heart"])], dim=1)
        lungs = torch.ones_like(batch["has_heart"])
        labelled = torch.stack([lungs, batch["has_heart"]], dim=1).to(self.runtime.device)
        return targets, labelled

    @torch.inference_mode()
    def _validate(self) -> dict[str, float]:
        """Loss, IoU and Dice per image at the network's resolution (cheap; for selection).

        Dice is also reported per source; ``dice`` (what selects the best epoch) is the mean
        over images or, with ``selection="source_mean"``, the mean of the per-source means. The
        lungs alone select: a heart channel is reported (``dice_heart``, over the val images
        with a heart mask) but does not choose the epoch, so lung accuracy is what is kept.
        """
        self.ddp.eval()
        index = {source: i for i, source in enumerate(self.val_sources)}
        # loss*n, iou, n, heart dice sum, heart count, then (dice sum, count) per source
        sums = [0.0] * (5 + 2 * len(index))
        for batch in self._loader(self.val_set, self.epoch, train=False):
            images = self._to_device(batch["image"])
            targets, labelled = self._targets(batch)
            with self.runtime.autocast():
                logits = self.model(images)
            logits = logits.float()
            sums[0] += self.loss_fn(logits, targets, labelled).item() * len(images)
            if self.config.heart:
                has_heart = batch["has_heart"].to(self.runtime.device)
                heart_dice = _dice(logits[:, 1] > 0, targets[:, 1] > 0.5)[has_heart]
                sums[3] += heart_dice.sum().item()
                sums[4] += float(len(heart_dice))
            pred = (logits[:, :1] > 0).flatten(1)
            truth = targets[:, :1].flatten(1) > 0.5
            inter = (pred & truth).sum(1).float()
            union = (pred | truth).sum(1).float()
            size = pred.sum(1).float() + truth.sum(1).float()
            dice = torch.where(size > 0, 2 * inter / size.clamp(min=1), 1.0).tolist()
            sums[1] += torch.where(union > 0, inter / union.clamp(min=1), 1.0).sum().item()
            sums[2] += len(images)
            for source, value in zip(batch["source"], dice, strict=True):
                slot = 5 + 2 * index[source]
                sums[slot] += value
                sums[slot + 1] += 1.0
        totals = all_reduce_sum(sums, self.dist)
        loss, iou, n, heart_sum, heart_count = totals[:5]
        dice_sums = {source: totals[5 + 2 * i] for source, i in index.items()}
        counts = {source: totals[6 + 2 * i] for source, i in index.items()}
        by_source = self.config.selection == "source_mean"
        result = {
            "loss": loss / n,
            "iou": iou / n,
            "dice": selection_mean(dice_sums, counts, by_source=by_source),
        }
        result.update({f"dice_{s}": dice_sums[s] / counts[s] for s in index})
        if self.config.heart:
            result["dice_heart"] = heart_sum / heart_count if heart_count else float("nan")
        return result


def _dice(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Dice per image of bool ``(B, h, w)`` masks (1 where both are empty)."""
    pred, truth = pred.flatten(1), truth.flatten(1)
    size = pred.sum(1).float() + truth.sum(1).float()
    return torch.where(size > 0, 2 * (pred & truth).sum(1).float() / size.clamp(min=1), 1.0)


def _wants_cuda(config: TrainConfig) -> bool:
    return config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())


def train(
    config: TrainConfig,
    data: Path,
    split: Path | None,
    out: Path,
    *,
    resume: bool = False,
    preset: str | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run, then pick the threshold on val and write ``model.safetensors``.

    A new run first writes ``config.json`` and ``run.json`` (:class:`RunDir`), so it can be
    resumed with ``lungseg train --resume OUT`` however it was started. ``preset`` and
    ``command`` only go into that record.

    Raises:
        LungsegError: ``out`` already holds a run and ``resume`` is off.
    """
    run = RunDir(Path(out))
    if not resume and run.holds_run():
        raise LungsegError(f"{out} already holds a run; use --resume {out} or another --out")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes
        # Written again on resume (same content): a record half-written by a killed run is
        # replaced before any data is read.
        split_path = str(Path(split).resolve()) if split is not None else None
        if run.path.is_dir():  # a killed run's half-written files go before anything else
            for stale in remove_stale_temporaries(run.path):
                log.info("removed %s, left by a run killed while writing it", stale)
        if resume and run.record_file.is_file():
            _, kept = run.read_start()
            preset, command = preset or kept.preset, command or kept.command
        record = RunRecord(str(Path(data).resolve()), split_path, preset, command)
        run.write_start(config, record)
    trainer = Trainer(config, data, split, out)
    try:
        if resume:
            trainer.resume()
        elif trainer.dist.is_main:
            _log_start(trainer)
        if trainer.dist.is_main and trainer.precision_choice is not None:
            log.info("precision auto: %s", trainer.precision_choice.describe())
        summary = trainer.fit()
        if trainer.dist.is_main:
            summary.update(
                finalize_run(
                    run,
                    config,
                    trainer.data.val,
                    split_name=trainer.data.split_name,
                    fit=summary,
                    precision=trainer.precision_used(),
                )
            )
        barrier(trainer.dist)
        return summary
    finally:
        cleanup(trainer.dist)


def _log_start(trainer: Trainer) -> None:
    config = trainer.config
    log.info("lungseg %s: training %s\n%s", __version__, config.model, config.pretty())
    log.info(
        "train %d / val %d pairs (%s) on %s, autocast %s, world size %d",
        len(trainer.data.train),
        len(trainer.data.val),
        trainer.data.split_name,
        trainer.runtime.device,
        trainer.runtime.dtype,
        trainer.dist.world_size,
    )
    shares = expected_shares([pair.source for pair in trainer.data.train], config.source_weights)
    log.info(
        "share of each epoch by source: %s",
        ", ".join(f"{source} {share:.1%}" for source, share in shares.items()),
    )
