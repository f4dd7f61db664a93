"""``lungseg predict``: masks, overlays and lung areas for X-rays, at their original size."""

from __future__ import annotations

import argparse
from pathlib import Path

from lungseg.cli import add_parser

SHOWN_ERRORS = 5
"""Failed files listed after a run; results.csv's error column lists every one."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_parser(
        subparsers,
        "predict",
        "segment X-rays (files, folders, globs; PNG/JPEG/TIFF/BMP/DICOM) with the shipped model",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or globs")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--weights", type=Path, help="lungseg .safetensors or exported .onnx (default: shipped)"
    )
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        help="inference engine (default: onnxruntime for an .onnx file, else torch)",
    )
    parser.add_argument("--batch", type=int, default=4, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for decoding")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument(
        "--probabilities", action="store_true", help="also write NAME_probabilities.png (16-bit)"
    )
    parser.add_argument(
        "--dicom-seg", action="store_true", help="for DICOM inputs, also write NAME_seg.dcm"
    )
    parser.add_argument(
        "--no-postprocess",
        dest="postprocess",
        action="store_false",
        help="keep the raw thresholded mask (default: two largest components, holes filled)",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo images already done")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad file")
    parser.add_argument("--json", action="store_true", help="also write results.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lungseg.inference import Segmenter
    from lungseg.predict import PredictOptions, predict

    segmenter = Segmenter.from_pretrained(
        args.weights, device=args.device, precision=args.precision, backend=args.backend
    )
    options = PredictOptions(
        batch_size=args.batch,
        workers=args.workers,
        postprocess=args.postprocess,
        probabilities=args.probabilities,
        dicom_seg=args.dicom_seg,
        overwrite=args.overwrite,
        strict=args.strict,
        as_json=args.json,
        progress=not args.quiet,
    )
    summary = predict(args.inputs, args.out, segmenter, options)
    if summary.results is None:  # a non-zero rank of a distributed run: rank 0 reports
        return 1 if summary.failed else 0
    print(
        f"{summary.segmented} image(s) segmented in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.2f} img/s), {summary.skipped} already done, "
        f"{summary.failed} failed; table: {summary.results}"
    )
    if summary.failed:
        print(f"{summary.failed} file(s) could not be segmented (the error column has them all):")
        for message in summary.errors[:SHOWN_ERRORS]:
            print(f"  {message}")
        if summary.failed > SHOWN_ERRORS:
            print(f"  ... and {summary.failed - SHOWN_ERRORS} more")
        return 1
    return 0
