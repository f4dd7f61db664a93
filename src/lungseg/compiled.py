"""The inference network under ``torch.compile``, falling back to eager when it cannot compile.

Inductor with frozen weights (constants folded into the graph, kernels fused and written in C++)
runs ``msag_unet_cpu`` about 1.5-1.6x faster than eager PyTorch on a CPU (bf16)
(``benchmarks/models.py --compile``), because the network is many small, memory-bound kernels
whose launches and passes over memory fusion removes. The price is compile time: tens of seconds
for each batch shape the first time it is seen, so it pays on long runs (``lungseg predict
--compile`` on a folder), not for a single image. Compiling needs a C++ compiler; where there is
none, or torch cannot compile the graph, the first call says so once (a warning, since the user
asked for it) and every call runs the same network uncompiled, with the same result.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


class CompiledNetwork:
    """Call like the module: ``(B, C, h, w) -> logits``; compiled where torch can, else eager."""

    def __init__(self, network: nn.Module) -> None:
        self.eager = network
        self._compiled: nn.Module | None = torch.compile(network, dynamic=False)

    @property
    def compiled(self) -> bool:
        """False once compiling failed and the eager network runs instead."""
        return self._compiled is not None

    def __call__(self, batch: Tensor) -> Tensor:
        if self._compiled is not None:
            import torch._inductor.config as inductor

            try:
                with inductor.patch(freezing=True):  # weights are constants at inference
                    return self._compiled(batch)
            except Exception as err:  # noqa: BLE001 - no compiler, an unsupported op, ...
                message = str(err).strip().splitlines()
                log.warning(
                    "torch.compile failed (%s: %s); running the network uncompiled",
                    type(err).__name__,
                    message[0][:200] if message else "",
                )
                self._compiled = None
        return self.eager(batch)
