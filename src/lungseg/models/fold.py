"""Inference copies of a network: batch norms folded, weights stored in the autocast dtype.

In eval mode a batch norm is a fixed per-channel scale and shift, so it can be multiplied into
the preceding convolution's weights and bias (the standard conv-BN fusion that ONNX Runtime,
TensorRT and ``torch.ao`` apply too). The result computes the same function with one pass over
each feature map fewer: on a CPU, where the early, wide maps are bound by memory traffic, that
pass costs as much as the arithmetic it saves.

Under bf16 (or fp16) autocast a convolution or linear layer runs in the low precision with its
weights cast on every call: autocast's cast cache does not apply under ``torch.inference_mode``,
so every convolution and linear weight is cast again on every forward pass.
:func:`cast_for_autocast` stores those weights in the autocast dtype once; autocast then has
nothing to cast and the result is the same bit for bit.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

AUTOCAST_CAST_MODULES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
"""The modules whose weights autocast casts to its low precision (and nothing else here)."""


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in which each ``Conv2d`` directly followed by a
    ``BatchNorm2d`` inside an ``nn.Sequential`` absorbs it (the norm becomes an identity).

    The original is left untouched (it may still be trained, exported or benchmarked). Pairs that
    are not adjacent in a Sequential (e.g. a norm applied to a sum) are left as they are.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, first), (second_name, second) in zip(children, children[1:], strict=False):
            if (
                isinstance(first, nn.Conv2d)
                and isinstance(second, nn.BatchNorm2d)
                and second.track_running_stats
            ):
                fused = fuse_conv_bn_eval(first, second)
                first.weight, first.bias = fused.weight, fused.bias
                setattr(module, second_name, nn.Identity())
    return folded


def cast_for_autocast(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` (in place) with the weights and biases of its convolutions and linear layers in
    ``dtype``, the autocast dtype it will run under; norms and everything else stay fp32, as
    autocast would keep them. Only for an inference copy run under autocast: outside it, the
    fp32 inputs would meet low-precision weights."""
    for module in model.modules():
        if isinstance(module, AUTOCAST_CAST_MODULES):
            module.to(dtype)
    return model
