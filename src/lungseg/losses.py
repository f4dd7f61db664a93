"""Segmentation losses: BCE + soft Dice, the usual pair for binary masks.

BCE gives well-behaved per-pixel gradients early in training; soft Dice optimises the overlap
the metric rewards and is insensitive to the lungs covering only ~25% of the image.

A network with several output channels (lungs, heart) is trained on partially labelled data:
only some sources have heart masks. ``labelled`` says, per image and channel, whether a target
exists; an unlabelled channel adds nothing to the loss and gets no gradient from that image (the
masked-loss scheme of multi-dataset chest X-ray work), instead of being taught "no heart here".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lungseg.errors import LungsegError


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged over the batch (images weigh equally, as in the metric)."""
    prob = torch.sigmoid(logits.float()).flatten(1)  # (B, H*W)
    target = target.float().flatten(1)
    inter = (prob * target).sum(1)
    denom = prob.sum(1) + target.sum(1)
    return (1.0 - (2.0 * inter + eps) / (denom + eps)).mean()


class SegmentationLoss(nn.Module):
    """Weighted sum of BCE-with-logits and soft Dice; either weight may be zero."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        labelled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sum over channels of each channel's loss on the images labelled for it.

        Args:
            logits: ``(B, C, H, W)``.
            target: ``(B, C, H, W)`` in [0, 1]; anything where a channel is unlabelled.
            labelled: bool ``(B, C)``; ``None`` means every channel of every image.
        """
        if labelled is None:
            labelled = torch.ones(target.shape[:2], dtype=torch.bool, device=target.device)
        loss = logits.new_zeros((), dtype=torch.float32)
        for channel in range(logits.shape[1]):
            rows = labelled[:, channel]
            if not bool(rows.any()):
                continue
            channel_logits = logits[rows, channel : channel + 1].float()
            channel_target = target[rows, channel : channel + 1].float()
            if self.bce_weight:
                loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(
                    channel_logits, channel_target
                )
            if self.dice_weight:
                loss = loss + self.dice_weight * soft_dice_loss(channel_logits, channel_target)
        return loss


def build_loss(name: str) -> SegmentationLoss:
    """``"bce+dice"``, ``"bce"`` or ``"dice"``."""
    weights = {"bce+dice": (1.0, 1.0), "bce": (1.0, 0.0), "dice": (0.0, 1.0)}
    if name not in weights:
        raise LungsegError(f"unknown loss {name!r}; choose one of: {', '.join(weights)}")
    return SegmentationLoss(*weights[name])
