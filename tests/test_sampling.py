"""lungseg.training.sampling: per-source weights set each source's share of an epoch."""

from __future__ import annotations

from collections import Counter

import pytest

from lungseg.errors import LungsegError
from lungseg.training.sampling import SourceWeightedSampler, expected_shares

SOURCES = ["covidqu"] * 600 + ["montgomery"] * 100 + ["wingspan"] * 300


def shares(indices: list[int]) -> dict[str, float]:
    counts = Counter(SOURCES[i] for i in indices)
    return {source: counts[source] / len(indices) for source in sorted(counts)}


def test_equal_weights_draw_every_image_once_per_epoch() -> None:
    sampler = SourceWeightedSampler(SOURCES, {}, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(first) == list(range(len(SOURCES)))
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(len(SOURCES)))


def test_weights_set_each_sources_share() -> None:
    weights = {"covidqu": 0.5, "montgomery": 3.0}
    expected = expected_shares(SOURCES, weights)
    # masses 600 * 0.5, 100 * 3 and 300 * 1: a third each
    assert expected == pytest.approx({"covidqu": 1 / 3, "montgomery": 1 / 3, "wingspan": 1 / 3})
    sampler = SourceWeightedSampler(SOURCES, weights, seed=0)
    drawn: list[int] = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        epoch_indices = list(sampler)
        assert len(epoch_indices) == len(sampler) == len(SOURCES)
        drawn += epoch_indices
    for source, share in shares(drawn).items():
        assert share == pytest.approx(expected[source], abs=0.01), source


def test_a_resumed_epoch_draws_the_same_images() -> None:
    a = SourceWeightedSampler(SOURCES, {"covidqu": 0.5}, seed=1)
    b = SourceWeightedSampler(SOURCES, {"covidqu": 0.5}, seed=1)
    a.set_epoch(5)
    b.set_epoch(5)
    assert list(a) == list(b)
    b.set_epoch(6)
    assert list(a) != list(b)


def test_ranks_take_different_shares_of_one_weighted_draw() -> None:
    def rank_draws() -> list[list[int]]:
        draws = []
        for rank in range(3):
            sampler = SourceWeightedSampler(
                SOURCES, {"covidqu": 0.5}, num_replicas=3, rank=rank, seed=2
            )
            sampler.set_epoch(4)
            draws.append(list(sampler))
        return draws

    draws = rank_draws()
    assert draws == rank_draws()
    assert [len(d) for d in draws] == [len(SOURCES) // 3] * 3
    assert draws[0] != draws[1] != draws[2]
    together = shares([i for d in draws for i in d])
    expected = expected_shares(SOURCES, {"covidqu": 0.5})
    for source, share in together.items():
        assert share == pytest.approx(expected[source], abs=0.05), source


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"jsrt": 2.0}, "jsrt, which have no training images"),
        ({"covidqu": 0, "montgomery": 0, "wingspan": 0}, "every training image at weight 0"),
    ],
)
def test_bad_weights_are_refused(weights: dict[str, float], message: str) -> None:
    with pytest.raises(LungsegError, match=message):
        SourceWeightedSampler(SOURCES, weights)
