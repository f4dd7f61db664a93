"""Measure what normal lung masks look like: the numbers behind lungseg.measure's quality flag.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python scripts/lung_mask_stats.py --data ../shared/data

Reads every manual mask of a data folder (left and right lung masks merged, at the image's own
resolution) and prints the distribution of the lung area fraction of the image, the right/left
lung area ratio (sides as :func:`lungseg.measure.lung_labels` assigns them), the number of
connected components and the component sizes, how the patient's midline sits against the image
centre, and how many masks touch the image border. It ends with how many masks
:func:`lungseg.measure.measure_lungs` flags with the thresholds currently in the package, and
why: that list should be (nearly) empty.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage

from lungseg.data.dataset import load_full_mask
from lungseg.data.discovery import discover
from lungseg.measure import LEFT_LUNG, RIGHT_LUNG, lung_labels, measure_lungs
from lungseg.postprocess import EIGHT_CONNECTED

PERCENTILES = (0.5, 1, 99, 99.5)


def describe(name: str, values: list[float], digits: int = 4) -> str:
    """min, the PERCENTILES and max of ``values`` on one line."""
    data = np.asarray(values, dtype=float)
    parts = [f"min {data.min():.{digits}f}"]
    parts += [f"p{q:g} {np.percentile(data, q):.{digits}f}" for q in PERCENTILES]
    parts.append(f"max {data.max():.{digits}f}")
    return f"{name:<34} " + "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset root")
    args = parser.parse_args(argv)

    found = discover(args.data)
    fraction, ratio, components, smaller_lung, extra_piece = [], [], [], [], []
    straddling, border_touching, flagged = [], [], []
    across_centre: set[str] = set()
    for pair in found.pairs:
        mask = load_full_mask(pair)
        width = mask.shape[1]
        labelled, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
        sizes = np.sort(np.bincount(labelled.ravel())[1:])[::-1] / mask.size
        components.append(count)
        smaller_lung.append(sizes[1] if count >= 2 else 0.0)
        extra_piece.append((sizes[2] if count >= 3 else 0.0, pair.id))
        sides = lung_labels(mask)
        right, left = np.count_nonzero(sides == RIGHT_LUNG), np.count_nonzero(sides == LEFT_LUNG)
        fraction.append((right + left) / mask.size)
        ratio.append(right / left if left else float("inf"))
        for index, box in enumerate(ndimage.find_objects(labelled), start=1):
            if len(np.unique(sides[box][labelled[box] == index])) > 1:
                straddling.append(pair.id)
            if box[1].start < width // 2 < box[1].stop:  # has columns on both sides of it
                across_centre.add(pair.id)
        border = np.count_nonzero(mask[0]) + np.count_nonzero(mask[-1])
        border += np.count_nonzero(mask[1:-1, 0]) + np.count_nonzero(mask[1:-1, -1])
        if border:
            border_touching.append((pair.id, int(border)))
        result = measure_lungs(mask)
        if result.quality != "ok":
            flagged.append((pair.id, result.reason))

    sources = dict(Counter(pair.source for pair in found.pairs))
    print(f"{len(found.pairs)} manual masks under {args.data}: {sources}")
    print(describe("lung area fraction of the image", fraction))
    print(describe("right/left lung area ratio", ratio))
    print(describe("smaller lung (2nd component) frac.", smaller_lung))
    print(describe("3rd component fraction (0: none)", [f for f, _ in extra_piece], digits=5))
    largest = sorted(extra_piece, reverse=True)[:3]
    print(f"{'largest 3rd components':<34} " + ", ".join(f"{i} {f:.5f}" for f, i in largest))
    print(f"{'components (8-connected)':<34} {dict(sorted(Counter(components).items()))}")
    print(f"{'masks with a lung across centre col':<34} {len(across_centre)}")
    print(f"{'components split by the midline':<34} {len(straddling)} {straddling}")
    print(f"{'masks touching the image border':<34} {len(border_touching)} {border_touching}")
    print(f"{'flagged by measure_lungs':<34} {len(flagged)}")
    for pair_id, reason in flagged:
        print(f"  {pair_id}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
