"""Package a finished training run as lungseg's shipped model, with its model card.

    .venv/bin/python scripts/ship_model.py runs/ms_cpu --data ../shared/data \
        --split ../shared/data/splits/multi_source.json

Copies the run's ``model.safetensors`` into ``src/lungseg/weights/`` in fp16 (half the size; the
card's metrics are measured on the fp16 copy, exactly as users get it), evaluates it on the val
and test subsets of the split with the same code as ``lungseg evaluate`` (per source, without
and with predict's post-processing), and writes the model card JSON next to it: model and config,
the training command, the sources and how many images of each it trained on, split, threshold,
the metrics, and a fixed check subset (the first ids of each source's test images) whose Dice
``tests/test_shipped_model.py`` re-checks.

After a choice made on val changes the shipped file's header (``calibrate_quality.py``,
``tune_heart_threshold.py``), ``--card-only`` re-measures the shipped file and rewrites the
card's thresholds and metrics, keeping what it says about the training run:

    .venv/bin/python scripts/ship_model.py --card-only --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from lungseg.atomic import atomic_write_text
from lungseg.cli.evaluate import summary_json
from lungseg.data.discovery import Pair, discover, load_split, select
from lungseg.evaluate import evaluate
from lungseg.inference import Segmenter
from lungseg.metrics import MetricAccumulator
from lungseg.weights import SHIPPED_WEIGHTS, load_weights, save_weights

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "lungseg" / "weights"
CHECK_PER_SOURCE = 6  # the first N test ids of each source: re-evaluated by the tests

SOURCE_NOTES = {
    "montgomery": "Montgomery County (NLM), manual masks",
    "shenzhen": "Shenzhen No.3 People's Hospital (NLM), manual masks",
    "wingspan": "Wingspan (Dong et al. 2018), hand-drawn masks",
    "covidqu": "COVID-QU-Ex (Qatar University), model-made masks reviewed by people",
}


def check_subset(test: list[Pair]) -> list[Pair]:
    """The first :data:`CHECK_PER_SOURCE` test pairs of every source, in split order."""
    taken: Counter[str] = Counter()
    chosen = []
    for pair in test:
        if taken[pair.source] < CHECK_PER_SOURCE:
            taken[pair.source] += 1
            chosen.append(pair)
    return chosen


def scores(segmenter: Segmenter, pairs: list[Pair]) -> tuple[dict[str, Any], MetricAccumulator]:
    """``lungseg evaluate``'s summary with and without post-processing (and the heart's where
    it was scored), and the post-processed per-image records (so a subset's metrics need no
    second pass)."""
    processed = evaluate(segmenter, pairs)
    summaries = {
        "raw": summary_json(evaluate(segmenter, pairs, postprocess=False).aggregate()),
        "postprocessed": summary_json(processed.aggregate()),
        "heart": processed.heart_summary(),
    }
    return summaries, processed.lungs


def training_section(run_dir: Path) -> dict[str, Any]:
    """What the card says about the training run, from the run folder's records."""
    run = json.loads((run_dir / "run.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "command": run["command"],
        "preset": run["preset"],
        "augmentation": config["augmentation"],
        "source_weights": config["source_weights"],
        "precision": summary.get("precision", config["precision"]),
        "epochs": summary["epochs"],
        "best_epoch": summary["best_epoch"],
        "train_minutes": round(summary["train_seconds"] / 60, 1),
        "val_dice_original_res": summary["val_dice_original_res"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?", help="run folder of `lungseg train`")
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="re-measure the shipped file and rewrite its card, training section kept",
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path, help="default: DATA/splits/multi_source.json")
    args = parser.parse_args()
    split_path = args.split or args.data / "splits" / "multi_source.json"

    if (args.run is None) != args.card_only:
        parser.error("give a run folder, or --card-only")
    target = PACKAGE_WEIGHTS / SHIPPED_WEIGHTS
    card_path = PACKAGE_WEIGHTS / "lungseg_cxr.json"
    if args.card_only:
        _, info = load_weights(target)
    else:
        model, info = load_weights(args.run / "model.safetensors")
        save_weights(target, model, info, half=True)

    segmenter = Segmenter.from_pretrained(target)
    pairs, split = discover(args.data).pairs, load_split(split_path)
    train, val, test = (select(pairs, split, subset) for subset in ("train", "val", "test"))
    check = check_subset(test)
    val_scores, _ = scores(segmenter, val)
    test_scores, test_records = scores(segmenter, test)
    check_ids = {pair.id for pair in check}
    check_records = MetricAccumulator()
    check_records.extend(r for r in test_records.state() if r["id"] in check_ids)

    trained_on = Counter(pair.source for pair in train)
    if args.card_only:
        training = json.loads(card_path.read_text())["training"]
    else:
        training = training_section(args.run)
    card = {
        "name": "lungseg_cxr",
        "model": info.model_config["name"],
        "model_config": info.model_config,
        "input_size": list(info.image_size),
        "preprocessing": info.preprocessing,
        "threshold": info.threshold,
        "heart_threshold": info.heart_threshold if "heart" in info.labels else None,
        "weights": {"file": SHIPPED_WEIGHTS, "dtype": "float16", "bytes": target.stat().st_size},
        "training": training,
        "sources": {
            source: {"train_images": trained_on[source], "about": SOURCE_NOTES.get(source, "")}
            for source in sorted(trained_on)
        },
        "split": f"{split_path.name}: train {len(train)} / val {len(val)} (checkpoint, "
        f"threshold) / test {len(test)}",
        "val_metrics": val_scores,
        "test_metrics": test_scores,
        "labels": list(info.labels),
        "check_subset": {
            "ids": [pair.id for pair in check],
            "postprocess": True,
            "metrics": summary_json(check_records.aggregate()),
        },
        "reproduce": f"lungseg evaluate --data DATA --split DATA/splits/{split_path.name} "
        "[--no-postprocess]",
        "license_note": "Research use only; not a medical device. Shenzhen masks CC BY-NC-SA 4.0.",
    }
    atomic_write_text(card_path, json.dumps(card, indent=2) + "\n")
    raw = card["test_metrics"]["raw"]
    print(json.dumps({"test": {k: raw[k] for k in ("n", "dice", "hd95", "per_source")}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
