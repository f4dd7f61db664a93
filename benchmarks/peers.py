"""Train peers and lungseg models on the same split, input size and wall-clock budget; compare.

Every model is trained by lungseg's own trainer with one preset (``--preset``, default ``cpu``:
same augmentation, source weights, loss, optimiser, schedule and time budget, ``--budget-min``
defaulting to the preset's) on one split (``--split``, default
``DATA/splits/multi_source.json``), and evaluated by the same ``lungseg evaluate`` code path
(logits resized to the ORIGINAL mask size, threshold chosen on val, post-processed as ``lungseg
predict`` writes masks, the same for every model) on its test subset, so the table compares
architectures and nothing else. ``peers.md`` gives Dice and HD95 (px) as means over all test
images and over each source's; ``peers.json`` has every metric.
Peers enter lungseg's registry from here, so the package itself never imports smp or MONAI.

Runs in the benchmark environment (see benchmarks/README.md), because smp needs torchvision.
The multi-source comparison (``cpu`` preset, 90 min per model):

    .venv-bench/bin/python benchmarks/peers.py --data ../shared/data \
        --models msag_unet_cpu unet attention_unet smp_unet_r34 monai_attention_unet \
        --out runs/peers_multi

The README's earlier 45-minute comparison on the paper split is its command plus the paper
split and the paper-data recipe (``cpu_paper``, which is the ``cpu`` preset of that time):

    OMP_NUM_THREADS=1 taskset -c 1 .venv-bench/bin/python benchmarks/peers.py \
        --data ../shared/data --split ../shared/data/splits/paper_433.json --preset cpu_paper \
        --models msag_unet_cpu unet attention_unet smp_unet_r34 monai_attention_unet \
        --budget-min 45 --threads 1 --out runs/peers_1core

(``cpu_paper`` picks the epoch and threshold by the mean over val images, as those runs did.)

On a machine that is also used for other work, give the comparison one core of its own so every
model trains under the same conditions: ``taskset -c 1 ... --threads 1``.

A finished model is not retrained (its ``summary.json`` exists); an interrupted one resumes from
its last checkpoint, so one ``--out`` folder must keep one split and preset.
``--models`` may name the shipped weights as ``shipped`` (evaluated only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import monai_attention_unet, smp_unet_r34  # noqa: E402  (the peers' constructors)

from lungseg.cli.evaluate import TABLE_METRICS, summary_json  # noqa: E402
from lungseg.config import apply_overrides, get_preset  # noqa: E402
from lungseg.data.discovery import discover, load_split, select  # noqa: E402
from lungseg.evaluate import evaluate  # noqa: E402
from lungseg.inference import Segmenter  # noqa: E402
from lungseg.models.registry import register_model  # noqa: E402
from lungseg.training import train  # noqa: E402
from lungseg.training.run_dir import RunDir  # noqa: E402

PEERS = {"smp_unet_r34": smp_unet_r34, "monai_attention_unet": monai_attention_unet}


class PeerModel(nn.Module):
    """A peer network dressed as a lungseg model (``config`` and ``stride``) for the trainer."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.net = PEERS[name]()
        self.config = {"name": name}
        self.stride = 32 if name == "smp_unet_r34" else 16

    def forward(self, x):  # (B, 1, H, W) -> (B, 1, H, W) logits
        return self.net(x)


def register_peers() -> None:
    """Put the peers into lungseg's registry so the trainer, weights and Segmenter take them."""
    for name in PEERS:

        def factory(_name: str = name, **overrides: Any) -> nn.Module:
            return PeerModel(_name)

        factory.__name__ = name
        register_model(factory)


def train_one(name: str, args: argparse.Namespace) -> Path:
    run = RunDir(args.out / name)
    if run.summary.is_file():
        return run.final_weights
    config = apply_overrides(
        get_preset(args.preset),
        [f"model={json.dumps(name)}", f"time_budget_min={args.budget_min}", f"seed={args.seed}"],
    )
    train(config, args.data, args.split, run.path, resume=run.holds_run())
    return run.final_weights


def evaluate_one(name: str, weights: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    segmenter = Segmenter.from_pretrained(weights)
    pairs = select(discover(args.data).pairs, load_split(args.split), "test")
    started = time.perf_counter()
    summary = summary_json(evaluate(segmenter, pairs).aggregate())
    run = json.loads((weights.parent / "summary.json").read_text()) if weights else {}
    params = sum(p.numel() for p in segmenter.model.parameters())
    return {
        "model": name,
        "params_m": round(params / 1e6, 2),
        "epochs": run.get("epochs"),
        "train_min": round(run.get("train_seconds", 0) / 60, 1) if run else None,
        "threshold": segmenter.threshold,
        "n": summary["n"],
        **{m: summary[m] for m in TABLE_METRICS},
        "per_source": summary["per_source"],
        "eval_seconds": round(time.perf_counter() - started, 1),
    }


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Dice and HD95, mean over all test images and over each source's, best Dice first."""
    per_source = rows[0]["per_source"]  # every row scores the same test images
    sources = sorted(per_source)
    counts = [f"all ({rows[0]['n']})", *(f"{s} ({per_source[s]['n']})" for s in sources)]
    lines = [
        f"Test subset of {args.split.name}, metrics at original resolution, mean over the "
        "images of all and of each source (n), HD95 in pixels; every model trained by "
        f"lungseg's trainer with `--preset {args.preset}` for {args.budget_min:g} min with "
        f"{torch.get_num_threads()} CPU thread(s) on this machine; masks post-processed as "
        "predict writes them.",
        "",
        "| model | params (M) | epochs | train min | "
        + " | ".join([*(f"Dice {c}" for c in counts), "HD95 all", *(f"HD95 {s}" for s in sources)])
        + " |",
        "|---|---|---|---|" + "---|" * (2 * len(counts)),
    ]
    for r in sorted(rows, key=lambda r: -r["dice"]):
        parts = [r, *(r["per_source"][s] for s in sources)]
        cells = [f"{p['dice']:.4f}" for p in parts] + [f"{p['hd95']:.2f}" for p in parts]
        lines.append(
            f"| {r['model']} | {r['params_m']} | {r['epochs'] or '-'} | {r['train_min'] or '-'} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path, help="default: DATA/splits/multi_source.json")
    parser.add_argument("--models", nargs="+", default=["msag_unet_cpu", *PEERS])
    parser.add_argument("--preset", default="cpu", help="lungseg training preset for every model")
    parser.add_argument("--budget-min", type=float, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/peers"))
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads for training and evaluation (default: torch's choice); pin the "
        "process with taskset too, so every model gets the same cores",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.split = args.split or args.data / "splits" / "multi_source.json"
    if args.budget_min is None:
        args.budget_min = get_preset(args.preset).time_budget_min
    register_peers()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        weights = None if name == "shipped" else train_one(name, args)
        rows.append(evaluate_one(name, weights, args))
        (args.out / "peers.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = render(rows, args)
    (args.out / "peers.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
