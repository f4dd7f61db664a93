"""CPU inference speed of the shipped model beside two peers, end to end and model only, in one run.

Everything below runs in ONE process on the same images, so the numbers are comparable:

1. End to end: images/s of ``lungseg predict`` (decode, network, resize back, post-process,
   write mask + heart + overlay PNGs and the results table) on the test images of a split,
   resized to ``--resize`` PNGs (512x512 by default), for the shipped model and the peers, with
   the torch backend (at the CLI's ``--precision auto``) and the onnxruntime backend.
   The runs take turns, ``--chunk`` images per ``predict`` call, each call into a fresh folder
   (so no image is skipped as already done).
2. Model only: latency per image at each batch size for PyTorch fp32, PyTorch under bf16
   autocast and ONNX Runtime (fp32), timed by :func:`models.measure_cell` (median after
   warm-up, models taking turns), at the shipped model's input size.
3. bf16 accuracy: test Dice of the shipped model in fp32 and under bf16 autocast, through
   ``lungseg.evaluate``; bf16 is worth using only where it changes Dice by less than 0.001.
4. INT8: the shipped ONNX model quantised statically by ONNX Runtime (calibrated on val
   images), timed beside fp32 ONNX and scored on the same test images; worth offering only
   where test Dice moves by at most 0.001.

The peers (``smp_unet_r34``, ``monai_attention_unet``, see benchmarks/models.py) run through
the same Segmenter, predict and export code as the shipped model: they enter lungseg's registry
via benchmarks/peers.py and are saved as lungseg weights files. When ``peers.py`` has trained
them (``<peer-runs>/<name>/model.safetensors``) those weights are used and their test Dice is
measured here too; otherwise they are random-init, which is fine for speed and says so.
Every ONNX file comes from :func:`lungseg.export.export_model`, which verifies it on a real test
X-ray against PyTorch before writing it.

Run it in the benchmark venv (benchmarks/README.md), e.g. on one pinned core::

    .venv-bench/bin/python benchmarks/inference.py --threads 2 --budget 10 \\
        --out benchmarks/results/inference_amd_epyc.md
"""

from __future__ import annotations

import argparse
import datetime
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import (  # noqa: E402  (timing shared with models.py)
    REFERENCE,
    add_timing_arguments,
    for_inference,
    for_precision,
    measure_cell,
)
from peers import PEERS, register_peers  # noqa: E402  (peers enter the registry there)

from lungseg.atomic import atomic_write_text  # noqa: E402
from lungseg.backends import OnnxRuntimeModel  # noqa: E402
from lungseg.data.discovery import Pair, discover, load_split, select  # noqa: E402
from lungseg.data.io import read_image  # noqa: E402
from lungseg.evaluate import evaluate  # noqa: E402
from lungseg.export import ExportReport, export_model  # noqa: E402
from lungseg.inference import Segmenter  # noqa: E402
from lungseg.models import create_model  # noqa: E402
from lungseg.models.complexity import count_parameters  # noqa: E402
from lungseg.png import encode_png  # noqa: E402
from lungseg.predict import PredictOptions, predict  # noqa: E402
from lungseg.runtime import describe_cpu  # noqa: E402
from lungseg.weights import WeightsInfo, save_weights, shipped_weights_path  # noqa: E402

SHIPPED = "shipped"
BACKENDS = ("torch", "onnxruntime")
BF16_DICE_TOLERANCE = 0.001  # the bar: bf16 only where it moves test Dice less than this


@dataclass
class Candidate:
    """One model under test: its weights, where they came from, and its exported ONNX file.

    Attributes:
        name: ``shipped`` or a peer's name.
        label: the name shown in the tables.
        weights: the lungseg safetensors file both backends start from.
        trained: False for a random-init peer (its Dice would mean nothing).
        origin: where the weights came from, in words.
        params: trainable parameters of the torch module.
        onnx: the file :func:`export_model` wrote and verified.
        export: that export's report (checks, timings).
    """

    name: str
    label: str
    weights: Path
    trained: bool
    origin: str
    params: int
    onnx: Path
    export: ExportReport


@dataclass(frozen=True)
class Bf16Check:
    """The shipped model's mean test Dice in fp32 and under bf16 autocast, on ``images``."""

    images: int
    fp32: float
    bf16: float

    @property
    def change(self) -> float:
        return abs(self.bf16 - self.fp32)

    @property
    def acceptable(self) -> bool:
        return self.change < BF16_DICE_TOLERANCE


def benchmark_pairs(args: argparse.Namespace) -> list[Pair]:
    """The split's test pairs in split order, the first ``--limit`` of them when given."""
    pairs = select(discover(args.data).pairs, load_split(args.split), "test")
    return pairs[: args.limit] if args.limit else pairs


def resized_inputs(pairs: list[Pair], size: int, folder: Path) -> list[Path]:
    """The pairs' X-rays as ``size`` x ``size`` 8-bit PNGs in ``folder`` (what the end-to-end
    goal is stated for); ``size`` 0 keeps the original files."""
    if not size:
        return [pair.image for pair in pairs]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for pair in pairs:
        grey, _ = read_image(pair.image)
        pixels = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
        path = folder / f"{pair.source}_{pair.image.stem}.png"
        path.write_bytes(encode_png(np.round(pixels * 255).astype(np.uint8)))
        paths.append(path)
    return paths


def prepare_candidates(
    pairs: list[Pair], workdir: Path, args: argparse.Namespace
) -> dict[str, Candidate]:
    """The shipped model and the peers as lungseg weights files, each exported to ONNX."""
    register_peers()
    shipped = shipped_weights_path()
    image_size = Segmenter.from_pretrained(shipped).input_size
    sources = {SHIPPED: (shipped, True, f"shipped ({shipped.name})")}
    for name in PEERS:
        trained = args.peer_runs / name / "model.safetensors"
        if trained.is_file():
            sources[name] = (trained, True, f"trained ({trained})")
            continue
        torch.manual_seed(args.seed)
        model = create_model(name)
        path = workdir / f"{name}.safetensors"
        save_weights(path, model, WeightsInfo(model_config=model.config, image_size=image_size))
        sources[name] = (path, False, f"random init (seed {args.seed}): not trained yet")
    candidates = {}
    for name, (weights, trained, origin) in sources.items():
        onnx = workdir / f"{name}.onnx"
        progress(f"export {name} to ONNX, verified on {pairs[0].image.name}")
        report = export_model(onnx, "onnx", [pairs[0].image], weights=weights)
        segmenter = Segmenter.from_pretrained(weights)
        label = f"{segmenter.info.model_config['name']} (shipped)"
        candidates[name] = Candidate(
            name=name,
            label=label if name == SHIPPED else name,
            weights=weights,
            trained=trained,
            origin=origin,
            params=count_parameters(segmenter.model),
            onnx=onnx,
            export=report,
        )
    return candidates


def end_to_end(
    candidates: dict[str, Candidate], inputs: list[Path], workdir: Path, args: argparse.Namespace
) -> dict[tuple[str, str], float]:
    """Images/s of ``predict`` per (model, backend), the runs taking turns chunk by chunk.

    The images are cut into chunks of ``--chunk``; in every round each (model, backend) runs one
    whole ``predict`` call on the round's chunk into a fresh folder (so nothing is skipped as
    already done) and its wall-clock time counts. A load that comes and goes on a shared core so
    hits every model alike, as in models.py; the price is one call's set-up (listing the inputs,
    starting the decode worker, writing the results table) per chunk instead of per run.
    """
    options = PredictOptions(batch_size=args.batch, workers=args.workers, progress=False)
    segmenters = {}
    for backend in BACKENDS:
        for name, candidate in candidates.items():
            weights = candidate.weights if backend == "torch" else candidate.onnx
            # torch at the CLI's default precision: auto, measured on this CPU and cached
            precision = "auto" if backend == "torch" else "fp32"
            segmenter = Segmenter.from_pretrained(weights, backend=backend, precision=precision)
            # Untimed: one batch first, so lazy set-up (kernel selection, first imports) is
            # not charged to whichever model happens to run first.
            predict(inputs[: args.batch], workdir / f"warm-up-{name}-{backend}", segmenter, options)
            segmenters[name, backend] = segmenter
    seconds = dict.fromkeys(segmenters, 0.0)
    for start in range(0, len(inputs), args.chunk):
        chunk = inputs[start : start + args.chunk]
        for (name, backend), segmenter in segmenters.items():
            out_dir = workdir / f"predict-{name}-{backend}-{start}"
            began = time.perf_counter()
            summary = predict(chunk, out_dir, segmenter, options)
            seconds[name, backend] += time.perf_counter() - began
            if summary.segmented != len(chunk):
                raise RuntimeError(
                    f"predict segmented {summary.segmented} of {len(chunk)} images with "
                    f"{name}/{backend}; see {summary.results}"
                )
            shutil.rmtree(out_dir)  # ~0.5 MB per image and model: keep /tmp small
        progress(f"predict: {start + len(chunk)} of {len(inputs)} images, every model")
    return {key: len(inputs) / total for key, total in seconds.items()}


def model_only(
    candidates: dict[str, Candidate], size: int, args: argparse.Namespace
) -> dict[tuple[str, str, int], float]:
    """Ms per image per (model, runtime, batch); every model of a cell takes turns.

    The torch modules are fresh copies in channels_last, as in models.py; ONNX Runtime runs the
    exported files with torch's thread count (OnnxRuntimeModel's default).
    """
    torch_models = {}
    for name, candidate in candidates.items():
        module = Segmenter.from_pretrained(candidate.weights).model  # a fresh copy
        torch_models[name] = for_inference(module, peer=name != SHIPPED)
    bf16_models = for_precision(torch_models, "bf16")
    ort_models = {name: OnnxRuntimeModel(c.onnx) for name, c in candidates.items()}
    results = {}
    for batch in args.batches:
        cells = {
            "fp32": measure_cell(
                {**torch_models, **{f"{n} onnxruntime": m for n, m in ort_models.items()}},
                size,
                batch,
                "fp32",
                args,
            ),
            "bf16": measure_cell(bf16_models, size, batch, "bf16", args),
        }
        for name in candidates:
            results[name, "torch fp32", batch] = cells["fp32"][name]
            results[name, "torch bf16", batch] = cells["bf16"][name]
            results[name, "onnxruntime", batch] = cells["fp32"][f"{name} onnxruntime"]
    return results


def measure_dice(
    candidates: dict[str, Candidate], pairs: list[Pair], args: argparse.Namespace
) -> tuple[dict[str, float], Bf16Check]:
    """Mean test Dice (fp32) of every trained model, and the shipped model's bf16 check.

    Dice is ``lungseg evaluate``'s: at the original mask resolution, the weights' threshold, no
    post-processing (as benchmarks/peers.py reports it).
    """
    dice = {}
    for name, candidate in candidates.items():
        if candidate.trained:
            progress(f"evaluate {name} fp32 on {len(pairs)} images")
            segmenter = Segmenter.from_pretrained(candidate.weights)
            dice[name] = mean_dice(segmenter, pairs)
    subset = pairs[: args.bf16_dice_images] if args.bf16_dice_images else pairs
    shipped = candidates[SHIPPED].weights
    fp32 = dice[SHIPPED]
    if len(subset) < len(pairs):
        fp32 = mean_dice(Segmenter.from_pretrained(shipped), subset)
    progress(f"evaluate {SHIPPED} bf16 on {len(subset)} images")
    bf16 = mean_dice(Segmenter.from_pretrained(shipped, precision="bf16"), subset)
    return dice, Bf16Check(images=len(subset), fp32=fp32, bf16=bf16)


@dataclass(frozen=True)
class Int8Check:
    """The shipped model quantised to INT8 by ONNX Runtime: speed and test Dice against fp32."""

    calibration_images: int
    ms: dict[int, float]
    """Batch -> ms per image, timed beside the fp32 ONNX model."""
    fp32_ms: dict[int, float]
    dice: float
    fp32_dice: float

    @property
    def acceptable(self) -> bool:
        return abs(self.dice - self.fp32_dice) <= INT8_DICE_TOLERANCE


INT8_DICE_TOLERANCE = 0.001  # the bar: INT8 only where test Dice moves by at most this


def quantize_int8(candidate: Candidate, calibration: list[Pair], out: Path) -> Path:
    """Static INT8 quantisation (QDQ, per-channel weights) of ``candidate``'s ONNX file,
    activations calibrated on ``calibration`` (val X-rays, prepared as the Segmenter does);
    the lungseg metadata is carried over so the result runs as a lungseg model."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    segmenter = Segmenter.from_pretrained(candidate.weights)
    inputs = [
        {"image": segmenter.prepare(read_image(pair.image)[0]).unsqueeze(0).numpy()}
        for pair in calibration
    ]

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    quantize_static(
        str(candidate.onnx),
        str(out),
        Batches(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    source, quantised = onnx.load(str(candidate.onnx)), onnx.load(str(out))
    onnx.helper.set_model_props(quantised, {p.key: p.value for p in source.metadata_props})
    onnx.save(quantised, str(out))
    return out


def int8_check(
    candidates: dict[str, Candidate], pairs: list[Pair], workdir: Path, args: argparse.Namespace
) -> Int8Check:
    """Quantise the shipped model on val images, time it beside fp32 ONNX, score it on test."""
    val = select(discover(args.data).pairs, load_split(args.split), "val")
    step = max(1, len(val) // args.int8_calibration)
    calibration = val[::step][: args.int8_calibration]  # spread over the sources
    progress(f"quantise {SHIPPED} to INT8, calibrated on {len(calibration)} val images")
    path = quantize_int8(candidates[SHIPPED], calibration, workdir / "shipped_int8.onnx")
    models = {"fp32": OnnxRuntimeModel(candidates[SHIPPED].onnx), "int8": OnnxRuntimeModel(path)}
    height, width = models["fp32"].info.image_size
    ms: dict[str, dict[int, float]] = {"fp32": {}, "int8": {}}
    for batch in args.batches:
        cell = measure_cell(models, height, batch, "fp32", args)
        for name in models:
            ms[name][batch] = cell[name]
    progress(f"evaluate {SHIPPED} INT8 and fp32 ONNX on {len(pairs)} images")
    int8 = mean_dice(Segmenter.from_pretrained(path), pairs)
    fp32 = mean_dice(Segmenter.from_pretrained(candidates[SHIPPED].onnx), pairs)
    return Int8Check(len(calibration), ms["int8"], ms["fp32"], int8, fp32)


def mean_dice(segmenter: Segmenter, pairs: list[Pair]) -> float:
    return evaluate(segmenter, pairs, progress=False).aggregate()["mean"]["dice"]


def run(args: argparse.Namespace) -> str:
    """Measure everything and return the markdown report."""
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = benchmark_pairs(args)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="lungseg-bench-") as tmp:
        workdir = Path(tmp)
        candidates = prepare_candidates(pairs, workdir, args)
        height, width = Segmenter.from_pretrained(candidates[SHIPPED].weights).input_size
        if height != width:
            raise SystemExit(f"the shipped model's input is {height}x{width}; expected square")
        inputs = resized_inputs(pairs, args.resize, workdir / "inputs")
        rates = end_to_end(candidates, inputs, workdir, args)
        latency = model_only(candidates, height, args)
        dice, bf16 = measure_dice(candidates, pairs, args)
        int8 = int8_check(candidates, pairs, workdir, args)
    usage = (time.perf_counter() - started, cpu_seconds() - cpu_started)
    return render(args, pairs, height, candidates, rates, latency, dice, bf16, int8, usage)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (predict's decode workers)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def render(
    args: argparse.Namespace,
    pairs: list[Pair],
    size: int,
    candidates: dict[str, Candidate],
    rates: dict[tuple[str, str], float],
    latency: dict[tuple[str, str, int], float],
    dice: dict[str, float],
    bf16: Bf16Check,
    int8: Int8Check,
    usage: tuple[float, float],
) -> str:
    """The markdown report: header, end-to-end table, model-only table, bf16 check, verdict."""
    images = f"{'the first ' if args.limit else ''}{len(pairs)} test images of {args.split.name}"
    if args.resize:
        images += f", resized to {args.resize}x{args.resize} PNGs for the end-to-end runs"
    contention = (
        ": below the thread count, other work was sharing the cores; the models take turns so "
        "that it slows them alike"
        if usage[1] / usage[0] < 0.9 * torch.get_num_threads()
        else ""
    )
    lines = [
        f"# CPU inference at {size}x{size}: the shipped model beside the peers",
        "",
        f"{datetime.date.today().isoformat()}; CPU: {describe_cpu()}; torch "
        f"{torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}; {torch.get_num_threads()} thread(s) for torch and ONNX "
        f"Runtime; {images}; all in one process. The run took {usage[0] / 60:.0f} min and got "
        f"{usage[1] / usage[0]:.2f} CPU cores on average (CPU time / wall time{contention}).",
        "",
        "Weights: " + "; ".join(f"{c.label}: {c.origin}" for c in candidates.values()) + ".",
        "ONNX files by `lungseg.export.export_model`, verified against PyTorch on "
        f"{pairs[0].image.name}: "
        + "; ".join(
            f"{c.label} max abs logit diff "
            f"{max(k.max_abs_logit_diff for k in c.export.checks):.2g}, mask Dice "
            f"{min(k.dice for k in c.export.checks):.4f}"
            for c in candidates.values()
        )
        + ".",
        "",
        f"## End to end: `lungseg predict` (batch {args.batch}, {args.workers} decode "
        "worker(s), post-processing on, mask + heart + overlay PNGs + results table)",
        "",
        f"images/s = images / wall-clock time of `predict()` calls on {args.chunk} images at a "
        "time, the models taking turns call by call; 'vs smp' = time "
        "per image / smp Unet(resnet34)'s with the same backend (below 1 is faster). torch runs "
        "at `--precision auto` (the CLI's default). The shipped model also runs its second, "
        "zoomed-out pass for the quality estimate (the peers have no calibrated quality model, "
        "so they make one pass). Test Dice: "
        "`lungseg evaluate` (original resolution, no post-processing) in fp32 on the same "
        "images.",
        "",
        "| model | params (M) | test Dice | backend | network passes | images/s | ms/img "
        "| vs smp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend in BACKENDS:
        for name, candidate in candidates.items():
            rate = rates[name, backend]
            score = f"{dice[name]:.4f}" if name in dice else "not trained"
            passes = 2 if name == SHIPPED else 1
            lines.append(
                f"| {candidate.label} | {candidate.params / 1e6:.2f} | {score} | {backend} "
                f"| {passes} | {rate:.2f} | {1000 / rate:.0f} "
                f"| {rates[REFERENCE, backend] / rate:.2f} |"
            )
    lines += [
        "",
        f"## Model only: latency per image at {size}x{size}",
        "",
        f"Median of up to {args.repeats} timed runs (at least {args.min_repeats}, else stopping "
        f"after {args.budget:g} s per model and cell) after {args.warmup} warm-up; models take "
        "turns; torch modules in channels_last under `inference_mode`; bf16 = torch autocast; "
        "ONNX Runtime runs the exported fp32 graph. 'vs smp' = latency / smp's in the same "
        "column and batch; 'bf16/fp32' = bf16 latency / fp32 latency of the same model.",
        "",
        "| model | batch | torch fp32 ms/img | vs smp | torch bf16 ms/img | vs smp | bf16/fp32 "
        "| ONNX Runtime ms/img | vs smp |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for batch in args.batches:
        for name, candidate in candidates.items():
            row = [candidate.label, str(batch)]
            for runtime in ("torch fp32", "torch bf16", "onnxruntime"):
                ms = latency[name, runtime, batch]
                row += [f"{ms:.1f}", f"{ms / latency[REFERENCE, runtime, batch]:.2f}"]
                if runtime == "torch bf16":
                    row.append(f"{ms / latency[name, 'torch fp32', batch]:.1f}")
            lines.append("| " + " | ".join(row) + " |")
    slower = latency[SHIPPED, "torch bf16", 1] / latency[SHIPPED, "torch fp32", 1]
    auto_choice = Segmenter.from_pretrained(candidates[SHIPPED].weights, precision="auto")
    auto_choice = auto_choice.precision_choice
    subset = (
        f"the first {bf16.images} of these images (--bf16-dice-images)"
        if bf16.images < len(pairs)
        else f"all {bf16.images} images"
    )
    bf16_note = (
        f"bf16: Dice changes by {bf16.change:.5f} "
        f"({'below' if bf16.acceptable else 'not below'} 0.001), and runs "
        f"{slower:.1f}x {'slower' if slower > 1 else 'faster'} than fp32 at batch 1 on this CPU; "
        f"`--precision auto` measured and chose {auto_choice.describe()}."
    )
    lines += [
        "",
        "## bf16 accuracy: the shipped model",
        "",
        f"`lungseg evaluate` on {subset}, fp32 against bf16 autocast.",
        "",
        "| images | Dice fp32 | Dice bf16 | abs difference | below 0.001 |",
        "|---|---|---|---|---|",
        f"| {bf16.images} | {bf16.fp32:.5f} | {bf16.bf16:.5f} | {bf16.change:.5f} "
        f"| {'yes' if bf16.acceptable else 'no'} |",
        "",
        "## INT8: ONNX Runtime static quantisation of the shipped model",
        "",
        f"QDQ, per-channel INT8 weights, UINT8 activations calibrated on {int8.calibration_images} "
        f"val images of {args.split.name}; timed beside the fp32 ONNX model (ms per image); "
        f"test Dice by `lungseg evaluate` on the images above with each file.",
        "",
        "| batch | fp32 ONNX ms/img | INT8 ms/img | INT8 / fp32 |",
        "|---|---|---|---|",
        *(
            f"| {batch} | {int8.fp32_ms[batch]:.1f} | {int8.ms[batch]:.1f} "
            f"| {int8.ms[batch] / int8.fp32_ms[batch]:.2f} |"
            for batch in args.batches
        ),
        "",
        f"Test Dice fp32 ONNX {int8.fp32_dice:.5f}, INT8 {int8.dice:.5f} (change "
        f"{int8.dice - int8.fp32_dice:+.5f}; {'within' if int8.acceptable else 'NOT within'} "
        f"the {INT8_DICE_TOLERANCE} allowed).",
        "",
        "## Against the goal",
        "",
        f"{verdict(candidates, rates, latency, dice, args)} {bf16_note}",
    ]
    return "\n".join(lines) + "\n"


PEER_GOALS = {"smp_unet_r34": 3.0, "monai_attention_unet": 1.5}
"""How many times faster than each peer (each at its faster torch precision) the shipped
network must be, at batch 1 and at every other batch measured."""
IMAGES_PER_SECOND_GOAL = 30.0


def verdict(
    candidates: dict[str, Candidate],
    rates: dict[tuple[str, str], float],
    latency: dict[tuple[str, str, int], float],
    dice: dict[str, float],
    args: argparse.Namespace,
) -> str:
    """The goals: the shipped network 3x faster than smp and 1.5x faster than MONAI per image,
    each at its best (torch fp32, torch bf16, or ONNX Runtime for the shipped one) at every batch;
    ``predict`` at 30 images/s or more; test Dice at least the peers'."""
    runtimes = ("torch fp32", "torch bf16", "onnxruntime")
    parts, met = [], True
    for batch in args.batches:
        ours_ms, ours_runtime = min((latency[SHIPPED, r, batch], r) for r in runtimes)
        for peer, goal in PEER_GOALS.items():
            peer_ms, peer_runtime = min(
                (latency[peer, r, batch], r) for r in ("torch fp32", "torch bf16")
            )
            ratio = peer_ms / ours_ms
            met &= ratio >= goal
            parts.append(
                f"batch {batch}: {ratio:.2f}x faster than {peer} ({ours_runtime} {ours_ms:.1f} "
                f"against {peer_runtime} {peer_ms:.1f} ms/img; goal {goal:g}x)"
            )
    best_rate, best_backend = max((rates[SHIPPED, b], b) for b in BACKENDS)
    fast_enough = best_rate >= IMAGES_PER_SECOND_GOAL
    parts.append(
        f"`predict` {best_rate:.1f} images/s ({best_backend}; goal {IMAGES_PER_SECOND_GOAL:g})"
    )
    trained = [name for name in dice if name != SHIPPED]
    if trained:
        best_peer = max(trained, key=dice.__getitem__)
        accuracy = (
            f"Test Dice {dice[SHIPPED]:.4f} against the best trained peer's ({best_peer}) "
            f"{dice[best_peer]:.4f}."
        )
    else:
        accuracy = (
            f"Test Dice {dice[SHIPPED]:.4f}; no peer is trained yet (no "
            f"{args.peer_runs}/NAME/model.safetensors), so the accuracy comparison is open."
        )
    status = "all met" if met and fast_enough else "NOT all met"
    return f"Speed goals {status}: " + "; ".join(parts) + f". {accuracy}"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path, help="default: DATA/splits/paper_433.json")
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8], help="model-only")
    add_timing_arguments(parser)
    parser.add_argument("--batch", type=int, default=8, help="predict's batch size (its default)")
    parser.add_argument(
        "--resize",
        type=int,
        default=512,
        help="end to end on the test X-rays resized to NxN PNGs (0: the original files)",
    )
    parser.add_argument("--workers", type=int, default=1, help="predict's decode workers")
    parser.add_argument(
        "--chunk", type=int, default=16, help="images per predict call; the models take turns"
    )
    parser.add_argument(
        "--bf16-dice-images",
        type=int,
        default=0,
        help="score bf16 on the first N images only (0: all); bf16 is slow without native bf16",
    )
    parser.add_argument(
        "--peer-runs",
        type=Path,
        default=Path("runs/peers_1core"),
        help="peers.py's --out: trained peer weights are taken from NAME/model.safetensors",
    )
    parser.add_argument("--seed", type=int, default=0, help="random init of untrained peers")
    parser.add_argument(
        "--int8-calibration", type=int, default=32, help="val images that calibrate INT8"
    )
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    args.split = args.split or args.data / "splits" / "paper_433.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(report)
    if args.out:
        atomic_write_text(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
