"""CPU inference latency of every registered model beside two well-known peers, in one run.

Peers (built only when asked for or when ``--models`` is left out; they need the benchmark venv,
see benchmarks/README.md):

* ``smp_unet_r34`` - ``segmentation_models_pytorch.Unet("resnet34", encoder_weights=None,
  in_channels=1, classes=1)``: the usual strong U-Net baseline; ratios are taken against it.
* ``monai_attention_unet`` - ``monai.networks.nets.AttentionUnet(spatial_dims=2, in_channels=1,
  out_channels=1, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2))`` with MONAI's defaults
  for the rest (kernel_size=3, up_kernel_size=3, dropout=0.0).

Every measurement: eval mode, batch norms folded (:func:`build`), ``torch.inference_mode()``,
channels_last model and input, optional bf16 autocast (convolution and linear weights stored in
bf16, for every model: :func:`for_precision`), warm-up runs, then the median of the timed runs,
reported per image (batch time / batch). Models take turns run by run, so a passing load on a
shared machine hits them alike.
Run with the benchmark venv, e.g.::

    .venv-bench/bin/python benchmarks/models.py --out benchmarks/results.md
    .venv-bench/bin/python benchmarks/models.py --models msag_unet_cpu smp_unet_r34 \\
        --sizes 256 --batches 1 --repeats 10
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lungseg.models import create_model, list_models
from lungseg.models.complexity import count_parameters
from lungseg.models.fold import cast_for_autocast, fold_batch_norms
from lungseg.runtime import describe_cpu

REFERENCE = "smp_unet_r34"


def smp_unet_r34() -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=1)


def monai_attention_unet() -> nn.Module:
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
    )


PEERS: dict[str, Callable[[], nn.Module]] = {
    "smp_unet_r34": smp_unet_r34,
    "monai_attention_unet": monai_attention_unet,
}


def build(name: str) -> nn.Module:
    """A registered lungseg model or a peer as it is run for inference (:func:`for_inference`)."""
    if name in PEERS:
        return for_inference(PEERS[name](), peer=True)
    return for_inference(create_model(name), peer=False)


def for_inference(model: nn.Module, *, peer: bool) -> nn.Module:
    """Eval mode, batch norms folded into the convolutions before them, channels_last.

    lungseg's models get :func:`~lungseg.models.fold.fold_batch_norms` (what its Segmenter
    runs); a peer gets torch's own FX conv-BN fusion (``torch.fx.experimental.optimization.fuse``),
    which folds every norm of smp's U-Net and all but 4 of MONAI's 26, so it runs at its best too.
    """
    if peer:
        from torch.fx.experimental.optimization import fuse

        folded = fuse(model.eval())
    else:
        folded = fold_batch_norms(model.eval())
    return folded.to(memory_format=torch.channels_last)


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile`` (Inductor, weights frozen into the graph: constant folding and fused
    C++ kernels; needs a C++ compiler), static shapes: each size and batch compiles once, in the
    untimed warm-up."""
    import torch._inductor.config as inductor

    inductor.freezing = True
    return torch.compile(model, dynamic=False)


def for_precision(models: dict[str, nn.Module], precision: str) -> dict[str, nn.Module]:
    """The models as they run best in ``precision``: under bf16 autocast, copies with their
    convolution and linear weights stored in bf16 (:func:`~lungseg.models.fold.cast_for_autocast`,
    what lungseg's Segmenter does; autocast would cast them again on every call under
    inference_mode), for the peers as for lungseg's models."""
    if precision != "bf16":
        return models
    return {
        name: cast_for_autocast(copy.deepcopy(model), torch.bfloat16)
        for name, model in models.items()
    }


def autocast_for(precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def measure_cell(
    models: dict[str, nn.Module], size: int, batch: int, precision: str, args: argparse.Namespace
) -> dict[str, float]:
    """Median ms per image of each model for one size, batch and precision.

    Models take turns, one forward pass each per round, so a load that comes and goes on a shared
    machine hits all of them alike. A model stops early once its timed runs in this cell add up
    to ``args.budget`` seconds (it keeps at least ``args.min_repeats`` runs).
    """
    x = torch.randn(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode(), autocast_for(precision):
        for model in models.values():
            for _ in range(args.warmup):
                model(x)
        for _ in range(args.repeats):
            for name, model in models.items():
                runs = times[name]
                if len(runs) >= args.min_repeats and sum(runs) > args.budget:
                    continue
                start = time.perf_counter()
                model(x)
                runs.append(time.perf_counter() - start)
    for name, runs in times.items():
        ms = 1000 * statistics.median(runs) / batch
        print(
            f"  {name:24s} {size:4d} b{batch:<2d} {precision}: {ms:8.1f} ms/img ({len(runs)} runs)",
            file=sys.stderr,
            flush=True,
        )
    return {name: 1000 * statistics.median(runs) / batch for name, runs in times.items()}


def run(args: argparse.Namespace) -> str:
    """Measure every requested combination and return the markdown report."""
    if args.threads:
        torch.set_num_threads(args.threads)
    built = {name: build(name) for name in args.models}
    params = {name: count_parameters(model) for name, model in built.items()}
    by_precision = {precision: for_precision(built, precision) for precision in args.precisions}
    if args.compile:
        by_precision = {
            precision: {name: compiled(model) for name, model in models.items()}
            for precision, models in by_precision.items()
        }
    results: dict[tuple[str, int, int, str], float] = {}
    for size in args.sizes:
        for batch in args.batches:
            for precision in args.precisions:
                cell = measure_cell(by_precision[precision], size, batch, precision, args)
                for name, ms in cell.items():
                    results[name, size, batch, precision] = ms
    return render(args, results, params)


def render(
    args: argparse.Namespace,
    results: dict[tuple[str, int, int, str], float],
    params: dict[str, int],
) -> str:
    """A markdown table: one row per model, size and batch; one latency column per precision."""
    header = ["model", "params (M)", "size", "batch"]
    for precision in args.precisions:
        header.append(f"{precision} ms/img")
        if REFERENCE in args.models:
            header.append(f"{precision} vs smp")
    lines = [
        f"Machine: {describe_cpu()}.",
        "",
        f"CPU latency per image: median of up to {args.repeats} runs (at least "
        f"{args.min_repeats}, else stopping after {args.budget:g} s per model and cell) after "
        f"{args.warmup} warm-up, models taking turns; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), channels_last, inference_mode"
        f"{', torch.compile (Inductor, frozen weights)' if args.compile else ''}. 'vs smp' = "
        "latency / smp Unet(resnet34) latency at the same size, batch and precision (below 1 "
        "is faster).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for size in args.sizes:
        for batch in args.batches:
            for name in args.models:
                row = [name, f"{params[name] / 1e6:.2f}", f"{size}x{size}", str(batch)]
                for precision in args.precisions:
                    ms = results[name, size, batch, precision]
                    row.append(f"{ms:.1f}")
                    if REFERENCE in args.models:
                        row.append(f"{ms / results[REFERENCE, size, batch, precision]:.2f}")
                lines.append("| " + " | ".join(row) + " |")
    lines += best_precision_table(args, results)
    return "\n".join(lines) + "\n"


def best_precision_table(
    args: argparse.Namespace, results: dict[tuple[str, int, int, str], float]
) -> list[str]:
    """Each model at its faster precision, and how many times faster the first model is."""
    first, others = args.models[0], args.models[1:]
    header = ["size", "batch", *(f"{name} (best)" for name in args.models)]
    header += [f"{first} x faster than {name}" for name in others]
    lines = [
        "",
        f"Each model at its faster precision; ratios = other's ms / {first}'s ms.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for size in args.sizes:
        for batch in args.batches:
            best = {}
            for name in args.models:
                ms, precision = min((results[name, size, batch, p], p) for p in args.precisions)
                best[name] = (ms, precision)
            row = [f"{size}x{size}", str(batch)]
            row += [f"{best[name][0]:.1f} ({best[name][1]})" for name in args.models]
            row += [f"{best[name][0] / best[first][0]:.2f}" for name in others]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=[*list_models(), *PEERS],
        help=f"registered names and/or peers ({', '.join(PEERS)})",
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument(
        "--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"]
    )
    add_timing_arguments(parser)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="time every model under torch.compile (Inductor; the warm-up compiles)",
    )
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(list_models()) - set(PEERS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; valid: {[*list_models(), *PEERS]}")
    return args


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`measure_cell` and the thread count, shared with inference.py."""
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement")
    parser.add_argument(
        "--min-repeats", type=int, default=3, help="timed runs kept even past --budget"
    )
    parser.add_argument(
        "--budget", type=float, default=20.0, help="seconds of timed runs per model and cell"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
