"""Convolutional building blocks; normalisation and activation are chosen by name.

Names (not classes) keep ``model.config`` JSON-serialisable. BatchNorm is the default because it
trains fastest from scratch at the batch sizes a CPU allows; GroupNorm is there for tiny batches.
"""

from __future__ import annotations

from torch import nn

NORMS = ("batch", "group", "instance")
ACTIVATIONS = ("relu", "gelu", "silu")
CONV_BLOCKS = ("plain", "separable")


def make_norm(name: str, channels: int) -> nn.Module:
    """A 2-D normalisation layer for ``channels`` feature maps."""
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "group":
        # 8 channels per group where possible: stable statistics even at batch size 1.
        return nn.GroupNorm(max(1, channels // 8), channels)
    if name == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"unknown norm {name!r}; choose one of {NORMS}")


def make_act(name: str) -> nn.Module:
    """An activation layer (in-place where that is safe, to save memory at full resolution)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "gelu":
        return nn.GELU()
    if name == "silu":
        return nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


class ConvNormAct(nn.Sequential):
    """``conv -> norm -> act``; the conv has no bias because the norm's shift replaces it."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        groups: int = 1,
        norm: str = "batch",
        act: str = "relu",
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            make_norm(norm, out_channels),
            make_act(act),
        )


class SeparableConvNormAct(nn.Sequential):
    """Depthwise 3x3 then pointwise 1x1 (MobileNet-style): ~8x fewer MACs than a plain 3x3."""

    def __init__(
        self, in_channels: int, out_channels: int, *, norm: str = "batch", act: str = "relu"
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            ConvNormAct(in_channels, out_channels, 1, norm=norm, act=act),
        )


class ConvBlock(nn.Sequential):
    """The U-Net's double convolution: the local (convolutional) path of every stage.

    Args:
        in_channels: input feature maps.
        out_channels: output feature maps (both convolutions produce this many).
        block: ``"plain"`` (two 3x3 convs, the classic U-Net) or ``"separable"`` (a plain 3x3
            then a depthwise-separable 3x3; cheaper where widths are large).
        norm: a name from :data:`NORMS`.
        act: a name from :data:`ACTIVATIONS`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        block: str = "plain",
        norm: str = "batch",
        act: str = "relu",
    ) -> None:
        if block not in CONV_BLOCKS:
            raise ValueError(f"unknown conv block {block!r}; choose one of {CONV_BLOCKS}")
        first = ConvNormAct(in_channels, out_channels, norm=norm, act=act)
        if block == "plain":
            second: nn.Module = ConvNormAct(out_channels, out_channels, norm=norm, act=act)
        else:
            second = SeparableConvNormAct(out_channels, out_channels, norm=norm, act=act)
        super().__init__(first, second)
