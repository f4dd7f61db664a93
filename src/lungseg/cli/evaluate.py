"""``lungseg evaluate``: the paper's Table 1 metrics and more, at original resolution."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from lungseg.cli import (
    add_decoding_options,
    add_parser,
    add_runtime_options,
    check_exists,
    check_output_file,
    describe_runtime,
    probability,
)

log = logging.getLogger(__name__)

TABLE_METRICS = ("dice", "iou", "accuracy", "precision", "recall", "specificity", "hd95", "assd")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_parser(subparsers, "evaluate", "evaluate a model on a labelled dataset")
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="lungseg safetensors file or .onnx from lungseg export (default: shipped model)",
    )
    parser.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help="dataset root (or CSV manifest)"
    )
    parser.add_argument(
        "--split",
        type=Path,
        metavar="FILE",
        help="split JSON; without it every pair is used",
    )
    parser.add_argument("--subset", default="test", help="subset of the split to evaluate")
    parser.add_argument(
        "--threshold",
        type=probability,
        metavar="T",
        help="override the threshold stored in the weights (default: the weights')",
    )
    parser.add_argument(
        "--no-postprocess",
        dest="postprocess",
        action="store_false",
        help="score the network's raw masks instead of the post-processed ones lungseg predict "
        "writes (default: post-processed: two largest lung components, largest heart "
        "component, holes filled)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="write the summary as JSON to PATH"
    )
    parser.add_argument("--csv", type=Path, metavar="PATH", help="write one row per image to PATH")
    add_decoding_options(parser, batch_size=8)
    add_runtime_options(parser)
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        help="what runs the model (default: onnxruntime for a .onnx --weights file from "
        "lungseg export, else torch)",
    )
    parser.set_defaults(func=run)


def summary_json(aggregate: dict[str, Any]) -> dict[str, Any]:
    """The flat per-image-mean summary, plus the full aggregate for whoever wants more."""
    out: dict[str, Any] = {"n": aggregate["n"]}
    out.update({m: aggregate["mean"][m] for m in TABLE_METRICS})
    out["std"] = {m: aggregate["std"][m] for m in TABLE_METRICS}
    out["pooled"] = aggregate["pooled"]
    out["per_source"] = {
        name: {"n": part["n"], **{m: part["mean"][m] for m in TABLE_METRICS}}
        for name, part in aggregate["per_source"].items()
    }
    out["undefined"] = aggregate.get("undefined", {})
    return out


def format_table(aggregate: dict[str, Any]) -> str:
    """Mean ± std over images, pooled over pixels, and per-source means, one row per metric."""
    sources = sorted(aggregate["per_source"])
    header = ["metric", "mean ± std", "pooled", *sources]
    rows = []
    for metric in TABLE_METRICS:
        distance = metric in ("hd95", "assd")
        fmt = "{:.2f}" if distance else "{:.4f}"
        rows.append(
            [
                metric + (" (px)" if distance else ""),
                f"{fmt.format(aggregate['mean'][metric])} ± {fmt.format(aggregate['std'][metric])}",
                "" if distance else fmt.format(aggregate["pooled"][metric]),
                *[fmt.format(aggregate["per_source"][s]["mean"][metric]) for s in sources],
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_heart(heart: dict[str, Any]) -> str:
    """The heart's scores and the cardiothoracic ratio's agreement with the manual masks'."""
    lines = [
        f"heart ({heart['n']} images with a heart mask): Dice {heart['dice']:.4f}, "
        f"IoU {heart['iou']:.4f}, HD95 {heart['hd95']:.2f} px"
    ]
    if "ctr_mae" in heart:
        lines.append(
            f"CTR against the manual masks' ({heart['ctr_n']} images, {heart['ctr_missing']} "
            f"without a CTR): mean absolute error {heart['ctr_mae']:.4f}, bias "
            f"{heart['ctr_bias']:+.4f}, cardiomegaly (CTR > 0.5) agrees on "
            f"{heart['cardiomegaly_agreement']:.1%}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    check_exists(args.data, "--data")  # before loading the model: a typo fails in a second
    check_exists(args.split, "--split")
    check_output_file(args.json, "--json")
    check_output_file(args.csv, "--csv")

    from lungseg.atomic import atomic_write_text
    from lungseg.data.discovery import discover, load_split, select
    from lungseg.evaluate import evaluate
    from lungseg.inference import Segmenter

    segmenter = Segmenter.from_pretrained(
        args.weights, device=args.device, precision=args.precision, backend=args.backend
    )
    log.debug("%s", describe_runtime(segmenter))  # -v shows it; stderr stays quiet
    pairs = discover(args.data).pairs
    if args.split is not None:
        pairs = select(pairs, load_split(args.split), args.subset)
    metrics = evaluate(
        segmenter,
        pairs,
        threshold=args.threshold,
        batch_size=args.batch_size,
        workers=args.workers,
        postprocess=args.postprocess,
    )
    aggregate = metrics.aggregate()
    threshold = segmenter.threshold if args.threshold is None else args.threshold
    masks = (
        "post-processed masks, as lungseg predict writes them"
        if args.postprocess
        else ("raw masks (no post-processing)")
    )
    print(
        f"{aggregate['n']} images, threshold {threshold:.2f}, {masks}; metrics at original "
        "resolution (F1 = Dice, reported once)"
    )
    print(format_table(aggregate))
    heart = metrics.heart_summary()
    if heart is not None:
        print(format_heart(heart))
    if args.json:
        result = summary_json(aggregate)
        result["threshold"] = threshold
        result["postprocess"] = args.postprocess
        result["heart"] = heart
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    if args.csv:
        rows = metrics.rows()
        buffer = io.StringIO()
        columns = list(dict.fromkeys(key for row in rows for key in row))  # *_mm only where known
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(args.csv, buffer.getvalue())
    return 0
