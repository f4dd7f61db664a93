"""Which training images an epoch draws: every source at the weight the config gives it.

Sources differ in size and in how far their masks can be trusted (COVID-QU-Ex's 1,800 training
masks were made by a model and reviewed; Montgomery's, Shenzhen's and Wingspan's 437 were drawn
by hand). With all weights 1 each image is drawn once per epoch, as a plain shuffle does; with
``source_weights`` an epoch draws as many images as the set holds, with replacement, each with
probability proportional to its source's weight, so a weight of 2 doubles a source's share.
The draw is seeded by ``(seed, epoch)`` alone, so a resumed run replays it, and every rank of a
``torchrun`` job takes its own interleaved share of the same draw.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import Sampler

from lungseg.errors import LungsegError


class SourceWeightedSampler(Sampler[int]):
    """Indices of one rank's share of an epoch, drawn by per-source weight.

    Args:
        sources: the source of every training image, in dataset order.
        weights: weight per source; sources not listed weigh 1.
        num_replicas, rank: the ``torchrun`` world size and this process's rank.
        seed: combined with the epoch set by :meth:`set_epoch`.

    Raises:
        LungsegError: a weight names a source that has no training image, or every weight is 0.
    """

    def __init__(
        self,
        sources: Sequence[str],
        weights: Mapping[str, float],
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        unknown = sorted(set(weights) - set(sources))
        if unknown:
            raise LungsegError(
                f"source_weights names {', '.join(unknown)}, which have no training images; "
                f"the sources are {', '.join(sorted(set(sources)))}"
            )
        self.probabilities = torch.tensor(
            [float(weights.get(source, 1.0)) for source in sources], dtype=torch.float64
        )
        if float(self.probabilities.sum()) <= 0:
            raise LungsegError("source_weights leave every training image at weight 0")
        self.uniform = bool((self.probabilities == self.probabilities[0]).all())
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.num_samples = len(sources) // num_replicas  # per rank; the remainder is dropped
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        total = self.num_samples * self.num_replicas
        if self.uniform:
            order = torch.randperm(len(self.probabilities), generator=generator)[:total]
        else:
            order = torch.multinomial(self.probabilities, total, True, generator=generator)
        return iter(order[self.rank :: self.num_replicas].tolist())


def expected_shares(sources: Sequence[str], weights: Mapping[str, float]) -> dict[str, float]:
    """Each source's expected share of an epoch's draws (for the run's log), sources sorted."""
    counts = Counter(sources)
    mass = {source: n * float(weights.get(source, 1.0)) for source, n in counts.items()}
    total = sum(mass.values())
    return {source: mass[source] / total for source in sorted(mass)}
