"""The heart and the cardiothoracic ratio against the experts', on Wingspan's test images.

    .venv/bin/python benchmarks/heart.py --data ../shared/data \
        --split ../shared/data/splits/multi_source.json [--weights W] [--subset test]

Segments the Wingspan pairs of the subset with ``lungseg evaluate``'s code (post-processed, as
``lungseg predict`` writes them) and reports:

* heart Dice, IoU and HD95 (px) against the hand-drawn heart masks;
* the CTR of the predicted masks against the expert CTR of ``wingspan/manifest.json``: mean
  absolute error, bias and 95% limits of agreement (Bland-Altman), and how often the
  cardiomegaly call (CTR > 0.5) agrees with the expert's;
* the same for the CTR of the manual masks, which bounds what any segmentation can reach, and
  that CTR against every expert CTR of the manifest (how exactly the definition is the
  expert's).

Writes ``OUT/heart.json``, the Bland-Altman plot ``docs/ctr_bland_altman.png`` (numbers only)
and ``OUT/heart_overlays.png``: the overlays with their CTR lines for the three best and the
three worst images by CTR error. The overlays show X-rays of the data set, which the project
never commits, so they go under the git-ignored ``runs/`` by default.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lungseg.atomic import atomic_write_text  # noqa: E402
from lungseg.data.discovery import discover, load_split, select  # noqa: E402
from lungseg.data.masks import read_mask  # noqa: E402
from lungseg.evaluate import ctr_agreement, predict_pairs  # noqa: E402
from lungseg.inference import Segmenter  # noqa: E402
from lungseg.measure import CARDIOMEGALY_CTR, cardiothoracic_extents  # noqa: E402
from lungseg.metrics import MetricAccumulator  # noqa: E402
from lungseg.overlay import render_overlay  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
SHOWN = 3  # best and worst images in the overlay figure


def manual_masks_vs_expert(data: Path) -> dict[str, float]:
    """The CTR of the hand-drawn heart and lung masks against every expert CTR of the manifest:
    how exactly ``cardiothoracic_extents`` is the expert's definition."""
    folder = data / "wingspan"
    rows = [r for r in json.loads((folder / "manifest.json").read_text()) if r["ctr"] is not None]
    ours = []
    for row in rows:
        heart = read_mask(folder / "heart" / f"{row['id']}.png")
        lungs = read_mask(folder / "masks" / f"{row['id']}.png")
        ours.append(cardiothoracic_extents(heart, lungs).ctr)
    return ctr_agreement(np.array(ours), np.array([r["ctr"] for r in rows]))


def bland_altman(path: Path, pred: np.ndarray, expert: np.ndarray, stats: dict[str, float]) -> None:
    mean, diff = (pred + expert) / 2, pred - expert
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    ax.scatter(mean, diff, s=14, color="#CC79A7", edgecolor="none")
    for value, style, label in (
        (stats["bias"], "-", f"bias {stats['bias']:+.3f}"),
        (stats["loa_low"], "--", f"95% limits {stats['loa_low']:+.3f} / {stats['loa_high']:+.3f}"),
        (stats["loa_high"], "--", None),
    ):
        ax.axhline(value, color="#555555", linestyle=style, linewidth=1, label=label)
    ax.axvline(CARDIOMEGALY_CTR, color="#E69F00", linewidth=0.8, linestyle=":", label="CTR 0.5")
    ax.set_xlabel("mean of lungseg's and the expert's CTR")
    ax.set_ylabel("lungseg CTR - expert CTR")
    ax.set_title(f"CTR on {stats['n']} Wingspan test X-rays (MAE {stats['mae']:.3f})")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def overlay_figure(path: Path, cases: list[dict[str, Any]]) -> None:
    fig, axes = plt.subplots(2, SHOWN, figsize=(3.2 * SHOWN, 7), dpi=110)
    for ax, case in zip(axes.ravel(), cases, strict=False):
        ax.imshow(case["overlay"])
        ax.set_title(
            f"{case['id']}\nCTR {case['ctr']:.3f}, expert {case['expert']:.3f}\n"
            f"heart Dice {case['heart_dice']:.3f}",
            fontsize=8,
        )
        ax.axis("off")
    fig.suptitle("best (top) and worst (bottom) CTR agreement", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path, help="default: DATA/splits/multi_source.json")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--weights", type=Path, help="default: the shipped model")
    parser.add_argument("--out", type=Path, default=Path("runs/heart"))
    args = parser.parse_args()

    segmenter = Segmenter.from_pretrained(args.weights)
    if not segmenter.has_heart:
        parser.error(f"{args.weights or 'the shipped model'} has no heart channel")
    split = load_split(args.split or args.data / "splits" / "multi_source.json")
    pairs = [
        p for p in select(discover(args.data).pairs, split, args.subset) if p.heart is not None
    ]
    manifest = json.loads((args.data / "wingspan" / "manifest.json").read_text())
    expert_ctr = {f"wingspan/{row['id']}": row["ctr"] for row in manifest}

    heart = MetricAccumulator()
    rows, cases = [], []
    for item in predict_pairs(segmenter, pairs, desc="heart"):
        result, pair = item.result, item.pair
        scores = heart.update(result.heart, item.heart_truth, id=pair.id, source=pair.source)
        manual = cardiothoracic_extents(item.heart_truth, item.truth)
        row = {
            "id": pair.id,
            "heart_dice": scores["dice"],
            "heart_hd95": scores["hd95"],
            "ctr": result.measurements.ctr,
            "ctr_manual_masks": None if manual is None else round(manual.ctr, 4),
            "ctr_expert": expert_ctr.get(pair.id),
        }
        rows.append(row)
        if row["ctr"] is not None and row["ctr_expert"] is not None:
            overlay = render_overlay(result.grey / 255.0, result.labels, heart=result.heart)
            cases.append({**row, "overlay": overlay, "expert": row["ctr_expert"]})

    aggregate = heart.aggregate()
    with_expert = [r for r in rows if r["ctr_expert"] is not None]
    measured = [r for r in with_expert if r["ctr"] is not None]
    expert = np.array([r["ctr_expert"] for r in measured])
    pred = np.array([r["ctr"] for r in measured])
    manual = np.array([r["ctr_manual_masks"] for r in with_expert])
    report = {
        "weights": str(args.weights or "shipped"),
        "subset": f"{args.subset} of {(args.split or Path('multi_source.json')).name}, wingspan",
        "images": len(rows),
        "heart": {k: aggregate["mean"][k] for k in ("dice", "iou", "hd95")},
        "ctr_vs_expert": ctr_agreement(pred, expert),
        "ctr_missing": len(with_expert) - len(measured),
        "manual_masks_ctr_vs_expert": ctr_agreement(
            manual, np.array([r["ctr_expert"] for r in with_expert])
        ),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "heart.json", json.dumps(report, indent=2) + "\n")
    bland_altman(DOCS / "ctr_bland_altman.png", pred, expert, report["ctr_vs_expert"])
    cases.sort(key=lambda c: abs(c["ctr"] - c["expert"]))
    overlay_figure(args.out / "heart_overlays.png", cases[:SHOWN] + cases[-SHOWN:])

    stats, bound = report["ctr_vs_expert"], report["manual_masks_ctr_vs_expert"]
    print(f"{len(rows)} Wingspan {args.subset} images with a heart mask")
    print(
        f"heart Dice {report['heart']['dice']:.4f}, IoU {report['heart']['iou']:.4f}, "
        f"HD95 {report['heart']['hd95']:.2f} px"
    )
    print(
        f"CTR vs expert ({stats['n']} images, {report['ctr_missing']} without a CTR): MAE "
        f"{stats['mae']:.4f}, bias {stats['bias']:+.4f}, 95% limits {stats['loa_low']:+.4f} / "
        f"{stats['loa_high']:+.4f}, cardiomegaly agreement {stats['cardiomegaly_agreement']:.1%}"
    )
    print(
        f"manual masks' CTR vs expert: MAE {bound['mae']:.4f}, cardiomegaly agreement "
        f"{bound['cardiomegaly_agreement']:.1%}"
    )
    everyone = manual_masks_vs_expert(args.data)  # the CTR definition, on every manifest row
    print(
        f"manual masks' CTR vs expert on all {everyone['n']} Wingspan images with one: MAE "
        f"{everyone['mae']:.4f}, largest {everyone['max_abs']:.4f}"
    )
    for r in measured:  # the cardiomegaly calls that differ from the expert's
        if (r["ctr"] > CARDIOMEGALY_CTR) != (r["ctr_expert"] > CARDIOMEGALY_CTR):
            print(
                f"  disagrees: {r['id']} lungseg CTR {r['ctr']:.4f}, expert {r['ctr_expert']:.4f}"
            )
    print(
        f"wrote {args.out / 'heart.json'}, {DOCS / 'ctr_bland_altman.png'}, "
        f"{args.out / 'heart_overlays.png'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
