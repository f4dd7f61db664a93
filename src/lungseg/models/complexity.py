"""How big and how costly a model is: parameters, FLOPs, and where its attention sits.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode`, which reports FLOPs as
2 x multiply-accumulates (a 3x3 conv from C to C channels on an H x W map is ``2*9*C*C*H*W``).
It counts matmuls and convolutions only (no norms, activations, pooling, softmax), and it does not
see the fused CPU attention kernel, so models are counted on a copy that uses the plain
matmul-softmax attention path, which does the same arithmetic.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lungseg.models.attention import MultiHeadAttention2d


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, height: int, width: int, batch: int = 1) -> int:
    """FLOPs (2 x MACs) of one eval-mode forward pass on a ``(batch, C, height, width)`` input."""
    # On the meta device nothing is computed: the counter only needs the shapes.
    counted = copy.deepcopy(model).eval().to("meta")
    for module in counted.modules():
        if isinstance(module, MultiHeadAttention2d):
            module.impl = "math"
    channels = getattr(counted, "in_channels", 1)
    x = torch.zeros(batch, channels, height, width, device="meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        counted(x)
    return counter.get_total_flops()


def attention_summary(config: dict) -> str:
    """Which levels carry attention, e.g. ``"enc 0-4 + msag gates 0-3"`` (0 = full resolution)."""
    parts = []
    if config.get("attention_levels"):
        parts.append(f"enc {_ranges(config['attention_levels'])}")
    if config.get("skip_gate", "none") != "none" and config.get("gate_levels"):
        parts.append(f"{config['skip_gate']} gates {_ranges(config['gate_levels'])}")
    return " + ".join(parts) or "none"


def _ranges(levels: list[int]) -> str:
    """``[0, 1, 2, 4] -> "0-2,4"``."""
    groups: list[list[int]] = []
    for level in sorted(levels):
        if groups and level == groups[-1][-1] + 1:
            groups[-1].append(level)
        else:
            groups.append([level])
    return ",".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups)
