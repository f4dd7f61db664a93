"""Package a finished training run as lungseg's shipped model, with its model card.

    .venv/bin/python scripts/ship_model.py runs/ship_msag_cpu --data ../shared/data

Copies the run's ``model.safetensors`` into ``src/lungseg/weights/`` in fp16 (half the size; the
card's metrics are measured on the fp16 copy, exactly as users get it), evaluates it on the test
subset of the paper split with the same code as ``lungseg evaluate``, and writes the model card
JSON next to it: model and config, the training command, data, split, threshold, test metrics
(all images and a fixed 24-image subset that the tests re-check) and the command that reproduces
them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lungseg.atomic import atomic_write_text
from lungseg.cli.evaluate import summary_json
from lungseg.data.discovery import discover, load_split, select
from lungseg.evaluate import evaluate
from lungseg.inference import Segmenter
from lungseg.weights import SHIPPED_WEIGHTS, load_weights, save_weights

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "lungseg" / "weights"
CHECK_SUBSET = 24  # the first N test ids: re-evaluated by tests/test_shipped_model.py


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder of `lungseg train`")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    split = args.data / "splits" / "paper_433.json"

    model, info = load_weights(args.run / "model.safetensors")
    target = PACKAGE_WEIGHTS / SHIPPED_WEIGHTS
    save_weights(target, model, info, half=True)

    segmenter = Segmenter.from_pretrained(target)
    test = select(discover(args.data).pairs, load_split(split), "test")
    full = summary_json(evaluate(segmenter, test).aggregate())
    subset = summary_json(evaluate(segmenter, test[:CHECK_SUBSET]).aggregate())

    run = json.loads((args.run / "run.json").read_text())
    summary = json.loads((args.run / "summary.json").read_text())
    card = {
        "name": "lungseg_cxr",
        "model": info.model_config["name"],
        "model_config": info.model_config,
        "input_size": list(info.image_size),
        "preprocessing": info.preprocessing,
        "threshold": info.threshold,
        "weights": {"file": SHIPPED_WEIGHTS, "dtype": "float16", "bytes": target.stat().st_size},
        "training": {
            "command": run["command"],
            "preset": run["preset"],
            "epochs": summary["epochs"],
            "best_epoch": summary["best_epoch"],
            "train_minutes": round(summary["train_seconds"] / 60, 1),
            "val_dice_original_res": summary["val_dice_original_res"],
        },
        "data": "Montgomery (138) + Shenzhen (566) chest X-rays with manual lung masks (NLM)",
        "split": "paper_433.json: train 282 / val 211 (checkpoint, threshold) / test 211",
        "test_metrics": full,
        "test_metrics_first_24": subset,
        "reproduce": "lungseg evaluate --data DATA --split DATA/splits/paper_433.json",
        "license_note": "Research use only; not a medical device. Shenzhen masks CC BY-NC-SA 4.0.",
    }
    atomic_write_text(PACKAGE_WEIGHTS / "lungseg_cxr.json", json.dumps(card, indent=2) + "\n")
    print(json.dumps({k: full[k] for k in ("n", "dice", "iou", "accuracy", "hd95")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
