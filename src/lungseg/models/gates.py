"""Skip-connection gates: the decoder decides, per pixel, what to take from the encoder.

Two real kinds (and :class:`PassThroughGate` for none), both returning ``skip * gate`` with
``gate`` in (0, 1), one value per pixel shared by all channels:

* :class:`AdditiveAttentionGate` - Oktay et al. 2018 ("Attention U-Net"): the gate comes from
  ``relu(W_x skip + W_g g)``, purely local. The classic attention baseline.
* :class:`CrossAttentionGate` - the decoder half of MSAG: the decoder features ``g`` attend (multi-
  head cross-attention) to the encoder features of the same scale, so the gate of a pixel can
  depend on anything in the image (e.g. "this bright blob is the other lung's mirror, not an
  edge"); that global logit is added to Oktay's local one before the sigmoid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lungseg.models.attention import MultiHeadAttention2d
from lungseg.models.blocks import make_act, make_norm


def _project(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False), make_norm(norm, out_channels)
    )


class AdditiveAttentionGate(nn.Module):
    """Oktay et al.'s additive attention gate (one spatial gate shared by all channels).

    Args:
        skip_channels: channels of the encoder features being gated.
        gating_channels: channels of the decoder features (upsampled to the skip's scale).
        inter_channels: width of the hidden ``W_x skip + W_g g`` map.
        norm: normalisation name (as in MONAI's ``AttentionBlock``: after each projection).
    """

    def __init__(
        self, skip_channels: int, gating_channels: int, inter_channels: int, *, norm: str = "batch"
    ) -> None:
        super().__init__()
        self.skip_proj = _project(skip_channels, inter_channels, norm)
        self.gating_proj = _project(gating_channels, inter_channels, norm)
        self.psi = nn.Sequential(nn.ReLU(inplace=True), _project(inter_channels, 1, norm))

    def forward(self, skip: Tensor, gating: Tensor) -> Tensor:
        gate = torch.sigmoid(self.psi(self.skip_proj(skip) + self.gating_proj(gating)))  # (B,1,H,W)
        return skip * gate


class CrossAttentionGate(nn.Module):
    """MSAG's skip gate: decoder-to-encoder multi-head cross-attention that gates the skip.

    ``gate = sigmoid(psi(act(W_x skip + W_g g)) + MHCA(q=g, kv=skip))``: Oktay's local logit plus a
    global one, for which each decoder pixel attends to the encoder features of the same scale.
    The result ``skip * gate`` is what the decoder fuses.

    Args:
        skip_channels: channels of the encoder features being gated.
        gating_channels: channels of the decoder features (upsampled to the skip's scale).
        inter_channels: width of the hidden local map.
        heads, head_dim, reduction, query_reduction, impl: see
            :class:`~lungseg.models.attention.MultiHeadAttention2d`.
        act: activation before ``psi``.

    One gate value per pixel (not per channel) and bias instead of norms in the local
    projections: at full resolution each extra pass over the map costs more CPU time than the
    attention itself, and the logits feed a sigmoid, not a convolution.
    """

    def __init__(
        self,
        skip_channels: int,
        gating_channels: int,
        inter_channels: int,
        *,
        heads: int,
        head_dim: int,
        reduction: int = 1,
        query_reduction: int = 1,
        act: str = "relu",
        impl: str = "sdpa",
    ) -> None:
        super().__init__()
        self.attention = MultiHeadAttention2d(
            gating_channels,
            skip_channels,
            1,
            heads=heads,
            head_dim=head_dim,
            reduction=reduction,
            query_reduction=query_reduction,
            impl=impl,
        )
        self.skip_proj = nn.Conv2d(skip_channels, inter_channels, 1)
        self.gating_proj = nn.Conv2d(gating_channels, inter_channels, 1)
        self.act = make_act(act)
        self.psi = nn.Conv2d(inter_channels, 1, 1)

    def forward(self, skip: Tensor, gating: Tensor) -> Tensor:
        local = self.psi(self.act(self.skip_proj(skip) + self.gating_proj(gating)))  # (B,1,H,W)
        global_ = self.attention(gating, skip)  # (B, 1, H, W): decoder queries, encoder keys
        return skip * torch.sigmoid(local + global_)


class PassThroughGate(nn.Module):
    """No gate: the skip goes to the decoder unchanged (the plain U-Net)."""

    def forward(self, skip: Tensor, gating: Tensor) -> Tensor:
        return skip
