"""How much of the remaining error is in the manual masks? Models against each other and the truth.

    .venv-bench/bin/python benchmarks/label_agreement.py --data ../shared/data \
        --runs runs/peers_1core --out runs/label_agreement

Every model trained by ``peers.py`` (one per architecture: lungseg's own, smp's, MONAI's, all
with the same recipe and budget) predicts the same split. Per image it measures

- truth agreement: the mean Dice of each model against the manual mask (what every table reports);
- model agreement: the mean Dice between every pair of models;
- consensus vs truth: the Dice of the models' majority vote against the manual mask.

Models built differently make different mistakes, so where they agree closely with each other and
all depart from the manual mask in the same place, the mask itself is the likelier outlier (an
annotation convention, such as including the lung behind the heart, or a loose outline). Images
with model agreement >= ``--agree`` and consensus vs truth < ``--disagree`` are listed as
"suspect masks" for a person to review. Nothing is dropped from any reported metric: the per-source
means "without suspect masks" are printed only to size the effect.

Writes ``agreement.json`` (summary), ``per_image.csv`` and ``agreement.png`` (model agreement
against truth agreement, one dot per image) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import register_peers  # noqa: E402  (smp and MONAI enter the registry there)

from lungseg.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from lungseg.data.discovery import discover, load_split, select  # noqa: E402
from lungseg.evaluate import predict_pairs  # noqa: E402
from lungseg.inference import Segmenter  # noqa: E402
from lungseg.metrics import dice  # noqa: E402


def find_models(runs: Path) -> dict[str, Path]:
    """Every finished run (``<runs>/<name>/model.safetensors``): one per architecture.

    The shipped model is left out: it is ``msag_unet_cpu`` again, and two runs of one
    architecture would inflate the agreement between models.
    """
    return {
        weights.parent.name: weights
        for weights in sorted(runs.glob("*/model.safetensors"))
        if (weights.parent / "summary.json").is_file()
    }


def predict_masks(
    name: str, weights: Path, pairs: list
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Binary masks at original resolution, each model with its own val-chosen threshold, and
    the manual masks the same pass read (so no mask file is read twice)."""
    segmenter = Segmenter.from_pretrained(weights)
    masks, truths = {}, {}
    for item in predict_pairs(segmenter, pairs, desc=name, postprocess=False):
        masks[item.pair.id] = item.result.mask
        truths[item.pair.id] = item.truth
    return masks, truths


def score_image(truth: np.ndarray, masks: list[np.ndarray]) -> dict[str, float]:
    votes = np.sum(masks, axis=0)
    consensus = votes * 2 > len(masks)
    return {
        "truth_agreement": float(np.mean([dice(mask, truth) for mask in masks])),
        "model_agreement": float(
            np.mean([dice(a, b) for a, b in itertools.combinations(masks, 2)])
        ),
        "consensus_vs_truth": dice(consensus, truth),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    kept = [row for row in rows if not row["suspect"]]
    return {
        "n": len(rows),
        "truth_agreement": float(np.mean([r["truth_agreement"] for r in rows])),
        "model_agreement": float(np.mean([r["model_agreement"] for r in rows])),
        "consensus_vs_truth": float(np.mean([r["consensus_vs_truth"] for r in rows])),
        "suspect_masks": len(rows) - len(kept),
        "truth_agreement_without_suspects": float(np.mean([r["truth_agreement"] for r in kept])),
    }


def plot(rows: list[dict[str, Any]], args: argparse.Namespace) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for source, color in (("montgomery", "tab:blue"), ("shenzhen", "tab:orange")):
        chosen = [r for r in rows if r["source"] == source]
        ax.scatter(
            [r["truth_agreement"] for r in chosen],
            [r["model_agreement"] for r in chosen],
            s=12,
            alpha=0.7,
            color=color,
            label=f"{source} ({len(chosen)})",
        )
    ax.axhline(args.agree, color="grey", linewidth=0.8, linestyle="--")
    ax.axvline(args.disagree, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("models vs manual mask (mean Dice)")
    ax.set_ylabel("models vs each other (mean pairwise Dice)")
    ax.set_title("Top left: models agree, the manual mask differs")
    ax.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path)
    parser.add_argument("--subset", default="test", choices=["train", "val", "test"])
    parser.add_argument("--runs", type=Path, default=Path("runs/peers_1core"))
    parser.add_argument("--out", type=Path, default=Path("runs/label_agreement"))
    parser.add_argument("--agree", type=float, default=0.97, help="model agreement at least")
    parser.add_argument("--disagree", type=float, default=0.93, help="consensus vs truth below")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = args.split or args.data / "splits" / "paper_433.json"
    register_peers()
    pairs = select(discover(args.data).pairs, load_split(split), args.subset)
    models = find_models(args.runs)
    if len(models) < 3:
        parser.error(f"need at least 3 models for a majority vote; found {', '.join(models)}")
    predictions = {}
    for name, weights in models.items():
        predictions[name], truths = predict_masks(name, weights, pairs)

    rows = []
    for pair in pairs:
        masks = [predictions[name][pair.id] for name in models]
        row = {"id": pair.id, "source": pair.source, **score_image(truths[pair.id], masks)}
        row["suspect"] = (
            row["model_agreement"] >= args.agree and row["consensus_vs_truth"] < args.disagree
        )
        rows.append(row)

    summary = {
        "models": list(models),
        "subset": args.subset,
        "thresholds": {"agree": args.agree, "disagree": args.disagree},
        "groups": {
            "all": summarise(rows),
            **{
                source: summarise([r for r in rows if r["source"] == source])
                for source in sorted({r["source"] for r in rows})
            },
        },
        "suspect_masks": [r["id"] for r in rows if r["suspect"]],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "agreement.json", json.dumps(summary, indent=2) + "\n")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(args.out / "per_image.csv", table.getvalue())
    atomic_write_bytes(args.out / "agreement.png", plot(rows, args))
    print(render(summary))
    return 0


def render(summary: dict[str, Any]) -> str:
    """A markdown table, one row per group of images."""
    lines = [
        f"{len(summary['models'])} models ({', '.join(summary['models'])}), "
        f"{summary['subset']} subset, mean Dice per image",
        "",
        "| images | n | models vs mask | models vs each other | majority vote vs mask "
        "| suspect masks | models vs mask without them |",
        "|---|---|---|---|---|---|---|",
    ]
    for group, s in summary["groups"].items():
        lines.append(
            f"| {group} | {s['n']} | {s['truth_agreement']:.4f} | {s['model_agreement']:.4f} "
            f"| {s['consensus_vs_truth']:.4f} | {s['suspect_masks']} "
            f"| {s['truth_agreement_without_suspects']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
