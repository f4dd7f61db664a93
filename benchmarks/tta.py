"""Does test-time augmentation pay? The quality estimate's second pass, averaged in, on VAL.

    .venv/bin/python benchmarks/tta.py --data ../shared/data [--weights W] [--subset val]

The quality estimate already runs the network a second time on the X-ray zoomed out by 10%
(:mod:`lungseg.quality`). Averaging the two passes' logits is the cheapest test-time
augmentation there is (a horizontal flip is not one for a chest X-ray: the heart is on one
side). This scores, per source and at the original resolution, the post-processed lung masks of
one pass and of the two-pass mean, and times both per image in the same process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from lungseg.data.dataset import load_full_mask
from lungseg.data.discovery import discover, load_split, select
from lungseg.data.io import read_image
from lungseg.inference import Segmenter
from lungseg.metrics import dice
from lungseg.quality import zoomed_back, zoomed_out
from lungseg.runtime import cpu_name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path, help="default: DATA/splits/multi_source.json")
    parser.add_argument("--subset", default="val")
    parser.add_argument("--weights", type=Path, help="default: the shipped model")
    args = parser.parse_args()
    split = load_split(args.split or args.data / "splits" / "multi_source.json")
    pairs = select(discover(args.data).pairs, split, args.subset)
    segmenter = Segmenter.from_pretrained(args.weights)

    scores: dict[str, dict[str, list[float]]] = {}
    seconds = {"one pass": 0.0, "two-pass mean": 0.0}
    for pair in pairs:
        image, truth = read_image(pair.image)[0], load_full_mask(pair)
        batch = segmenter.prepare(image)[None]
        started = time.perf_counter()
        plain = segmenter.logits(batch)[0]
        middle = time.perf_counter()
        mean = (plain + zoomed_back(segmenter.logits(zoomed_out(batch)))[0]) / 2
        ended = time.perf_counter()
        seconds["one pass"] += middle - started
        seconds["two-pass mean"] += ended - started
        for name, logits in (("one pass", plain), ("two-pass mean", mean)):
            with torch.inference_mode():
                probabilities = segmenter.probabilities_at(logits, truth.shape)
            mask = segmenter.lung_mask(probabilities[0])
            scores.setdefault(name, {}).setdefault(pair.source, []).append(dice(mask, truth))

    sources = sorted(scores["one pass"])
    print(f"{args.subset} subset, {len(pairs)} X-rays, post-processed Dice at original resolution")
    print("| | " + " | ".join(sources) + " | mean of sources | network ms per image |")
    print("|---" * (len(sources) + 3) + "|")
    for name, by_source in scores.items():
        means = [float(np.mean(by_source[s])) for s in sources]
        cells = " | ".join(f"{m:.4f}" for m in means)
        ms = 1000 * seconds[name] / len(pairs)
        print(f"| {name} | {cells} | {np.mean(means):.4f} | {ms:.1f} |")
    print(f"(network time at batch 1, fp32, on {cpu_name()}, {torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
