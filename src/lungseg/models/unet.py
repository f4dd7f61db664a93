"""One U-Net with pluggable attention, and the registered family built from it.

The encoder has ``depth`` resolution levels (stride 1, 2, ..., 2**(depth-1) after an optional
pixel-unshuffle stem that starts them at stride ``stem_stride``); each level is a
double convolution (the local path), optionally followed by a :class:`GlobalContextBlock` (multi-
head self-attention beside it). The decoder upsamples with a 2x2 transposed convolution, passes
the encoder features of the same scale through a skip gate, concatenates and convolves. A 1x1
convolution gives one logit per pixel and label (with a stem: a 3x3 convolution gives one per
sub-pixel, and a pixel shuffle puts them back at the input's resolution). Variants differ only in
arguments:

* ``unet`` - no attention, no gates: the plain baseline.
* ``attention_unet`` - Oktay et al.'s additive gates on every skip.
* ``msag_unet`` - MSAG: self-attention at every encoder level and cross-attention gates on every
  skip (paper scale: base width 32, 5 levels).
* ``msag_unet_cpu`` - the same design at a width, stem and attention budget chosen by measurement
  for fast CPU inference (``benchmarks/models.py``).

Every model has ``config`` (the constructor arguments, JSON-ready, with the registry ``name``) and
``stride`` (inputs must have sides divisible by it; :func:`pad_to_stride` pads and crops back).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lungseg.errors import LungsegError
from lungseg.models.attention import GlobalContextBlock
from lungseg.models.blocks import ConvBlock
from lungseg.models.gates import AdditiveAttentionGate, CrossAttentionGate, PassThroughGate
from lungseg.models.registry import register_model

SKIP_GATES = ("none", "additive", "msag")


def pad_to_stride(
    x: Tensor, stride: int, mode: str = "replicate"
) -> tuple[Tensor, tuple[Any, slice, slice]]:
    """Pad a ``(C, H, W)`` or ``(B, C, H, W)`` tensor so ``H`` and ``W`` divide by ``stride``.

    Padding is split evenly between the two sides so the image stays centred; ``"replicate"``
    continues the border instead of adding black bars a network might read as edges.

    Returns:
        ``(padded, crop)``; ``output[crop]`` cuts a same-size output back to ``H x W``.
    """
    height, width = x.shape[-2], x.shape[-1]
    pad_h, pad_w = -height % stride, -width % stride
    top, left = pad_h // 2, pad_w // 2
    crop = (..., slice(top, top + height), slice(left, left + width))
    if pad_h == 0 and pad_w == 0:
        return x, crop
    padded = F.pad(x, (left, pad_w - left, top, pad_h - top), mode=mode)
    return padded, crop


class UNet(nn.Module):
    """A U-Net whose encoder levels may carry self-attention and whose skips may carry gates.

    Args:
        name: the registry name, recorded in :attr:`config`.
        in_channels: input channels (1 for a grey X-ray).
        out_channels: logits per pixel, one per label (lungs, then heart when trained with
            it); independent sigmoids, since the heart and the lungs overlap in projection.
        base_width: channels at full resolution; each level doubles them up to ``max_width``.
        depth: resolution levels; the network stride is ``2 ** (depth - 1)``.
        max_width: cap on channels at the deep levels.
        block: ``"plain"`` or ``"separable"`` double convolution (:class:`ConvBlock`).
        norm: ``"batch"``, ``"group"`` or ``"instance"``.
        act: ``"relu"``, ``"gelu"`` or ``"silu"``.
        attention_levels: encoder levels (0 = full resolution) with a self-attention block.
        heads: attention heads per level (all ``depth`` levels; default ``width // head_dim``,
            clamped to 1..4).
        head_dim: channels per attention head.
        reductions: key/value pooling factor per level (default ``2 ** (depth - 1 - level)``:
            keys and values always on the bottleneck's grid, 16x16 at a 256x256 input).
        query_reductions: query pooling factor per level (default 1: a query per pixel).
        skip_gate: ``"none"``, ``"additive"`` (Oktay) or ``"msag"`` (cross-attention).
        gate_levels: levels ``0 .. depth-2`` whose skip is gated (default all when gated).
        attention_impl: ``"sdpa"`` (fused) or ``"math"`` (plain matmuls, for export/counting).
        stem_stride: 1, or 2 to fold each 2x2 block of pixels into channels before the first
            level (pixel unshuffle, lossless) and unfold the logits after the head (pixel
            shuffle): no convolution then runs at the input's full resolution, where a narrow
            layer is bound by memory traffic rather than arithmetic on a CPU.
    """

    def __init__(
        self,
        *,
        name: str = "unet",
        in_channels: int = 1,
        out_channels: int = 1,
        base_width: int = 32,
        depth: int = 5,
        max_width: int = 512,
        block: str = "plain",
        norm: str = "batch",
        act: str = "relu",
        attention_levels: list[int] | None = None,
        heads: list[int] | None = None,
        head_dim: int = 32,
        reductions: list[int] | None = None,
        query_reductions: list[int] | None = None,
        skip_gate: str = "none",
        gate_levels: list[int] | None = None,
        attention_impl: str = "sdpa",
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if stem_stride not in (1, 2):
            raise LungsegError(f"stem_stride must be 1 or 2, got {stem_stride}")
        if out_channels < 1:
            raise LungsegError(f"out_channels must be >= 1, got {out_channels}")
        if depth < 2:
            raise LungsegError(f"depth must be >= 2 (one downsampling at least), got {depth}")
        if skip_gate not in SKIP_GATES:
            raise LungsegError(f"unknown skip_gate {skip_gate!r}; choose one of {SKIP_GATES}")
        widths = [min(base_width * 2**level, max_width) for level in range(depth)]
        attention_levels = sorted(attention_levels or [])
        heads = heads or [max(1, min(4, width // head_dim)) for width in widths]
        reductions = reductions or [2 ** (depth - 1 - level) for level in range(depth)]
        query_reductions = query_reductions or [1] * depth
        if gate_levels is None:
            gate_levels = [] if skip_gate == "none" else list(range(depth - 1))
        gate_levels = sorted(gate_levels)
        if skip_gate == "none" and gate_levels:
            raise LungsegError(f"gate_levels {gate_levels} need skip_gate 'additive' or 'msag'")
        for arg, values in (
            ("heads", heads),
            ("reductions", reductions),
            ("query_reductions", query_reductions),
        ):
            if len(values) != depth:
                raise LungsegError(f"{arg} needs one value per level ({depth}), got {values}")
        for arg, levels, top in (
            ("attention_levels", attention_levels, depth),
            ("gate_levels", gate_levels, depth - 1),
        ):
            if any(not 0 <= level < top for level in levels):
                raise LungsegError(f"{arg} must lie in 0..{top - 1}, got {levels}")

        self.config: dict[str, Any] = {
            "name": name,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_width": base_width,
            "depth": depth,
            "max_width": max_width,
            "block": block,
            "norm": norm,
            "act": act,
            "attention_levels": attention_levels,
            "heads": list(heads),
            "head_dim": head_dim,
            "reductions": list(reductions),
            "query_reductions": list(query_reductions),
            "skip_gate": skip_gate,
            "gate_levels": gate_levels,
            "attention_impl": attention_impl,
            "stem_stride": stem_stride,
        }
        self.in_channels = in_channels
        self.stride = stem_stride * 2 ** (depth - 1)
        self.stem: nn.Module = nn.PixelUnshuffle(stem_stride) if stem_stride > 1 else nn.Identity()
        stem_channels = in_channels * stem_stride**2

        def attention_args(level: int) -> dict[str, Any]:
            return {
                "heads": heads[level],
                "head_dim": head_dim,
                "reduction": reductions[level],
                "query_reduction": query_reductions[level],
                "impl": attention_impl,
            }

        conv_args = {"block": block, "norm": norm, "act": act}
        self.encoder = nn.ModuleList()
        for level, width in enumerate(widths):
            stage = nn.Sequential()
            if level > 0:
                stage.append(nn.MaxPool2d(2))
            level_in = widths[level - 1] if level else stem_channels
            stage.append(ConvBlock(level_in, width, **conv_args))
            if level in attention_levels:
                stage.append(GlobalContextBlock(width, **attention_args(level)))
            self.encoder.append(stage)

        # Decoder modules are listed deepest first, the order forward() uses them in.
        self.upsamplers = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.fusions = nn.ModuleList()
        for level in reversed(range(depth - 1)):
            width = widths[level]
            self.upsamplers.append(nn.ConvTranspose2d(widths[level + 1], width, 2, stride=2))
            inter = max(1, width // 2)
            if level not in gate_levels:
                gate: nn.Module = PassThroughGate()
            elif skip_gate == "additive":
                gate = AdditiveAttentionGate(width, width, inter, norm=norm)
            else:
                gate = CrossAttentionGate(width, width, inter, act=act, **attention_args(level))
            self.gates.append(gate)
            self.fusions.append(ConvBlock(2 * width, width, **conv_args))
        if stem_stride > 1:
            # Sub-pixel logits need their neighbours' features, hence 3x3 rather than 1x1.
            self.head: nn.Module = nn.Sequential(
                nn.Conv2d(widths[0], out_channels * stem_stride**2, 3, padding=1),
                nn.PixelShuffle(stem_stride),
            )
        else:
            self.head = nn.Conv2d(widths[0], out_channels, 1)

    def check_input(self, x: Tensor) -> None:
        """Raise a :class:`LungsegError` that says how to fix an input the network cannot take."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise LungsegError(
                f"expected a (B, {self.in_channels}, H, W) tensor, got shape {tuple(x.shape)}"
            )
        height, width = x.shape[2], x.shape[3]
        if height % self.stride or width % self.stride:
            want_h = height + (-height % self.stride)
            want_w = width + (-width % self.stride)
            raise LungsegError(
                f"input is {height}x{width} (HxW) but sides must be multiples of the network "
                f"stride {self.stride}: pad to {want_h}x{want_w} "
                "(lungseg.models.pad_to_stride does it and gives the crop back)"
            )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> logits ``(B, out_channels, H, W)``."""
        if not torch.jit.is_tracing():  # a tracer would bake the check's branches in
            self.check_input(x)
        skips = []
        x = self.stem(x)
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for upsample, gate, fuse in zip(self.upsamplers, self.gates, self.fusions, strict=True):
            x = upsample(x)
            skip = gate(skips.pop(), x)
            x = fuse(torch.cat([x, skip], dim=1))
        return self.head(x)


_UNET_ARGS = frozenset(inspect.signature(UNet).parameters) - {"name"}


def _build(name: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> UNet:
    unknown = sorted(set(overrides) - _UNET_ARGS)
    if unknown:
        raise LungsegError(
            f"model {name!r} has no argument(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(_UNET_ARGS))}"
        )
    try:
        return UNet(name=name, **{**defaults, **overrides})
    except ValueError as err:  # a block's own check (unknown norm, a reduction that won't divide)
        raise LungsegError(f"model {name!r}: {err}") from err


@register_model
def unet(**overrides: Any) -> UNet:
    """The plain U-Net (Ronneberger et al. 2015) at base width 32, 5 levels."""
    return _build("unet", {}, overrides)


@register_model
def attention_unet(**overrides: Any) -> UNet:
    """Attention U-Net (Oktay et al. 2018): additive attention gates on every skip."""
    return _build("attention_unet", {"skip_gate": "additive"}, overrides)


@register_model
def msag_unet(**overrides: Any) -> UNet:
    """MSAG-UNet: self-attention at every encoder level, cross-attention gates on every skip.

    Paper scale (base width 32, 5 levels, heads of 32 channels). Queries are pooled 4x at stride 1
    and 2x at stride 2 (keys and values at every level sit on the bottleneck's grid), which keeps
    attention and gates to about 4 GFLOPs of the model's 28 at 256x256 (costs per level:
    ``lungseg.models.attention``).
    """
    depth = overrides.get("depth", 5)
    defaults = {
        "attention_levels": list(range(depth)),
        "skip_gate": "msag",
        "query_reductions": [2 ** max(0, 2 - level) for level in range(depth)],
    }
    return _build("msag_unet", defaults, overrides)


@register_model
def msag_unet_cpu(**overrides: Any) -> UNet:
    """MSAG-UNet sized for fast CPU inference; stem, widths and attention budget by measurement.

    A pixel-unshuffle stem (2x2 pixels into 4 channels), then 4 levels of base width 16 (0.55 M
    parameters at 256x256, stride 16 as before), one 16-channel head per level up to stride 4,
    then 2 and 4; queries pooled to a 32x32 grid at 256x256 at every level above the bottleneck.
    The stem replaces the stride-1 level of width 8 the network had before, whose narrow
    convolutions over full 256x256 maps wait on memory rather than arithmetic on a CPU
    (``benchmarks/models.py``: 25.4 -> 14.0 ms at batch 1 in bf16 on this project's
    AVX512-BF16 machine, README "Speed on a CPU"); attention costs about as much time as the
    convolutions beside it in eager PyTorch on a CPU (each call is a dozen small kernels), so
    the convolutions stay narrow.
    Weights files written before the stem existed (stride-1, base width 8, 5 levels) record
    their own arguments and load unchanged.
    """
    depth = overrides.get("depth", 4)
    defaults = {
        "stem_stride": 2,
        "base_width": 16,
        "depth": depth,
        "max_width": 128,
        "attention_levels": list(range(depth)),
        "skip_gate": "msag",
        "head_dim": 16,
        "heads": [1] * (depth - 2) + [2, 4],
        "query_reductions": [2 ** max(0, depth - 2 - level) for level in range(depth)],
    }
    return _build("msag_unet_cpu", defaults, overrides)
