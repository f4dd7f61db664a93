"""Deployable weights: a safetensors file that carries everything needed to run the model.

The safetensors header metadata holds (as JSON strings) the architecture arguments, the input
size, the preprocessing, the decision thresholds chosen on validation data (lungs, and the
heart where there is a heart channel) and the lungseg version, so ``load_weights(path)``
rebuilds a ready model with no other file and no pickle. Safetensors cannot execute code on
load, unlike a pickled checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lungseg import __version__
from lungseg.atomic import atomic_write_bytes
from lungseg.errors import InvalidInputError, LungsegError

SHIPPED_WEIGHTS = "lungseg_cxr.safetensors"
PREPROCESSING = "resize(area)+per_image_zscore"
# What each output channel is, in order; files written before the heart channel have lungs only.
LABELS: tuple[str, ...] = ("lungs",)
LABELS_WITH_HEART: tuple[str, ...] = ("lungs", "heart")


@dataclass
class WeightsInfo:
    """What a weights file says about itself (stored in the safetensors header)."""

    model_config: dict[str, Any]
    image_size: tuple[int, int]
    threshold: float = 0.5
    heart_threshold: float = 0.5
    labels: tuple[str, ...] = LABELS
    preprocessing: str = PREPROCESSING
    lungseg_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        return {
            "model_config": json.dumps(self.model_config),
            "image_size": json.dumps(list(self.image_size)),
            "threshold": json.dumps(self.threshold),
            "heart_threshold": json.dumps(self.heart_threshold),
            "labels": json.dumps(list(self.labels)),
            "preprocessing": self.preprocessing,
            "lungseg_version": self.lungseg_version,
            "extra": json.dumps(self.extra),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> WeightsInfo:
        return cls(
            model_config=json.loads(meta["model_config"]),
            image_size=tuple(json.loads(meta["image_size"])),  # type: ignore[arg-type]
            threshold=float(json.loads(meta.get("threshold", "0.5"))),
            heart_threshold=float(json.loads(meta.get("heart_threshold", "0.5"))),
            labels=tuple(json.loads(meta.get("labels", json.dumps(list(LABELS))))),
            preprocessing=meta.get("preprocessing", PREPROCESSING),
            lungseg_version=meta.get("lungseg_version", "unknown"),
            extra=json.loads(meta.get("extra", "{}")),
        )


def save_weights(
    path: str | Path, model: nn.Module, info: WeightsInfo, *, half: bool = False
) -> None:
    """Write ``model``'s weights and ``info`` atomically; ``half`` stores fp16 (half the size)."""
    from safetensors.torch import save

    model = getattr(model, "module", model)  # unwrap DDP
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor
    atomic_write_bytes(path, save(state, metadata=info.to_metadata()))


def rewrite_metadata(path: str | Path, info: WeightsInfo) -> None:
    """Replace a weights file's header with ``info``, keeping its tensors and their dtype
    (atomically): what a choice made on val after training (quality model, heart threshold)
    writes."""
    from safetensors.torch import load_file, save

    atomic_write_bytes(path, save(load_file(str(path)), metadata=info.to_metadata()))


def load_weights(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, WeightsInfo]:
    """Rebuild the model a weights file describes, in eval mode, in fp32.

    The file is untrusted input: nothing in it is unpickled, its metadata is validated, and the
    architecture it names is first built on the ``meta`` device and compared, name by name and
    shape by shape, with the stored tensors, so forged metadata cannot make it allocate memory.

    Raises:
        InvalidInputError: a missing, truncated or non-safetensors file (a pickled ``.pt`` gets
            a hint), unusable metadata, or tensors that do not fit the architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    from lungseg.models import build_from_config

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(path, "weights file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        reason = f"not a readable safetensors weights file ({err}){_pickle_hint(path)}"
        raise InvalidInputError(path, reason) from err
    if "model_config" not in meta:
        raise InvalidInputError(path, "safetensors file has no lungseg metadata (model_config)")
    try:
        info = WeightsInfo.from_metadata(meta)
        size_ok = len(info.image_size) == 2 and all(
            isinstance(v, int) and v > 0 for v in info.image_size
        )
        cuts_ok = all(0.0 <= cut <= 1.0 for cut in (info.threshold, info.heart_threshold))
        if not size_ok or not cuts_ok:
            raise ValueError(
                f"image_size {info.image_size}, thresholds {info.threshold}, {info.heart_threshold}"
            )
        # Shapes only, no memory: forged metadata may describe a network of terabytes.
        with torch.device("meta"):
            model = build_from_config(info.model_config)
    except (LungsegError, ValueError, TypeError, KeyError) as err:
        raise InvalidInputError(path, f"unusable lungseg metadata ({err})") from err
    _check_fits(path, model, state)
    try:
        _check_labels(info)
    except ValueError as err:
        raise InvalidInputError(path, f"unusable lungseg metadata ({err})") from err
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model = model.to_empty(device="cpu")
    model.load_state_dict(state)
    if any(name not in state for name, _ in model.named_buffers()):
        # A non-persistent buffer, left unset by to_empty: build the checked model for real.
        model = build_from_config(info.model_config)
        model.load_state_dict(state)
    return model.to(device).eval(), info


def _check_labels(info: WeightsInfo) -> None:
    """Refuse labels that are not lungseg's, or do not match the output channels."""
    if info.labels not in (LABELS, LABELS_WITH_HEART):
        raise ValueError(f"labels {list(info.labels)}")
    if info.model_config.get("out_channels", 1) != len(info.labels):
        raise ValueError(
            f"{len(info.labels)} labels for {info.model_config.get('out_channels', 1)} "
            "output channels"
        )


def _pickle_hint(path: Path) -> str:
    """What to do when the file is a PyTorch pickle (``torch.save``: a zip or a bare pickle)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(2)
    except OSError:
        return ""
    if head == b"PK" or head[:1] == b"\x80":
        return (
            "; it looks like a pickled PyTorch file, which lungseg never loads (unpickling can "
            "run code): use the model.safetensors of a lungseg run"
        )
    return ""


def _check_fits(path: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Refuse tensors whose names or shapes differ from the architecture the metadata names."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found == expected:
        return
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    example = (
        f"{reshaped[0]!r} is {found[reshaped[0]]} in the file, {expected[reshaped[0]]} in the model"
        if reshaped
        else f"e.g. {(missing + unexpected)[0]!r}"
    )
    raise InvalidInputError(
        path,
        f"weights do not fit the {getattr(model, 'config', {}).get('name')} architecture in its "
        f"metadata: {len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} of "
        f"another shape ({example})",
    )


def shipped_weights_path() -> Path:
    """The model that ships inside the package (trained by ``lungseg train --preset cpu``)."""
    path = Path(str(resources.files("lungseg") / "weights" / SHIPPED_WEIGHTS))
    if not path.is_file():
        raise InvalidInputError(path, "the shipped weights are missing from this installation")
    return path
