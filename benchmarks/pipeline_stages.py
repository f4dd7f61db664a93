"""Where ``lungseg predict``'s time per image goes, stage by stage, on 512x512 PNGs.

``benchmarks/inference.py`` says how fast ``predict`` is beside the peers; this says why: each
stage of the pipeline timed alone on the shipped model, one image (or one batch) at a time in
this process, then ``predict`` itself in one call over all the images, with and without the
quality pass. The stages, in predict's order:

* decode + prepare: read the PNG, resize and normalise it for the network (a DataLoader worker
  in predict);
* network: both passes (the X-ray and its zoomed-out copy) in one call, as predict runs them,
  per image of a ``--batch`` batch;
* resize back: logits to probabilities at the file's size;
* finish: threshold, post-processing, sides, measurements, orientation, quality signals;
* overlay, PNG encodes (mask, heart, overlay): on predict's writer thread.

    .venv/bin/python benchmarks/pipeline_stages.py --data ../shared/data --limit 40
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import benchmark_pairs, resized_inputs  # noqa: E402  (the same 512x512 copies)

from lungseg.data.io import read_image  # noqa: E402
from lungseg.inference import Segmenter  # noqa: E402
from lungseg.overlay import render_overlay  # noqa: E402
from lungseg.png import encode_png  # noqa: E402
from lungseg.predict import PredictOptions, predict  # noqa: E402
from lungseg.runtime import describe_cpu  # noqa: E402


def stage_times(segmenter: Segmenter, paths: list[Path], batch_size: int) -> dict[str, float]:
    """Mean ms per image of each stage (see the module docstring)."""
    seconds: dict[str, float] = {}

    def timed(stage: str, started: float) -> None:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started

    decoded = []
    for path in paths:
        started = time.perf_counter()
        pixels, meta = read_image(path)
        decoded.append((segmenter.prepare(pixels), pixels, meta))
        timed("decode + prepare", started)
    segmenter._passes(torch.stack([d[0] for d in decoded[:batch_size]]), True)  # warm-up
    for start in range(0, len(decoded), batch_size):
        chunk = decoded[start : start + batch_size]
        started = time.perf_counter()
        # what predict runs: both passes in one network call (Segmenter._passes)
        logits, second = segmenter._passes(torch.stack([d[0] for d in chunk]), True)
        timed("network, both passes", started)
        for (_, pixels, meta), image_logits, tta_logits in zip(chunk, logits, second, strict=True):
            started = time.perf_counter()
            probabilities = segmenter.probabilities_at(image_logits, pixels.shape)
            timed("resize back", started)
            started = time.perf_counter()
            result = segmenter.finish(
                probabilities, meta, network_logits=(image_logits[0], tta_logits[0])
            )
            timed("finish", started)
            started = time.perf_counter()
            overlay = render_overlay(pixels, result.labels, heart=result.heart)
            timed("overlay", started)
            for name, image in (
                ("PNG encode: mask", result.mask.astype(np.uint8) * 255),
                ("PNG encode: heart", result.heart.astype(np.uint8) * 255),
                ("PNG encode: overlay", overlay),
            ):
                started = time.perf_counter()
                encode_png(image)
                timed(name, started)
    return {stage: 1000 * total / len(paths) for stage, total in seconds.items()}


def predict_rate(segmenter: Segmenter, paths: list[Path], folder: Path, *, quality: bool) -> float:
    """Images/s of one ``predict`` call over ``paths`` into an empty folder (after a warm-up)."""
    options = PredictOptions(progress=False, quality=quality)
    predict(paths[: options.batch_size], folder / "warm-up", segmenter, options)
    out = folder / f"predict-{quality}"
    started = time.perf_counter()
    predict(paths, out, segmenter, options)
    rate = len(paths) / (time.perf_counter() - started)
    shutil.rmtree(out)
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path, help="default: DATA/splits/paper_433.json")
    parser.add_argument("--limit", type=int, default=40, help="first N test images (0: all)")
    parser.add_argument("--resize", type=int, default=512, help="NxN PNG copies")
    parser.add_argument("--batch", type=int, default=8, help="network batch (predict's default)")
    args = parser.parse_args(argv)
    args.split = args.split or args.data / "splits" / "paper_433.json"
    segmenter = Segmenter.from_pretrained(precision="auto")  # the CLI's default
    with tempfile.TemporaryDirectory(prefix="lungseg-stages-") as tmp:
        paths = resized_inputs(benchmark_pairs(args), args.resize, Path(tmp) / "inputs")
        stages = stage_times(segmenter, paths, args.batch)
        rates = {q: predict_rate(segmenter, paths, Path(tmp), quality=q) for q in (True, False)}
    print(
        f"{describe_cpu()}; shipped model, precision {segmenter.runtime.dtype or 'fp32'}; "
        f"{len(paths)} test X-rays of {args.split.name} as {args.resize}x{args.resize} PNGs\n"
    )
    print("| stage | ms per image |\n|---|---|")
    for stage, ms in stages.items():
        print(f"| {stage} | {ms:.1f} |")
    print(f"| all stages, one after another | {sum(stages.values()):.1f} |\n")
    print(
        f"predict, one call over {len(paths)} images: {rates[True]:.1f} images/s with the "
        f"quality pass, {rates[False]:.1f} images/s with --no-quality"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
