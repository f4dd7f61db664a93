"""``lungseg export``: ONNX or TorchScript, written only after it matches PyTorch on real X-rays."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lungseg.cli import add_parser, check_exists, check_output_file

if TYPE_CHECKING:
    from lungseg.export import ExportCheck


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_parser(
        subparsers,
        "export",
        "export a model to ONNX or TorchScript (dynamic batch, the model's input size), "
        "verified against PyTorch on real X-rays before anything is written",
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=("onnx", "torchscript"),
        help="onnx (runs with --backend onnxruntime; needs pip install 'lungseg[onnx]') or "
        "torchscript (a traced graph for torch.jit.load)",
    )
    parser.add_argument(
        "-o", "--out", type=Path, required=True, metavar="FILE", help="file to write"
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="lungseg safetensors file (default: shipped model)",
    )
    parser.add_argument(
        "--check-image",
        type=Path,
        nargs="+",
        required=True,
        metavar="PATH",
        help="real chest X-rays (any format lungseg reads) to verify the export on; required "
        "because lungseg ships no X-ray. Each must give a mask with Dice >= 0.999 against "
        "PyTorch at its original size, and the first two also in one batch",
    )
    parser.set_defaults(func=run)


def format_checks(checks: list[ExportCheck]) -> str:
    """One line per check: what ran, the largest logit difference and the mask Dice."""
    header = ("check", "batch", "max |logit diff|", "Dice vs PyTorch", "")
    rows = [
        (
            check.label,
            str(check.batch_size),
            f"{check.max_abs_logit_diff:.3g}",
            f"{check.dice:.6f}",
            "ok" if check.passed else "FAILED",
        )
        for check in checks
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def run(args: argparse.Namespace) -> int:
    check_output_file(args.out, "-o/--out")
    for path in args.check_image:
        check_exists(path, "--check-image")

    from lungseg.export import ExportVerificationError, export_model

    try:
        report = export_model(args.out, args.format, args.check_image, weights=args.weights)
    except ExportVerificationError as err:
        print(format_checks(err.checks))
        raise  # the CLI prints the reason in one line and exits 1
    print(format_checks(report.checks))
    print(
        f"wrote {report.path} ({report.format}, {report.size_bytes / 1e6:.1f} MB): exported in "
        f"{report.export_seconds:.1f} s, verified in {report.verify_seconds:.1f} s"
    )
    return 0
