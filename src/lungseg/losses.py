"""Segmentation losses: BCE + soft Dice, the usual pair for binary masks, and a boundary term.

BCE gives well-behaved per-pixel gradients early in training; soft Dice optimises the overlap
the metric rewards and is insensitive to the lungs covering only ~25% of the image. Neither
cares WHERE a wrong pixel is, which is what HD95 measures: the boundary loss (Kervadec et al.,
"Boundary loss for highly unbalanced segmentation", MIDL 2019) weighs each predicted
probability by the pixel's signed distance to the target's border, so a false positive far
from the lungs costs in proportion to its distance and one on the border almost nothing.

A network with several output channels (lungs, heart) is trained on partially labelled data:
only some sources have heart masks. ``labelled`` says, per image and channel, whether a target
exists; an unlabelled channel adds nothing to the loss and gets no gradient from that image (the
masked-loss scheme of multi-dataset chest X-ray work), instead of being taught "no heart here".
"""

from __future__ import annotations

import cv2
import numpy as np
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


def signed_distance(target: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` targets -> each pixel's signed distance to the target's border.

    Negative inside the target (cut at 0.5), positive outside, in units of the image's longer
    side (so the loss does not grow with the resolution); 0 everywhere for an empty or a full
    target, which has no border to be near. Euclidean distances by OpenCV's exact transform.
    """
    masks = (target.detach().float() > 0.5).cpu().numpy().astype(np.uint8)  # (B, 1, H, W)
    scale = 1.0 / max(target.shape[-2:])
    distances = np.zeros(masks.shape, dtype=np.float32)
    for index, mask in enumerate(masks[:, 0]):
        if mask.all() or not mask.any():
            continue
        outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        inside = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        distances[index, 0] = (outside - inside) * scale
    return torch.from_numpy(distances).to(target.device)


def boundary_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``sigmoid(logits) x signed_distance(target)``: lowest when the probabilities fill
    exactly the target; every probability outside it costs its distance to the border."""
    return (torch.sigmoid(logits.float()) * signed_distance(target)).mean()


class SegmentationLoss(nn.Module):
    """Weighted sum of BCE-with-logits, soft Dice and the boundary loss; any weight may be 0."""

    def __init__(
        self, bce_weight: float = 1.0, dice_weight: float = 1.0, boundary_weight: float = 0.0
    ) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.boundary_weight = boundary_weight

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
            if self.boundary_weight:
                loss = loss + self.boundary_weight * boundary_loss(channel_logits, channel_target)
        return loss


def build_loss(name: str) -> SegmentationLoss:
    """``"bce+dice"``, ``"bce"``, ``"dice"`` or ``"bce+dice+boundary"`` (boundary weight 1)."""
    weights = {
        "bce+dice": (1.0, 1.0, 0.0),
        "bce": (1.0, 0.0, 0.0),
        "dice": (0.0, 1.0, 0.0),
        "bce+dice+boundary": (1.0, 1.0, 1.0),
    }
    if name not in weights:
        raise LungsegError(f"unknown loss {name!r}; choose one of: {', '.join(weights)}")
    return SegmentationLoss(*weights[name])
