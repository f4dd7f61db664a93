"""Images/s of the shipped model on a GPU: the network alone and ``Segmenter.predict_many``.

The GPU path is the CPU path with the card doing the network: decoding in DataLoader workers,
batches copied from page-locked memory without blocking, bf16 (or fp16 where the card lacks
bf16) autocast under ``--precision auto``, and the masks resized back, post-processed and
measured on the host. Two numbers, so a reader sees where the time goes:

1. network only: images/s of forward passes on a resident batch (``--batch``, after warm-up,
   synchronised), per precision;
2. end to end: images/s of ``predict_many`` over the test X-rays of the split (decode, network,
   resize back, post-processing, measurements, the quality pass), ``--workers`` decode
   processes; nothing is written to disk (that is ``benchmarks/inference.py``'s job).

    .venv/bin/python benchmarks/gpu.py --data ../shared/data --device cuda --out gpu.md

It runs on a CPU too (``--device cpu``), which is how it is tested before a GPU is lent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from lungseg.atomic import atomic_write_text
from lungseg.data.discovery import discover, load_split, select
from lungseg.inference import Segmenter
from lungseg.runtime import describe_cpu


def network_only(segmenter: Segmenter, batch: int, seconds: float) -> float:
    """Images/s of ``segmenter.logits`` on one batch kept on the device."""
    height, width = segmenter.input_size
    inputs = torch.zeros(batch, 1, height, width)
    device = segmenter.runtime.device

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):
        segmenter.logits(inputs)
    synchronise()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        segmenter.logits(inputs)
        runs += 1
    synchronise()
    return runs * batch / (time.perf_counter() - started)


def end_to_end(segmenter: Segmenter, paths: list[Path], batch: int, workers: int) -> float:
    """Images/s of ``predict_many`` over ``paths`` (results consumed, nothing written)."""
    list(segmenter.predict_many(paths[:batch], batch_size=batch, workers=workers))  # warm-up
    started = time.perf_counter()
    count = sum(1 for _ in segmenter.predict_many(paths, batch_size=batch, workers=workers))
    return count / (time.perf_counter() - started)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return describe_cpu()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path, help="default: DATA/splits/multi_source.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "auto"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4, help="decode processes")
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument("--seconds", type=float, default=10.0, help="network-only timing")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    split = args.split or args.data / "splits" / "multi_source.json"
    pairs = select(discover(args.data).pairs, load_split(split), "test")
    paths = [pair.image for pair in (pairs[: args.limit] if args.limit else pairs)]

    rows = []
    device = None
    for precision in args.precisions:
        segmenter = Segmenter.from_pretrained(device=args.device, precision=precision)
        device = segmenter.runtime.device
        used = segmenter.runtime.dtype or torch.float32
        print(f"{precision}: {used} on {device}", file=sys.stderr, flush=True)
        network = network_only(segmenter, args.batch, args.seconds)
        full = end_to_end(segmenter, paths, args.batch, args.workers)
        rows.append(
            f"| {precision} ({str(used).removeprefix('torch.')}) | {network:.0f} | {full:.1f} |"
        )
    assert device is not None
    report = "\n".join(
        [
            f"Device: {describe_device(device)}; torch {torch.__version__}; batch {args.batch}, "
            f"{args.workers} decode workers; {len(paths)} test X-rays of {split.name} at their "
            "original sizes (end to end: decode, network, resize back, post-processing, "
            "measurements, quality pass; no files written).",
            "",
            "| precision | network only (images/s) | predict_many end to end (images/s) |",
            "|---|---|---|",
            *rows,
        ]
    )
    print(report)
    if args.out:
        atomic_write_text(args.out, report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
