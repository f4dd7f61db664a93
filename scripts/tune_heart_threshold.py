"""Choose a weights file's heart threshold on VALIDATION images and store it in its header.

    .venv/bin/python scripts/tune_heart_threshold.py src/lungseg/weights/lungseg_cxr.safetensors \
        --data ../shared/data --split ../shared/data/splits/multi_source.json

What ``lungseg train`` does at the end of a run with a heart channel
(:func:`lungseg.evaluate.tune_heart_threshold`: the cut whose cardiothoracic ratio is closest to
the manual masks', on the val pairs that have a heart mask), for a weights file trained before
it did. Rewrites the header atomically (same tensors, same dtype) and prints each candidate's
val CTR error and heart Dice. The test subset is never used here: ``benchmarks/heart.py``
reports on it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lungseg.data.discovery import discover, load_split, select
from lungseg.evaluate import predict_pairs, tune_heart_threshold
from lungseg.inference import Segmenter
from lungseg.weights import load_weights, rewrite_metadata


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path, help="default: DATA/splits/multi_source.json")
    args = parser.parse_args()
    split_path = args.split or args.data / "splits" / "multi_source.json"
    val = select(discover(args.data).pairs, load_split(split_path), "val")
    with_heart = [pair for pair in val if pair.heart is not None]

    segmenter = Segmenter.from_pretrained(args.weights)
    if not segmenter.has_heart or not with_heart:
        parser.error(f"{args.weights} has no heart channel or the val subset no heart mask")
    chosen, scores = tune_heart_threshold(segmenter, predict_pairs(segmenter, with_heart))
    print(f"{len(with_heart)} val images with a heart mask")
    print("| heart threshold | val CTR error | val heart Dice |\n|---|---|---|")
    for t, score in scores.items():
        mark = " (chosen)" if t == chosen else ""
        print(f"| {t:.2f}{mark} | {score['ctr_error']:.4f} | {score['dice']:.4f} |")
    _, info = load_weights(args.weights)
    info.heart_threshold = chosen
    info.extra["val_heart_dice"] = round(scores[chosen]["dice"], 5)
    info.extra["val_ctr_error"] = round(scores[chosen]["ctr_error"], 5)
    rewrite_metadata(args.weights, info)
    print(
        f"heart threshold {chosen:.2f} (was {segmenter.heart_threshold:.2f}); wrote {args.weights}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
