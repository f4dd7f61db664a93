"""How well ``estimated_dice`` knows when a mask is wrong, on TEST images clean and degraded.

    .venv/bin/python benchmarks/quality.py --data ../shared/data [--weights W]

The weights' quality model was fitted on validation images (``scripts/calibrate_quality.py``).
Here every test image of ``splits/multi_source.json`` (which holds the paper split's test
images unchanged) is scored clean and in every degradation of :mod:`lungseg.data.degrade`, and
for each group the table gives: Spearman correlation of the estimate with the true Dice, its
mean absolute error, the share of failed masks (Dice < 0.85) flagged "check" by the estimate,
and the share of good ones (Dice >= 0.95) flagged. It also times the second network pass the
estimate needs, per image, beside one plain pass (same process, same images).
Writes ``runs/quality/quality.json``, the scatter plot of estimated against true Dice
``docs/quality_estimate.png`` (numbers only, no image) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from lungseg.atomic import atomic_write_text  # noqa: E402
from lungseg.data.degrade import DEGRADATIONS  # noqa: E402
from lungseg.data.discovery import discover, load_split, select  # noqa: E402
from lungseg.data.io import read_image  # noqa: E402
from lungseg.evaluate import quality_records  # noqa: E402
from lungseg.inference import Segmenter  # noqa: E402
from lungseg.runtime import cpu_name  # noqa: E402

FAILED, GOOD = 0.85, 0.95
SEED = 20261203  # not the calibration's seed: other degraded copies
PLOT = Path(__file__).resolve().parents[1] / "docs" / "quality_estimate.png"


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


def plot(records: list[dict[str, Any]], threshold: float, path: Path) -> None:
    """Estimated against true Dice, one dot per test mask coloured by variant, with the "check"
    cut and the failed/good limits: where the flags fall, at a glance."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for variant in sorted({r["variant"] for r in records}):
        rows = [r for r in records if r["variant"] == variant]
        ax.scatter(
            [r["dice"] for r in rows],
            [r["estimated_dice"] for r in rows],
            s=6,
            alpha=0.5,
            label=f"{variant} ({len(rows)})",
        )
    low = min(0.3, min(min(r["dice"], r["estimated_dice"]) for r in records) - 0.02)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.axhline(threshold, color="black", ls="--", lw=1, label=f'"check" below {threshold:.3f}')
    for limit in (FAILED, GOOD):
        ax.axvline(limit, color="black", ls=":", lw=1)
    ax.set(
        xlabel="true Dice against the manual mask",
        ylabel="estimated Dice",
        xlim=(low, 1.0),
        ylim=(low, 1.0),
        title=f"Quality estimate on test masks, clean and degraded (n={len(records)})",
    )
    ax.text(FAILED, low + 0.01, "failed ", ha="right", fontsize=8)
    ax.text(GOOD, low + 0.01, " good", ha="left", fontsize=8)
    ax.legend(fontsize=8, loc="upper left", markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    plot(records, model.threshold, PLOT)

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
