"""How well ``estimated_dice`` knows when a mask is wrong, on TEST images clean and degraded.

    .venv/bin/python benchmarks/quality.py --data ../shared/data [--weights W]

The weights' quality model was fitted on validation images (``scripts/calibrate_quality.py``).
Here every test image of ``splits/multi_source.json`` (which holds the paper split's test
images unchanged) is scored clean and in every degradation of :mod:`lungseg.data.degrade`, and
for each group the table gives: Spearman correlation of the estimate with the true Dice, its
mean absolute error, the share of failed masks (Dice < 0.85) flagged "check" by the estimate,
and the share of good ones (Dice >= 0.95) flagged. It also times the second network pass the
estimate needs, per image, beside one plain pass (same process, same images).
Writes ``runs/quality/quality.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from lungseg.atomic import atomic_write_text
from lungseg.data.degrade import DEGRADATIONS
from lungseg.data.discovery import discover, load_split, select
from lungseg.data.io import read_image
from lungseg.evaluate import quality_records
from lungseg.inference import Segmenter
from lungseg.runtime import cpu_name

FAILED, GOOD = 0.85, 0.95
SEED = 20261203  # not the calibration's seed: other degraded copies


def summarise(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    true = np.array([r["dice"] for r in rows])
    estimate = np.array([r["estimated_dice"] for r in rows])
    flagged = estimate < threshold
    failed, good = true < FAILED, true >= GOOD
    rho = spearmanr(estimate, true).statistic if len(rows) > 2 and np.ptp(true) > 0 else None
    return {
        "n": len(rows),
        "mean_dice": float(true.mean()),
        "spearman": None if rho is None or np.isnan(rho) else float(rho),
        "mae": float(np.abs(estimate - true).mean()),
        "failed": int(failed.sum()),
        "failed_flagged": float(flagged[failed].mean()) if failed.any() else None,
        "good": int(good.sum()),
        "good_flagged": float(flagged[good].mean()) if good.any() else None,
    }


def cost_ms(segmenter: Segmenter, images: list[np.ndarray], repeats: int = 3) -> dict[str, float]:
    """Milliseconds per image of predict_many without and with the quality pass (batch 1)."""
    timings = {}
    for quality in (False, True):
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for _result in segmenter.predict_many(images, batch_size=1, quality=quality):
                pass
            best = min(best, time.perf_counter() - started)
        timings["with_quality" if quality else "without"] = 1000 * best / len(images)
    timings["quality_cost"] = timings["with_quality"] - timings["without"]
    return timings


def fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if pct else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--weights", type=Path, help="default: the shipped model")
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    args = parser.parse_args()

    segmenter = Segmenter.from_pretrained(args.weights)
    model = segmenter.quality_model
    if model is None:
        parser.error("the weights carry no quality model: run scripts/calibrate_quality.py")
    pairs = discover(args.data).pairs
    test = select(pairs, load_split(args.data / "splits" / "multi_source.json"), "test")
    paper_ids = set(load_split(args.data / "splits" / "paper_433.json")["test"])
    records = quality_records(
        segmenter, test, degradations=tuple(DEGRADATIONS), per_image=len(DEGRADATIONS), seed=SEED
    )

    groups: dict[str, list[dict[str, Any]]] = {
        "clean, multi_source test (486)": [r for r in records if r["variant"] == "clean"],
        "clean, paper_433 test (211)": [
            r for r in records if r["variant"] == "clean" and r["id"] in paper_ids
        ],
    }
    for kind in DEGRADATIONS:
        groups[f"{kind} (degraded test copies)"] = [r for r in records if r["variant"] == kind]
    groups["all, clean + degraded"] = records
    table = {name: summarise(rows, model.threshold) for name, rows in groups.items()}

    sample = [read_image(pair.image)[0] for pair in test[:8]]
    cost = cost_ms(segmenter, sample)
    report = {
        "weights": str(args.weights or "shipped"),
        "quality_model": model.to_dict(),
        "cpu": cpu_name(),
        "cost_ms_per_image": cost,
        "groups": table,
        "records": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "quality.json", json.dumps(report, indent=2) + "\n")

    print(f"threshold {model.threshold:.3f} (fitted on {model.fitted_on})")
    print(
        "| images | n | mean Dice | Spearman | MAE | failed (<0.85) flagged "
        "| good (>=0.95) flagged |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in table.items():
        print(
            f"| {name} | {row['n']} | {row['mean_dice']:.3f} | {fmt(row['spearman'])} | "
            f"{row['mae']:.3f} | {fmt(row['failed_flagged'], True)} of {row['failed']} | "
            f"{fmt(row['good_flagged'], True)} of {row['good']} |"
        )
    print(
        f"\nper image on {cpu_name()} (batch 1, fp32, 2 threads): {cost['without']:.1f} ms "
        f"without the quality pass, {cost['with_quality']:.1f} ms with it "
        f"(+{cost['quality_cost']:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
