"""Efficient multi-head attention over feature maps: the global half of every MSAG module.

Full attention over a 512x512 map would need a 262,144 x 262,144 score matrix, so keys and values
are average-pooled by a per-level ``reduction`` (spatial-reduction attention, as in PVT v2 /
SegFormer) and, at the highest resolutions, queries by a smaller ``query_reduction`` (the result
is upsampled back, so each pixel still receives context from the whole image; the convolutional
path beside it keeps the pixel detail). Where the grid is already small (stride 16, and stride 8
with the default ratios) nothing is pooled but keys/values to the bottleneck grid, and at the
bottleneck the attention is exact and global. Every call uses
:func:`torch.nn.functional.scaled_dot_product_attention`.

Cost of one attention call (scores + weighted sum, FLOPs = 2 x MACs): ``4 * N * M * inner`` with
``N`` queries, ``M`` keys and ``inner = heads * head_dim``. Each level has one such call in the
encoder and one in its skip gate (none at the bottleneck). Per call, for the registered presets
(keys/values always on the bottleneck's grid: 16x16 = 256 at a 256x256 input, 1,024 at 512):

====== =========================================  =========================================
       ``msag_unet`` (inner 32/64/128/128/128)    ``msag_unet_cpu`` (inner 16/16/16/32/64)
stride N@256  M@256  GFLOPs | N@512  M@512 GFLOPs  N@256 M@256 GFLOPs | N@512 M@512 GFLOPs
====== =========================================  =========================================
1      4,096  256    0.134  | 16,384 1,024 2.15    1,024 256   0.017  | 4,096 1,024 0.27
2      4,096  256    0.268  | 16,384 1,024 4.30    1,024 256   0.017  | 4,096 1,024 0.27
4      4,096  256    0.537  | 16,384 1,024 8.59    1,024 256   0.017  | 4,096 1,024 0.27
8      1,024  256    0.134  | 4,096  1,024 2.15    1,024 256   0.034  | 4,096 1,024 0.54
16     256    256    0.034  | 1,024  1,024 0.54    256   256   0.017  | 1,024 1,024 0.27
====== =========================================  =========================================

Full attention at stride 1 would instead cost 4 * 65,536^2 * 32 = 550 GFLOPs at 256 and 8.8
TFLOPs at 512 per call. ``lungseg models`` prints the measured totals of each model.

Positions enter through a depthwise 3x3 convolution on the maps that enter attention
(:class:`ConvPositionalEncoding`, as in CPVT / PVT v2), which works at any input size and aspect
ratio, unlike a learned table of absolute positions. ``impl="math"`` computes the same
``softmax(QK^T / sqrt(d)) V`` with plain matmuls, for exporters and for counting FLOPs
(``FlopCounterMode`` does not see the fused CPU kernel).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_IMPLS = ("sdpa", "math")


def to_tokens(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, H*W, C)``; free (no copy) for a channels_last map."""
    batch, channels = x.shape[0], x.shape[1]
    return x.permute(0, 2, 3, 1).reshape(batch, -1, channels)  # (B, N, C)


def to_map(tokens: Tensor, height: int, width: int) -> Tensor:
    """``(B, H*W, C) -> (B, C, H, W)``, laid out channels_last in memory."""
    batch, channels = tokens.shape[0], tokens.shape[2]
    return tokens.reshape(batch, height, width, channels).permute(0, 3, 1, 2)  # (B, C, H, W)


def attention(q: Tensor, k: Tensor, v: Tensor, impl: str = "sdpa") -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` for q ``(B, heads, N, d)`` and k, v ``(B, heads, M, d)``."""
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, heads, N, M)
    return scores.softmax(dim=-1) @ v  # (B, heads, N, d)


class ConvPositionalEncoding(nn.Module):
    """``x + depthwise3x3(x)``: relative position cues that work at any input size (CPVT)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)


class MultiHeadAttention2d(nn.Module):
    """Pre-norm multi-head attention between feature maps, with spatial reduction.

    Self-attention (``context=None``) attends from a map to itself; cross-attention (the decoder's
    gates) passes the decoder features as ``query`` and the encoder features of the same scale as
    ``context``. Positions are encoded on the (pooled) maps that enter attention, so the cost of
    the encoding shrinks with the reduction and the trunk's features are left as they are.

    Args:
        query_channels: channels of the query map.
        context_channels: channels of the context (key/value) map; ``None`` for
            self-attention, where keys and values come from the (position-encoded) query map.
        out_channels: channels of the result (default: ``query_channels``).
        heads: attention heads.
        head_dim: channels per head; ``heads * head_dim`` may be smaller than the map's width.
        reduction: keys and values are average-pooled by this factor in both directions.
        query_reduction: queries are average-pooled by this factor and the result is upsampled
            back (bilinear): reach stays global, cost drops by ``query_reduction**2``. 1 (exact
            per-pixel queries) except where a CPU budget demands it. Must divide ``reduction``.
        impl: ``"sdpa"`` (fused) or ``"math"`` (plain matmul-softmax, same result).
    """

    def __init__(
        self,
        query_channels: int,
        context_channels: int | None = None,
        out_channels: int | None = None,
        *,
        heads: int,
        head_dim: int,
        reduction: int = 1,
        query_reduction: int = 1,
        impl: str = "sdpa",
    ) -> None:
        super().__init__()
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention impl {impl!r}; choose one of {ATTENTION_IMPLS}")
        if query_reduction < 1 or reduction % query_reduction:
            raise ValueError(
                f"query_reduction ({query_reduction}) must be >= 1 and divide reduction "
                f"({reduction})"
            )
        self.heads = heads
        self.head_dim = head_dim
        self.reduction = reduction
        self.query_reduction = query_reduction
        self.impl = impl
        inner = heads * head_dim
        self.query_position = ConvPositionalEncoding(query_channels)
        self.context_position = (
            nn.Identity() if context_channels is None else ConvPositionalEncoding(context_channels)
        )
        context_channels = context_channels or query_channels
        self.query_norm = nn.LayerNorm(query_channels)
        self.context_norm = nn.LayerNorm(context_channels)
        self.to_q = nn.Linear(query_channels, inner)
        self.to_kv = nn.Linear(context_channels, 2 * inner)
        self.proj = nn.Linear(inner, out_channels or query_channels)

    def forward(self, query: Tensor, context: Tensor | None = None) -> Tensor:
        """Attend from every (pooled) pixel of ``query`` to the pooled pixels of ``context``.

        Args:
            query: ``(B, Cq, H, W)``, ``H`` and ``W`` divisible by ``reduction``.
            context: ``(B, Cc, H, W)`` for cross-attention; ``None`` for self-attention.

        Returns:
            ``(B, out_channels, H, W)``: per pixel, a mixture of context values.
        """
        height, width = query.shape[2], query.shape[3]
        if self.query_reduction > 1:
            query = F.avg_pool2d(query, self.query_reduction)  # (B, Cq, H/rq, W/rq)
        query = self.query_position(query)
        if context is None:
            # Pooling the pooled map again is exact (equal blocks) and skips a full-size pass.
            context = query
            context_reduction = self.reduction // self.query_reduction
        else:
            context_reduction = self.reduction
        if context_reduction > 1:
            context = F.avg_pool2d(context, context_reduction)  # (B, Cc, H/r, W/r)
        context = self.context_position(context)
        q = self.to_q(self.query_norm(to_tokens(query)))  # (B, N, heads*d)
        kv = self.to_kv(self.context_norm(to_tokens(context)))  # (B, M, 2*heads*d)
        batch = q.shape[0]
        q = q.reshape(batch, -1, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, N, d)
        kv = kv.reshape(batch, -1, 2, self.heads, self.head_dim)  # (B, M, 2, heads, d)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, heads, M, d)
        out = attention(q, k, v, self.impl)  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(batch, -1, self.heads * self.head_dim)  # (B, N, inner)
        out = to_map(self.proj(out), query.shape[2], query.shape[3])  # (B, out, H/rq, W/rq)
        if self.query_reduction > 1:
            out = F.interpolate(
                out, size=(height, width), mode="bilinear", align_corners=False
            )  # (B, out, H, W)
        return out


class GlobalContextBlock(nn.Module):
    """The encoder half of MSAG: global self-attention added beside a stage's local conv path.

    ``y = x + MHSA(x)`` after the stage's convolutions: the residual keeps the convolutional
    (local) features and adds what every pixel gathers from the whole map, so the stage mixes
    local and global context; pre-norm inside the attention and the residual around it let it
    train from scratch without warm-up tricks.
    """

    def __init__(
        self,
        channels: int,
        *,
        heads: int,
        head_dim: int,
        reduction: int = 1,
        query_reduction: int = 1,
        impl: str = "sdpa",
    ) -> None:
        super().__init__()
        self.attention = MultiHeadAttention2d(
            channels,
            heads=heads,
            head_dim=head_dim,
            reduction=reduction,
            query_reduction=query_reduction,
            impl=impl,
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attention(x)
