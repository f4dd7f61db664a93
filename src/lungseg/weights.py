"""Deployable weights: a safetensors file that carries everything needed to run the model.

The safetensors header metadata holds (as JSON strings) the architecture arguments, the input
size, the preprocessing, the decision threshold chosen on validation data and the lungseg
version, so ``load_weights(path)`` rebuilds a ready model with no other file and no pickle.
Safetensors cannot execute code on load, unlike a pickled checkpoint.
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
from lungseg.errors import InvalidInputError

SHIPPED_WEIGHTS = "lungseg_cxr.safetensors"
PREPROCESSING = "resize(area)+per_image_zscore"


@dataclass
class WeightsInfo:
    """What a weights file says about itself (stored in the safetensors header)."""

    model_config: dict[str, Any]
    image_size: tuple[int, int]
    threshold: float = 0.5
    preprocessing: str = PREPROCESSING
    lungseg_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        return {
            "model_config": json.dumps(self.model_config),
            "image_size": json.dumps(list(self.image_size)),
            "threshold": json.dumps(self.threshold),
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


def load_weights(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, WeightsInfo]:
    """Rebuild the model a weights file describes, in eval mode, in fp32."""
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
        raise InvalidInputError(path, f"not a readable safetensors weights file ({err})") from err
    if "model_config" not in meta:
        raise InvalidInputError(path, "safetensors file has no lungseg metadata (model_config)")
    info = WeightsInfo.from_metadata(meta)
    model = build_from_config(info.model_config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise InvalidInputError(path, f"weights do not fit {info.model_config}: {err}") from err
    return model.to(device).eval(), info


def shipped_weights_path() -> Path:
    """The model that ships inside the package (trained by ``lungseg train --preset cpu``)."""
    path = Path(str(resources.files("lungseg") / "weights" / SHIPPED_WEIGHTS))
    if not path.is_file():
        raise InvalidInputError(path, "the shipped weights are missing from this installation")
    return path
