"""How much Dice does the network's input size cost, before any learning? The ceiling per size.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python scripts/resolution_ceiling.py \
        --data ../shared/data --sizes 128 192 256 320 384

A network that sees ``size x size`` is trained on masks resized to that size
(:func:`lungseg.data.transforms.resize_mask`) and its logits are resized back to the original
mask bilinearly (:meth:`lungseg.inference.Segmenter.probabilities_at`). A network that outputs
exactly its binary training mask can then only reproduce the manual mask as that round trip does.
This script scores the round trip of every manual mask of a subset against the mask itself, which
tells whether a larger input (and its quadratic cost in compute) can buy accuracy. A second column
keeps the fraction of lung in each small pixel instead of cutting it at 0.5 (a "soft" target):
what a network that learned sub-pixel boundaries could reach at the same size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lungseg.data.dataset import load_full_mask
from lungseg.data.discovery import discover, load_split, select
from lungseg.data.transforms import resize_image, resize_mask
from lungseg.metrics import dice


def round_trip(mask: np.ndarray, size: int, *, soft: bool = False) -> np.ndarray:
    """The mask a perfect ``size x size`` network yields at the original resolution.

    ``soft`` keeps each small pixel's lung fraction (area resize) instead of the binary mask the
    training data holds.
    """
    square = (size, size)
    small = resize_image(mask.astype(np.float32), square) if soft else resize_mask(mask, square)
    small = torch.from_numpy(small.astype(np.float32))
    back = F.interpolate(small[None, None], size=mask.shape, mode="bilinear", align_corners=False)
    return back[0, 0].numpy() > 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path)
    parser.add_argument("--subset", default="val", choices=["train", "val", "test"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 192, 256, 320, 384])
    args = parser.parse_args(argv)
    split = args.split or args.data / "splits" / "paper_433.json"
    pairs = select(discover(args.data).pairs, load_split(split), args.subset)
    scores = {(size, soft): [] for size in args.sizes for soft in (False, True)}
    for pair in tqdm(pairs, desc="masks", unit="mask"):
        mask = load_full_mask(pair)
        for size, soft in scores:
            scores[size, soft].append(dice(round_trip(mask, size, soft=soft), mask))
    print(f"{args.subset} subset, {len(pairs)} manual masks at their original resolution")
    print("| input size | compute vs 256 | ceiling, binary targets (mean, worst) | soft targets |")
    print("|---|---|---|---|")
    for size in args.sizes:
        binary, soft = scores[size, False], scores[size, True]
        print(
            f"| {size} | {(size / 256) ** 2:.2f}x | {np.mean(binary):.4f}, {min(binary):.4f} "
            f"| {np.mean(soft):.4f}, {min(soft):.4f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
