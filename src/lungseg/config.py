"""Training presets as typed, readable dataclasses.

A preset is a complete recipe: it is printed in full at the start of a run and saved as
``config.json`` in the run folder, so a run can be rebuilt and resumed from files alone. Presets
are plain values (not subclasses found by name); ``--set key=value`` overrides any field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from lungseg.errors import LungsegError

AUGMENTATIONS = ("basic", "hospital")  # lungseg.data.augment.train_augmentation's kinds
SELECTIONS = ("image_mean", "source_mean")
LOSSES = ("bce+dice", "bce", "dice", "bce+dice+boundary")  # lungseg.losses.build_loss's names


@dataclass
class TrainConfig:
    """Everything one training run depends on.

    Attributes:
        model: registry name (``lungseg models`` lists them).
        model_args: overrides passed to ``create_model`` (width, depth, heads...).
        image_size: (height, width) the network sees; inputs are resized to it.
        batch_size: images per step per process (DDP multiplies it by the world size).
        epochs: upper bound on epochs; early stopping or the time budget may end sooner.
        optimizer: ``"adamw"`` or ``"adam"`` (the paper's).
        lr, min_lr: peak and final learning rate of the cosine schedule.
        warmup_epochs: linear warm-up from ``lr/20`` (fractional values allowed).
        weight_decay: decoupled for AdamW, L2 for Adam.
        loss: ``"bce+dice"``, ``"bce"``, ``"dice"`` or ``"bce+dice+boundary"`` (adds the
            boundary loss of :mod:`lungseg.losses`, aimed at HD95).
        grad_clip: max global grad norm (0 disables).
        augment: train-time augmentation from the data layer.
        augmentation: which set: ``"basic"`` (geometry, brightness/contrast, gamma, light blur
            or noise; the paper-data model's) or ``"hospital"`` (also what differs between
            hospitals: windowing, local contrast, detector noise and blur, resolution,
            field of view, burned-in text and markers; see
            :func:`~lungseg.data.augment.train_augmentation`).
        source_weights: relative sampling weight of one image of each source (pair ids are
            ``source/stem``); unlisted sources weigh 1. ``{"covidqu": 0.5}`` draws a COVID-QU-Ex
            image half as often as a manual-mask image. An epoch still draws as many images as
            the training set holds, with replacement when any weight differs from 1.
        selection: what picks the best epoch and the threshold on val: ``"image_mean"`` (mean
            Dice over val images) or ``"source_mean"`` (the mean over sources of each source's
            mean Dice, so a large source cannot hide a loss on a small one).
        heart: add a heart output channel (channel 1, beside the lungs), trained on the pairs
            that have a heart mask (Wingspan's ``heart/``); other images add no heart loss.
            Needs at least one training pair with a heart mask.
        soft_masks: train on each pixel's lung fraction at the network size instead of the mask
            cut at 0.5 (the boundary keeps its sub-pixel position; validation stays binary).
        precision: ``"auto"`` (bf16 autocast on CPU, fp16 AMP on CUDA), ``"bf16"``, ``"fp16"``
            or ``"fp32"``.
        channels_last: NHWC memory format (faster convolutions on CPU and tensor cores).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        workers: DataLoader worker processes.
        seed: seeds Python, NumPy, torch and the per-epoch data order.
        deterministic: ``torch.use_deterministic_algorithms`` (slower; exact resume checks).
        early_stop_patience: epochs without a better val Dice before stopping (0 disables).
        time_budget_min: wall-clock budget in minutes (0 = none). With a budget the cosine
            schedule follows elapsed time, so every model ends its schedule when the budget ends;
            this is how models of different speed get an equal budget.
        val_every: validate every N epochs.
    """

    model: str = "msag_unet_cpu"
    model_args: dict[str, Any] = field(default_factory=dict)
    image_size: tuple[int, int] = (256, 256)
    batch_size: int = 8
    epochs: int = 100
    optimizer: str = "adamw"
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 2.0
    weight_decay: float = 1e-4
    loss: str = "bce+dice"
    grad_clip: float = 1.0
    augment: bool = True
    augmentation: str = "basic"
    source_weights: dict[str, float] = field(default_factory=dict)
    selection: str = "image_mean"
    heart: bool = False
    soft_masks: bool = False
    precision: str = "auto"
    channels_last: bool = True
    device: str = "auto"
    workers: int = 1
    seed: int = 0
    deterministic: bool = False
    early_stop_patience: int = 0
    time_budget_min: float = 0.0
    val_every: int = 1

    def __post_init__(self) -> None:
        """Refuse impossible values now, before a trainer decodes a single image."""
        self.image_size = _size(self.image_size)
        choices = {
            "optimizer": ("adamw", "adam"),
            "loss": LOSSES,
            "precision": ("auto", "fp32", "bf16", "fp16"),
            "device": ("auto", "cpu", "cuda"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise LungsegError(
                    f"unknown {name} {getattr(self, name)!r}; use one of: {', '.join(allowed)}"
                )
        positive = ("batch_size", "epochs", "lr", "val_every")
        non_negative = (
            "min_lr",
            "warmup_epochs",
            "weight_decay",
            "grad_clip",
            "workers",
            "early_stop_patience",
            "time_budget_min",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise LungsegError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise LungsegError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if min(self.image_size) < 16:
            raise LungsegError(f"image_size must be at least 16x16, got {self.image_size}")
        if not isinstance(self.model_args, dict):
            raise LungsegError(f"model_args must be a mapping, got {self.model_args!r}")
        if self.heart and "out_channels" in self.model_args:
            raise LungsegError("heart=true sets out_channels itself; drop model_args.out_channels")
        if self.augmentation not in AUGMENTATIONS:
            raise LungsegError(
                f"unknown augmentation {self.augmentation!r}; use {' or '.join(AUGMENTATIONS)}"
            )
        if self.selection not in SELECTIONS:
            raise LungsegError(
                f"unknown selection {self.selection!r}; use {' or '.join(SELECTIONS)}"
            )
        if not isinstance(self.source_weights, dict) or not all(
            isinstance(w, (int, float)) and w >= 0 for w in self.source_weights.values()
        ):
            raise LungsegError(
                f"source_weights must map source names to weights >= 0, got {self.source_weights!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LungsegError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**values)

    def pretty(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        parts = value.lower().replace("x", ",").split(",")
        value = [int(p) for p in parts if p.strip()]
    size = tuple(int(v) for v in value)
    if len(size) == 1:
        size = size * 2
    if len(size) != 2:
        raise LungsegError(f"image_size must be N or HxW, got {value!r}")
    return size  # type: ignore[return-value]


# The shipped model's recipe on a 2-core CPU, for several sources at once
# (splits/multi_source.json): channels_last, 256x256, bf16 only where it is measured to be faster
# (precision "auto"), the "hospital" augmentation, COVID-QU-Ex's model-made masks drawn at half the
# rate of the hand-drawn ones, and a wall-clock budget so the run ends on time on any machine.
_CPU = TrainConfig(
    model="msag_unet_cpu",
    image_size=(256, 256),
    batch_size=8,
    epochs=400,
    optimizer="adamw",
    lr=2e-3,
    min_lr=1e-5,
    warmup_epochs=2.0,
    weight_decay=1e-4,
    time_budget_min=90.0,
    workers=1,
    augmentation="hospital",
    source_weights={"covidqu": 0.5},
    selection="source_mean",
)

PRESETS: dict[str, TrainConfig] = {
    # The paper's recipe, unchanged: 512x512, batch 2, Adam, lr 1e-4 decaying to 1e-6, 50 epochs.
    "paper": TrainConfig(
        model="msag_unet",
        image_size=(512, 512),
        batch_size=2,
        epochs=50,
        optimizer="adam",
        lr=1e-4,
        min_lr=1e-6,
        warmup_epochs=0.0,
        weight_decay=0.0,
        grad_clip=0.0,
        precision="auto",
    ),
    "cpu": _CPU,
    # The earlier shipped model's recipe, for the paper split's 282 training images
    # (splits/paper_433.json): the same network and schedule, the basic augmentation, 45 minutes.
    "cpu_paper": dataclasses.replace(
        _CPU,
        time_budget_min=45.0,
        augmentation="basic",
        source_weights={},
        selection="image_mean",
    ),
    # A seconds-long run for tests and smoke checks (tiny images; not a model to use).
    "smoke": TrainConfig(
        model="msag_unet_cpu",
        image_size=(64, 64),
        batch_size=4,
        epochs=2,
        lr=3e-3,
        warmup_epochs=0.0,
        workers=0,
        augment=False,
    ),
}


def get_preset(name: str) -> TrainConfig:
    """A fresh copy of a named preset (so callers can modify it freely)."""
    if name not in PRESETS:
        raise LungsegError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return TrainConfig.from_dict(PRESETS[name].to_dict())


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``key=value`` strings (values parsed as JSON when they parse, else kept as text).

    ``model_args.width=24`` sets one entry of the ``model_args`` dict and
    ``source_weights.covidqu=0.5`` one of ``source_weights``.
    """
    values = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise LungsegError(f"override {item!r} is not key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        group, dot, entry = key.partition(".")
        if dot and group in ("model_args", "source_weights"):
            values[group] = {**values[group], entry: value}
        elif key not in values:
            raise LungsegError(f"unknown config field {key!r} in override {item!r}")
        else:
            values[key] = value
    return TrainConfig.from_dict(values)
