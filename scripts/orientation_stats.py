"""The manual-mask figures behind lungseg.orientation's thresholds.

    .venv/bin/python scripts/orientation_stats.py --data ../shared/data

Lungs: every second val and test mask of ``splits/multi_source.json`` (486, four sources):
where the widest band lies (0 = top), upright and flipped upside down, and how many of each
the threshold flags. Heart: all Wingspan pairs with a heart mask: the heart's reach right of
the midline over its reach left, upright and mirrored, and how many of each are flagged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lungseg.data.dataset import load_full_mask
from lungseg.data.discovery import discover, load_split, select
from lungseg.data.masks import read_mask
from lungseg.orientation import (
    MIRRORED_BELOW,
    UPSIDE_DOWN_BELOW,
    heart_reach_ratio,
    widest_band_position,
)


def describe(name: str, values: np.ndarray) -> str:
    low, p1, p5, median, p95 = np.percentile(values, [0, 1, 5, 50, 95])
    return (
        f"{name}: n {len(values)}, lowest {low:.3f}, 1% {p1:.3f}, 5% {p5:.3f}, "
        f"median {median:.3f}, 95% {p95:.3f}, highest {values.max():.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    pairs = discover(args.data).pairs
    split = load_split(args.data / "splits" / "multi_source.json")
    sample = (select(pairs, split, "val") + select(pairs, split, "test"))[::2]

    masks = [load_full_mask(pair) for pair in sample]
    upright = np.array([widest_band_position(mask) for mask in masks])
    flipped = np.array([widest_band_position(mask[::-1]) for mask in masks])
    print(describe("widest band, upright", upright))
    print(describe("widest band, upside down", flipped))
    print(
        f"flagged upside down (< {UPSIDE_DOWN_BELOW}): "
        f"upright {np.mean(upright < UPSIDE_DOWN_BELOW):.1%}, "
        f"flipped {np.mean(flipped < UPSIDE_DOWN_BELOW):.1%}"
    )

    hearts = [p for p in pairs if p.heart is not None]
    ratios, mirrored = [], []
    for pair in hearts:
        lungs, heart = load_full_mask(pair), read_mask(pair.heart)
        ratios.append(heart_reach_ratio(lungs, heart))
        mirrored.append(heart_reach_ratio(lungs[:, ::-1], heart[:, ::-1]))
    ratios_a, mirrored_a = np.array(ratios), np.array(mirrored)
    print(describe("heart reach ratio, upright", ratios_a))
    print(describe("heart reach ratio, mirrored", mirrored_a))
    print(
        f"flagged mirrored (< {MIRRORED_BELOW}): "
        f"upright {np.mean(ratios_a < MIRRORED_BELOW):.1%}, "
        f"mirrored {np.mean(mirrored_a < MIRRORED_BELOW):.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
