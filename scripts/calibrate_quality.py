"""Fit the quality estimate of a weights file on VALIDATION images and store it in its header.

    .venv/bin/python scripts/calibrate_quality.py src/lungseg/weights/lungseg_cxr.safetensors \
        --data ../shared/data --split ../shared/data/splits/multi_source.json

Scores the val subset clean and in two degraded copies each (noise, extreme contrast,
occlusion, low resolution, crop; :mod:`lungseg.data.degrade`), fits
:class:`lungseg.quality.QualityModel` (linear, on the signals of :mod:`lungseg.quality`) to the
true Dice, picks the "check" threshold that flags 90% of the failed masks (Dice < 0.85), and
rewrites the weights file with ``extra["quality_model"]`` (atomically, same tensors, same
dtype). The test subsets are never used here: ``benchmarks/quality.py`` reports on them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from lungseg.data.degrade import DEGRADATIONS
from lungseg.data.discovery import discover, load_split, select
from lungseg.evaluate import quality_records
from lungseg.inference import Segmenter
from lungseg.quality import QualityModel
from lungseg.weights import load_weights, rewrite_metadata

PER_IMAGE = 2  # degraded copies per val image, besides the clean one
SEED = 20261202


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path, help="default: DATA/splits/multi_source.json")
    parser.add_argument(
        "--pass-size",
        type=int,
        help="side of the second (zoomed-out) pass's input, stored with the fit; default: the "
        "network's input size. Smaller costs less; compare the val figures printed at each.",
    )
    args = parser.parse_args()
    split_path = args.split or args.data / "splits" / "multi_source.json"
    val = select(discover(args.data).pairs, load_split(split_path), "val")

    segmenter = Segmenter.from_pretrained(args.weights)
    pass_size = (args.pass_size,) * 2 if args.pass_size else tuple(segmenter.info.image_size)
    segmenter.quality_pass_size = pass_size
    records = quality_records(
        segmenter, val, degradations=tuple(DEGRADATIONS), per_image=PER_IMAGE, seed=SEED
    )
    model = QualityModel.fit(
        records,
        [r["dice"] for r in records],
        fitted_on=f"val of {split_path.name}: {len(val)} images clean + {PER_IMAGE} degraded "
        f"copies each ({', '.join(DEGRADATIONS)}), seed {SEED}; second pass at "
        f"{pass_size[0]}x{pass_size[1]}",
        pass_size=pass_size,
    )
    _, info = load_weights(args.weights)
    info.extra["quality_model"] = model.to_dict()
    rewrite_metadata(args.weights, info)
    estimates = [model.estimate(r) for r in records]
    failed = [e for e, r in zip(estimates, records, strict=True) if r["dice"] < 0.85]
    good = [e for e, r in zip(estimates, records, strict=True) if r["dice"] >= 0.95]
    truth = np.array([r["dice"] for r in records])
    print(json.dumps(model.to_dict(), indent=2))
    print(
        f"val: Spearman {spearmanr(estimates, truth).statistic:.3f}, "
        f"MAE {np.mean(np.abs(np.array(estimates) - truth)):.4f}"
    )
    print(
        f"{len(records)} val masks: {len(failed)} failed (Dice < 0.85), "
        f"{sum(e < model.threshold for e in failed) / max(len(failed), 1):.0%} of them flagged; "
        f"{len(good)} good (Dice >= 0.95), "
        f"{sum(e < model.threshold for e in good) / max(len(good), 1):.0%} of them flagged; "
        f"wrote {args.weights}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
