"""Device and numeric-precision choices shared by training, evaluation and prediction.

On a CPU whose oneDNN has native bf16 kernels (AVX512-BF16 or AMX) bf16 autocast makes
convolutions faster than fp32 (not measured here: no such CPU). Without them PyTorch falls back
to its reference convolution: on an AVX2-only CPU every model ran 6-13x SLOWER than in fp32
(``benchmarks/results/models_bf16.md`` against ``models_fp32.md``). So
``auto`` means bf16 on a CPU only when oneDNN reports bf16 support, else fp32; on CUDA it means
bf16 where the GPU supports it, else fp16 with a gradient scaler.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from lungseg.errors import LungsegError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None = plain fp32

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.device.type == "cuda" and self.dtype == torch.float16


def resolve_runtime(device: str = "auto", precision: str = "auto", local_rank: int = 0) -> Runtime:
    """Turn the user's ``device``/``precision`` strings into a device and an autocast dtype."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise LungsegError("device 'cuda' was requested but no CUDA GPU is available")
        dev = torch.device("cuda", local_rank)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise LungsegError(f"unknown device {device!r}; use auto, cpu or cuda")
    choices = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision == "auto":
        if dev.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.bfloat16 if cpu_has_fast_bf16() else None
    elif precision in choices:
        dtype = choices[precision]
    else:
        raise LungsegError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    return Runtime(dev, dtype)


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
