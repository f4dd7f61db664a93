"""Device and numeric-precision choices shared by training, evaluation and prediction.

On a CPU whose oneDNN has native bf16 kernels (AVX512-BF16 or AMX) bf16 autocast can make a
network faster than fp32; without them PyTorch falls back to its reference convolution: on an
AVX2-only CPU every model ran 6-13x SLOWER than in fp32 (``benchmarks/results/models_bf16.md``
against ``models_fp32.md``). Whether it pays depends on the CPU, the network, the batch and
whether it trains, so the trainer's ``auto`` MEASURES both on the machine at hand
(:func:`measure_cpu_precision`, cached per machine) and keeps the faster. Without a model to
measure, ``auto`` means bf16 on a CPU only when oneDNN reports native bf16 support. On CUDA it
means bf16 where the GPU supports it, else fp16 with a gradient scaler.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lungseg.atomic import atomic_write_text
from lungseg.errors import LungsegError

log = logging.getLogger(__name__)


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


def describe_cpu() -> str:
    """The CPU a speed table was measured on: model name, torch's ISA level, native bf16."""
    capability = torch.backends.cpu.get_cpu_capability()
    bf16 = "native bf16" if cpu_has_fast_bf16() else "no native bf16"
    return f"{cpu_name()} ({capability}, {bf16}), {torch.get_num_threads()} torch thread(s)"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class PrecisionChoice:
    """What :func:`measure_cpu_precision` found: both timings, and so the faster dtype."""

    fp32_ms: float
    bf16_ms: float
    cached: bool

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype to use (None = plain fp32)."""
        return torch.bfloat16 if self.bf16_ms < self.fp32_ms else None

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def describe(self) -> str:
        where = "cached measurement" if self.cached else "measured now"
        return (
            f"{self.name} ({where}: fp32 {self.fp32_ms:.1f} ms, bf16 {self.bf16_ms:.1f} ms "
            f"per step on {cpu_name()})"
        )


def cpu_name() -> str:
    """The CPU's model name (``lscpu``'s), for cache keys and speed tables."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lungseg" / "precision.json"


def measure_cpu_precision(
    model: torch.nn.Module,
    input_shape: tuple[int, int, int, int],
    *,
    training: bool,
    channels_last: bool = True,
    repeats: int = 3,
) -> PrecisionChoice:
    """Time ``model`` on CPU in fp32 and under bf16 autocast; the faster wins.

    A training step (forward, backward) or an inference forward pass on a zero batch of
    ``input_shape``, best of ``repeats`` after one warm-up; a bf16 warm-up over 3x fp32's ends
    the measurement there (bf16 without native kernels would take minutes to time fully). The
    answer is cached in ``~/.cache/lungseg/precision.json`` keyed by CPU, torch version, thread
    count, network configuration, shape and mode, so each machine measures once. Gradients are
    cleared and batch-norm statistics restored afterwards: the model leaves as it came.
    """
    config = getattr(model, "config", type(model).__name__)
    key_text = json.dumps(
        [
            cpu_name(),
            torch.__version__,
            torch.get_num_threads(),
            config,
            input_shape,
            training,
            channels_last,
        ],
        sort_keys=True,
        default=str,
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return PrecisionChoice(cache[key]["fp32_ms"], cache[key]["bf16_ms"], cached=True)

    was_training = model.training
    # Training-mode steps update batch-norm statistics; put them back afterwards, so measuring
    # (or finding the answer cached) never changes what the run computes.
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    model.train(training)
    batch = torch.zeros(input_shape)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)

    def step(runtime: Runtime) -> float:
        started = time.perf_counter()
        if training:
            with runtime.autocast():
                out = model(batch)
            out.float().mean().backward()
        else:
            with torch.inference_mode(), runtime.autocast():
                model(batch)
        return time.perf_counter() - started

    fp32, bf16 = Runtime(torch.device("cpu"), None), Runtime(torch.device("cpu"), torch.bfloat16)
    fp32_warmup = step(fp32)  # the first step of each creates oneDNN's primitives
    fp32_best = min(step(fp32) for _ in range(repeats))
    bf16_warmup = step(bf16)
    # Without native kernels bf16 runs 6-13x slower: a slow warm-up decides without repeats.
    slow = bf16_warmup > 3 * fp32_warmup
    bf16_best = bf16_warmup if slow else min(step(bf16) for _ in range(repeats))
    choice = PrecisionChoice(1000 * fp32_best, 1000 * bf16_best, cached=False)
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    model.train(was_training)
    cache[key] = {"fp32_ms": choice.fp32_ms, "bf16_ms": choice.bf16_ms, "what": key_text}
    try:
        atomic_write_text(cache_path, json.dumps(cache, indent=1) + "\n")
    except OSError as err:  # a read-only home only costs a measurement next time
        log.debug("cannot cache the precision measurement in %s: %s", cache_path, err)
    return choice
