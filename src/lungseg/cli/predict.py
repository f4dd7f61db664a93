"""``lungseg predict``: masks, overlays and lung areas for X-rays, at their original size."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lungseg.cli import (
    UsageError,
    add_decoding_options,
    add_parser,
    add_runtime_options,
    check_inputs,
    check_output_file,
    check_output_folder,
    describe_runtime,
    probability,
)

log = logging.getLogger(__name__)

SHOWN_ERRORS = 5
"""Failed files listed after a run; results.csv's error column lists every one."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_parser(
        subparsers,
        "predict",
        "segment X-rays (files, folders, globs; PNG/JPEG/TIFF/BMP/DICOM) with the shipped model",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or globs")
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="output folder (created if missing): masks, overlays, results.csv",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="lungseg .safetensors or exported .onnx (default: the shipped model)",
    )
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        help="inference engine (default: onnxruntime for an .onnx file, else torch)",
    )
    add_decoding_options(parser, batch_size=8)
    add_runtime_options(parser)
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
        help="keep the raw thresholded masks (default: post-processed: the two largest lung "
        "components, the largest heart component, holes filled)",
    )
    parser.add_argument(
        "--anonymize",
        action="store_true",
        help="leave the DICOM SOPInstanceUID, StudyInstanceUID and PatientID columns out of "
        "results.csv and --json (by default DICOM rows carry them, to link back to the "
        "archive; file names are kept either way)",
    )
    parser.add_argument(
        "--fix-orientation",
        action="store_true",
        help="segment a film that looks mirrored or upside down the right way up, and say so "
        "in its row (by default such a mask is flagged 'check')",
    )
    parser.add_argument(
        "--min-quality",
        type=probability,
        metavar="Q",
        help="write no mask whose estimated Dice is below Q (the row says why, status "
        "'withheld'); needs weights with a calibrated quality model",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the network under torch.compile: faster on long runs, but tens of seconds "
        "of compiling per batch size first; runs uncompiled (with a warning) where it cannot "
        "compile (torch backend only)",
    )
    parser.add_argument(
        "--no-quality",
        dest="quality",
        action="store_false",
        help="skip the second, zoomed-out network pass behind estimated_dice (about a third "
        "of the time per image): the verdict then rests on the shape and orientation rules "
        "alone, and estimated_dice is empty (default: both passes, where the weights carry "
        "a quality model)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="redo images already done (by default skipped)"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad file (by default it is reported and skipped)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="also write the table and a summary (model, threshold, counts) as JSON to PATH",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_inputs(args.inputs)  # before loading the model: a typo fails in a second
    check_output_folder(args.out, "-o/--out")
    check_output_file(args.json, "--json")

    from lungseg.inference import Segmenter
    from lungseg.predict import PredictOptions, predict

    segmenter = Segmenter.from_pretrained(
        args.weights,
        device=args.device,
        precision=args.precision,
        backend=args.backend,
        compile=args.compile,
    )
    log.debug("%s", describe_runtime(segmenter))  # -v shows it; stderr stays quiet
    if args.min_quality is not None and not args.quality:
        raise UsageError("--min-quality needs the quality pass that --no-quality skips")
    if args.min_quality is not None and segmenter.quality_model is None:
        raise UsageError(
            "--min-quality needs weights with a calibrated quality model (estimated_dice); "
            "these have none (scripts/calibrate_quality.py adds one)"
        )
    options = PredictOptions(
        batch_size=args.batch_size,
        workers=args.workers,
        postprocess=args.postprocess,
        probabilities=args.probabilities,
        dicom_seg=args.dicom_seg,
        overwrite=args.overwrite,
        strict=args.strict,
        json_path=args.json,
        anonymize=args.anonymize,
        min_quality=args.min_quality,
        quality=args.quality,
        fix_orientation=args.fix_orientation,
        progress=not args.quiet,
    )
    summary = predict(args.inputs, args.out, segmenter, options)
    if summary.results is None:  # a non-zero rank of a distributed run: rank 0 reports
        return 1 if summary.failed else 0
    print(
        f"{summary.segmented} image(s) segmented in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.2f} img/s), {summary.skipped} already done, "
        f"{summary.failed} failed"
        + (f", {summary.withheld} withheld by --min-quality" if summary.withheld else "")
        + f"; table: {summary.results}"
        + (f", JSON: {args.json}" if args.json else "")
    )
    if summary.failed:
        print(f"{summary.failed} file(s) could not be segmented (the error column has them all):")
        for message in summary.errors[:SHOWN_ERRORS]:
            print(f"  {message}")
        if summary.failed > SHOWN_ERRORS:
            print(f"  ... and {summary.failed - SHOWN_ERRORS} more")
        return 1
    return 0
