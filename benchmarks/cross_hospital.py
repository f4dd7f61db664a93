"""Generalisation to another hospital: train on Shenzhen alone, test on Montgomery.

    .venv/bin/python benchmarks/cross_hospital.py --data ../shared/data --out runs/cross_hospital

Writes the split it uses (``shenzhen_to_montgomery.json``: Shenzhen's 566 pairs shuffled with
seed 0 into 85% train / 15% val, all 138 Montgomery pairs as test) into the output folder, trains
with ``--preset cpu`` (val picks the checkpoint and threshold, as always), evaluates on
Montgomery with the ``lungseg evaluate`` code path, and, for reference, evaluates the shipped
model on the same images. The shipped model saw 55 Montgomery X-rays in training, so the fair
comparison is on the 42 Montgomery images of ``paper_433.json``'s test subset, which neither model
saw; both subsets are reported (``results.json``).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lungseg.atomic import atomic_write_text
from lungseg.cli.evaluate import format_table, summary_json
from lungseg.config import apply_overrides, get_preset
from lungseg.data.discovery import discover, load_split, select
from lungseg.evaluate import evaluate
from lungseg.inference import Segmenter
from lungseg.metrics import MetricAccumulator
from lungseg.training import train

SPLIT_NAME = "shenzhen_to_montgomery.json"


def write_split(data: Path, out: Path, seed: int) -> Path:
    by_source = discover(data).by_source()
    train_ids = sorted(pair.id for pair in by_source["shenzhen"])
    random.Random(seed).shuffle(train_ids)
    n_val = round(0.15 * len(train_ids))
    split = {
        "description": f"Shenzhen only for training (85/15 train/val, seed {seed}); "
        "all of Montgomery as test. Written by benchmarks/cross_hospital.py.",
        "train": sorted(train_ids[n_val:]),
        "val": sorted(train_ids[:n_val]),
        "test": sorted(pair.id for pair in by_source["montgomery"]),
    }
    path = out / SPLIT_NAME
    atomic_write_text(path, json.dumps(split, indent=1) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/cross_hospital"))
    parser.add_argument("--budget-min", type=float, default=get_preset("cpu").time_budget_min)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--paper-split",
        type=Path,
        help="the split the shipped model was trained on (default: DATA/splits/paper_433.json); "
        "its Montgomery test images were seen by neither model",
    )
    args = parser.parse_args()
    args.paper_split = args.paper_split or args.data / "splits" / "paper_433.json"
    args.out.mkdir(parents=True, exist_ok=True)
    split = write_split(args.data, args.out, args.seed)
    run = args.out / "run"
    if not (run / "summary.json").is_file():
        config = apply_overrides(get_preset("cpu"), [f"time_budget_min={args.budget_min}"])
        train(config, args.data, split, run, resume=(run / "last.pt").is_file())

    test = select(discover(args.data).pairs, load_split(split), "test")
    unseen = set(load_split(args.paper_split)["test"])  # Montgomery the shipped model never saw
    results = {}
    for name, weights in (("shenzhen_only", run / "model.safetensors"), ("shipped", None)):
        scored = evaluate(Segmenter.from_pretrained(weights), test)
        both_unseen = MetricAccumulator()
        both_unseen.extend(r for r in scored.state() if r["id"] in unseen)
        for subset, metrics in (("all_montgomery", scored), ("paper_test_montgomery", both_unseen)):
            aggregate = metrics.aggregate()
            print(f"\n{name} on {subset} ({aggregate['n']} images):\n{format_table(aggregate)}")
            results.setdefault(name, {})[subset] = summary_json(aggregate)
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
