"""Leave one source out: each source scored by a model trained without it, and by a reference.

    .venv/bin/python benchmarks/cross_hospital.py --data ../shared/data --out runs/loso

For each held-out source S (``--sources``; default every source of ``--split``, which defaults
to ``DATA/splits/multi_source.json``) it writes ``without_<S>.json`` into the output folder:
``train`` and ``val`` are the split's minus S's ids, ``test`` is S's ids of the split's test
subset. lungseg's trainer trains ``without_<S>/`` on it with ``--preset`` (default ``cpu``) for
``--budget-min`` (default: the preset's); val, which holds no S image, picks the checkpoint and
the threshold. A run with a ``summary.json`` is not retrained; an interrupted one resumes from
its ``last.pt``.

Every held-out model and the reference model (``--reference WEIGHTS``; default the shipped
weights) are evaluated on the same X-rays of S by the ``lungseg evaluate`` code path (logits
resized to each manual mask's original size, each model's own threshold, post-processed as
``lungseg predict`` writes masks),
on two sets:

- ``test``: S's ids of the split's test subset, which no model trained on the split has seen:
  the fair comparison, and the one in ``results.md``'s first table.
- ``all``: every S pair of the split (train + val + test). The held-out model saw none; a
  reference trained on this split learnt from S's train ids and chose its checkpoint on S's val
  ids, so it is favoured here.

``results.json`` and ``results.md`` cover the sources of that invocation. ``results.json``
records the split the reference's weights name (``reference.split``): the reference is "a model
that saw S" only if that split holds S's ids. The shipped model was trained on
``multi_source.json`` and saw every source; an older weights file may not have.

Numbers (``results.md``; ``results.json`` has every metric of ``lungseg evaluate --json``):
Dice and IoU are means over images of the per-image scores; HD95 is the 95th-percentile
Hausdorff distance in pixels of the original mask, mean over the images where it is defined
(``undefined`` counts the others); a gap is held-out minus reference, so a negative Dice gap
or a positive HD95 gap is what S's absence from training costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from lungseg.atomic import atomic_write_text
from lungseg.cli.evaluate import format_table, summary_json
from lungseg.config import TrainConfig, apply_overrides, get_preset
from lungseg.data.discovery import SUBSETS, Pair, discover, load_split, select
from lungseg.evaluate import evaluate
from lungseg.inference import Segmenter
from lungseg.metrics import MetricAccumulator
from lungseg.training import train
from lungseg.training.run_dir import RunDir
from lungseg.weights import SHIPPED_WEIGHTS


def source_of(pair_id: str) -> str:
    """Pair ids are ``<source>/<stem>``."""
    return pair_id.split("/", 1)[0]


def write_held_out_split(split: dict[str, list[str]], source: str, origin: Path, out: Path) -> Path:
    """``without_<source>.json``: train/val without ``source``, its test ids as test."""
    held_out = {
        "description": f"{origin.name} without {source} in train and val; {source}'s test ids "
        "as test. Written by benchmarks/cross_hospital.py.",
        **{s: [i for i in split[s] if source_of(i) != source] for s in ("train", "val")},
        "test": [i for i in split["test"] if source_of(i) == source],
    }
    path = out / f"without_{source}.json"
    atomic_write_text(path, json.dumps(held_out, indent=1) + "\n")
    return path


def without_source(config: TrainConfig, source: str) -> TrainConfig:
    """The recipe with ``source`` gone from its per-source sampling weights: the trainer refuses
    a weight for a source that has no training images, and the held-out one has none."""
    weights = {name: w for name, w in config.source_weights.items() if name != source}
    return dataclasses.replace(config, source_weights=weights)


def train_held_out(config: TrainConfig, data: Path, split: Path, run: Path) -> Path:
    """Train (or resume) the run unless it has finished; its weights."""
    folder = RunDir(run)
    if not folder.summary.is_file():
        train(config, data, split, run, resume=folder.holds_run())
    return folder.final_weights


def score(segmenter: Segmenter, pairs: list[Pair], test_ids: set[str], name: str) -> dict[str, Any]:
    """``summary_json`` on S's test pairs and on all of S's pairs, from one evaluation pass."""
    scored = evaluate(segmenter, pairs).lungs
    test = MetricAccumulator()
    test.extend(r for r in scored.state() if r["id"] in test_ids)
    result = {}
    for subset, metrics in (("test", test), ("all", scored)):
        aggregate = metrics.aggregate()
        print(f"\n{name}, {subset} ({aggregate['n']} images):\n{format_table(aggregate)}")
        result[subset] = summary_json(aggregate)
    return result


def render(results: dict[str, Any]) -> str:
    """Two markdown tables (S's test ids, all S's pairs) under the command that made them."""
    reference = results["reference"]
    lines = [
        f"`{results['command']}`",
        "",
        f"Leave one source out of {results['split']}: each held-out model trained by lungseg's "
        f"trainer, preset `{results['preset']}`, {results['time_budget_min']:g} min, seed "
        f"{results['seed']}; reference `{reference['weights']}` (trained on "
        f"{reference['split'] or 'an unrecorded split'}). Metrics at original resolution, mean "
        "over images, each model's own threshold, post-processed masks; gap = held-out - "
        "reference.",
    ]
    titles = {"test": "S's ids of the split's test subset", "all": "every S pair of the split"}
    for subset, title in titles.items():
        lines += [
            "",
            f"On {title}:",
            "",
            "| held-out source S | n | held-out Dice | IoU | HD95 (px) "
            "| reference Dice | IoU | HD95 (px) | Dice gap | HD95 gap |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for source, result in results["sources"].items():
            held, ref = result["held_out"][subset], result["reference"][subset]
            lines.append(
                f"| {source} | {held['n']} | {held['dice']:.4f} | {held['iou']:.4f} "
                f"| {held['hd95']:.2f} | {ref['dice']:.4f} | {ref['iou']:.4f} | {ref['hd95']:.2f} "
                f"| {held['dice'] - ref['dice']:+.4f} | {held['hd95'] - ref['hd95']:+.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path, help="default: DATA/splits/multi_source.json")
    parser.add_argument("--sources", nargs="+", help="sources to hold out (default: all)")
    parser.add_argument("--out", type=Path, default=Path("runs/loso"))
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--budget-min", type=float, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", type=Path, help="weights (default: the shipped model)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.split = args.split or args.data / "splits" / "multi_source.json"
    split = load_split(args.split)
    if any(subset not in split for subset in SUBSETS):
        parser.error(f"{args.split} needs train, val and test subsets")
    ids = [i for subset in SUBSETS for i in split[subset]]
    sources = sorted({source_of(i) for i in ids})
    held_out = args.sources or sources
    for source in held_out:
        if source not in sources or not any(source_of(i) == source for i in split["test"]):
            parser.error(f"{source!r} has no test ids in {args.split} (sources: {sources})")
    overrides = [f"seed={args.seed}"]
    if args.budget_min is not None:
        overrides.append(f"time_budget_min={args.budget_min}")
    config = apply_overrides(get_preset(args.preset), overrides)

    args.out.mkdir(parents=True, exist_ok=True)
    found = discover(args.data).pairs
    reference = Segmenter.from_pretrained(args.reference)
    results: dict[str, Any] = {
        "command": shlex.join([os.path.relpath(sys.executable), *sys.argv]),
        "split": str(args.split),
        "preset": args.preset,
        "time_budget_min": config.time_budget_min,
        "seed": config.seed,
        "reference": {
            "weights": str(args.reference) if args.reference else f"shipped {SHIPPED_WEIGHTS}",
            "split": reference.info.extra.get("split"),
        },
        "sources": {},
    }
    for source in held_out:
        split_path = write_held_out_split(split, source, args.split, args.out)
        run = args.out / f"without_{source}"
        weights = train_held_out(without_source(config, source), args.data, split_path, run)
        pairs = select(found, {"all": [i for i in ids if source_of(i) == source]}, "all")
        test_ids = {i for i in split["test"] if source_of(i) == source}
        results["sources"][source] = {
            "split": str(split_path),
            "run": str(run),
            "held_out": score(Segmenter.from_pretrained(weights), pairs, test_ids, run.name),
            "reference": score(reference, pairs, test_ids, "reference"),
        }
        atomic_write_text(args.out / "results.json", json.dumps(results, indent=2) + "\n")
        atomic_write_text(args.out / "results.md", render(results))
    print("\n" + render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
