"""``lungseg train``: train a model from a preset, with any field overridden."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from lungseg.cli import add_parser
from lungseg.errors import LungsegError

RUN_FILE = "run.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    from lungseg.config import AUGMENTATIONS, PRESETS

    parser = add_parser(subparsers, "train", "train a segmentation model (also under torchrun)")
    parser.add_argument(
        "--data", type=Path, help="dataset root (any layout `lungseg data check` reads)"
    )
    parser.add_argument(
        "--split", type=Path, help="split JSON with train/val ids (default: seeded 85/15)"
    )
    parser.add_argument("--out", type=Path, help="run folder (checkpoints, logs, figures, model)")
    parser.add_argument(
        "--preset", default="cpu", choices=sorted(PRESETS), help="recipe to start from"
    )
    parser.add_argument("--model", help="registry name (`lungseg models`); default: the preset's")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--image-size", help="N or HxW")
    parser.add_argument(
        "--time-budget-min", type=float, help="wall-clock budget in minutes (0: none)"
    )
    parser.add_argument("--workers", type=int, help="DataLoader workers")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--source-weight",
        dest="source_weights",
        action="append",
        default=[],
        metavar="SOURCE=WEIGHT",
        help="sampling weight of one image of SOURCE relative to the others (default 1 each; "
        "the cpu preset draws covidqu at 0.5), e.g. --source-weight covidqu=0.25",
    )
    parser.add_argument(
        "--augmentation",
        choices=AUGMENTATIONS,
        help="training augmentation set (default: the preset's; cpu: hospital)",
    )
    parser.add_argument(
        "--heart",
        action="store_true",
        default=None,
        help="also train a heart output channel, from the pairs that have a heart mask (a "
        "heart/ folder beside masks/, as Wingspan has); the shipped model is trained with it",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set warmup_epochs=1 --set model_args.width=24",
    )
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lungseg.atomic import atomic_write_text
    from lungseg.config import TrainConfig, apply_overrides, get_preset
    from lungseg.training import train

    if args.resume is not None:
        run_file = args.resume / RUN_FILE
        if not run_file.is_file():
            raise LungsegError(f"{args.resume}: not a lungseg run folder (no {RUN_FILE})")
        saved = json.loads(run_file.read_text())
        config = TrainConfig.from_dict(json.loads((args.resume / "config.json").read_text()))
        split = Path(saved["split"]) if saved["split"] else None
        train(config, Path(saved["data"]), split, args.resume, resume=True)
        return 0

    if args.data is None or args.out is None:
        raise LungsegError("--data and --out are required (or --resume RUN_DIR)")
    config = get_preset(args.preset)
    flags = {
        "model": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "image_size": args.image_size,
        "time_budget_min": args.time_budget_min,
        "workers": args.workers,
        "device": args.device,
        "precision": args.precision,
        "seed": args.seed,
        "augmentation": args.augmentation,
        "heart": args.heart,
    }
    overrides = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    for item in args.source_weights:
        source, sep, weight = item.partition("=")
        if not sep or not source:
            raise LungsegError(f"--source-weight {item!r} is not SOURCE=WEIGHT")
        overrides.append(f"source_weights.{source}={weight}")
    config = apply_overrides(config, overrides + args.overrides)
    if (args.out / "last.pt").exists():
        raise LungsegError(
            f"{args.out} already holds a run; use --resume {args.out} or another --out"
        )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes
        record = {
            "data": str(args.data.resolve()),
            "split": str(args.split.resolve()) if args.split else None,
            "preset": args.preset,
            "command": "lungseg " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        }
        # Both records before any data is read, so --resume works after a stop at any point.
        atomic_write_text(args.out / "config.json", config.pretty() + "\n")
        atomic_write_text(args.out / RUN_FILE, json.dumps(record, indent=2) + "\n")
    train(config, args.data, args.split, args.out)
    return 0
