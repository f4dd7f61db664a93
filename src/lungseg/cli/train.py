"""``lungseg train``: train a model from a preset, with any field overridden."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from lungseg.cli import DEVICES, PRECISIONS, add_parser, non_negative_int, positive_int
from lungseg.errors import LungsegError


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
    cpu = PRESETS["cpu"]

    def preset_default(field: str) -> str:
        return f"default: the preset's; cpu: {getattr(cpu, field)}"

    parser.add_argument(
        "--model", help=f"registry name (`lungseg models`; {preset_default('model')})"
    )
    parser.add_argument(
        "--epochs", type=positive_int, help=f"epochs at most ({preset_default('epochs')})"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"images per step and process ({preset_default('batch_size')})",
    )
    parser.add_argument("--lr", type=float, help=f"peak learning rate ({preset_default('lr')})")
    parser.add_argument(
        "--image-size",
        help="network input, N or HxW (default: the preset's; cpu: "
        f"{'x'.join(map(str, cpu.image_size))})",
    )
    parser.add_argument(
        "--time-budget-min",
        type=float,
        help=f"wall-clock budget in minutes, 0 for none ({preset_default('time_budget_min')})",
    )
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        help=f"DataLoader worker processes ({preset_default('workers')})",
    )
    parser.add_argument(
        "--device", choices=DEVICES, help=f"where to train ({preset_default('device')})"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="autocast; auto measures fp32 against bf16 on a CPU and keeps the faster, and "
        f"takes bf16/fp16 on CUDA ({preset_default('precision')})",
    )
    parser.add_argument(
        "--seed", type=int, help=f"seeds the data order and the weights ({preset_default('seed')})"
    )
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
    from lungseg.config import apply_overrides, get_preset
    from lungseg.training import train
    from lungseg.training.run_dir import RunDir

    if args.resume is not None:
        config, record = RunDir(args.resume).read_start()
        split = Path(record.split) if record.split else None
        train(config, Path(record.data), split, args.resume, resume=True)
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
    command = "lungseg " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    train(config, args.data, args.split, args.out, preset=args.preset, command=command)
    return 0
