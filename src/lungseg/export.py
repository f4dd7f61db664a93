"""Export a lungseg model to ONNX or TorchScript, verified against PyTorch before it is written.

The exported file takes the network's prepared input ``(B, 1, h, w)`` float32 (batch dynamic,
``h, w`` = the weights' ``image_size``, ONNX: any multiple of the network's stride, for the
quality pass's smaller grid) and returns ``(B, C, h, w)`` logits, one channel per
label the weights name (lungs, then heart). It describes itself:
the :class:`~lungseg.weights.WeightsInfo` (architecture, input size, threshold, preprocessing,
version) is stored as JSON under the key ``"lungseg"`` (ONNX ``metadata_props``, TorchScript
``_extra_files``), so it runs with no other file.

Nothing is written unless the export matches PyTorch: the model is exported into memory, and
the exported bytes are run on real X-rays, one at a time and two in one batch (the exporter
traced a batch of two, so both runs prove the batch axis dynamic), through the same Segmenter
code (``prepare``, ``logits``, ``probabilities_at``, ``threshold``) as the PyTorch model. Only
when every mask's Dice against PyTorch at the image's original resolution reaches ``min_dice``
are those same bytes written, atomically (temporary file in the target folder, fsync, rename:
:mod:`lungseg.atomic`).

Exporters, as found in torch 2.13 on the shipped ``msag_unet_cpu`` (one CPU core, shared with
other jobs, so the timings are rough):

- ONNX uses ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter. The
  ``dynamo=True`` exporter (torch.export + onnxscript, the default since torch 2.9) also works
  and agrees with PyTorch as closely (max abs logit difference ~1.5e-5 for both), but took
  33-85 s per export (torch.export tracing, decompositions, then the onnxscript optimizer)
  against 2-5 s, needs onnxscript, and its graph ran no faster in ONNX Runtime (115 against
  103 ms per 256x256 image, one thread), which fuses the plain graph itself when loading it.
  The TorchScript-based exporter raises a DeprecationWarning in 2.13; when a torch release
  removes it, switch :func:`_onnx_bytes` to ``dynamo=True`` with
  ``dynamic_shapes=({0: torch.export.Dim("batch")},)`` and add onnxscript to the ``onnx``
  extra: the verification stays as it is.
- TorchScript uses ``torch.jit.trace``, ``save`` and ``load`` (deprecated in 2.13 in favour of
  torch.export, still working). ``torch.jit.script`` cannot compile the model (its input check
  formats a shape in an f-string), and a traced graph is what the format's users want: no
  Python needed. ``check_trace`` is off because the verification here reruns the model more
  strictly.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lungseg.atomic import atomic_write_bytes
from lungseg.backends import (
    METADATA_KEY,
    ONNX_INPUT,
    ONNX_OUTPUT,
    OnnxRuntimeModel,
    info_from_metadata,
)
from lungseg.data.io import read_image
from lungseg.errors import InvalidInputError, LungsegError
from lungseg.inference import Segmenter
from lungseg.metrics import dice
from lungseg.weights import WeightsInfo, load_weights, shipped_weights_path

__all__ = [
    "FORMATS",
    "MIN_DICE",
    "ONNX_OPSET",
    "ExportCheck",
    "ExportReport",
    "ExportVerificationError",
    "export_model",
    "load_torchscript",
]

FORMATS = ("onnx", "torchscript")
MIN_DICE = 0.999
ONNX_OPSET = 18
BATCH_CHECK = 2  # the batch size the dynamic-batch check runs


@dataclass(frozen=True)
class ExportCheck:
    """One comparison of the exported model with PyTorch.

    Attributes:
        label: the check image's path, or ``batch of 2 (...)`` for the batched run.
        batch_size: how many images the exported model saw in one call.
        max_abs_logit_diff: largest |exported - PyTorch| over the network-size logits.
        dice: Dice of the exported model's mask against PyTorch's at the original resolution
            (the lowest one over the batch).
        passed: ``dice >= min_dice``.
    """

    label: str
    batch_size: int
    max_abs_logit_diff: float
    dice: float
    passed: bool


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote and how it checked it."""

    path: Path
    format: str
    checks: list[ExportCheck]
    export_seconds: float
    verify_seconds: float
    size_bytes: int


class ExportVerificationError(LungsegError):
    """The exported model does not match PyTorch; nothing was written.

    Attributes:
        checks: every check that ran, the failed ones with ``passed`` False.
    """

    def __init__(self, output: Path, checks: list[ExportCheck], min_dice: float) -> None:
        self.checks = checks
        failed = "; ".join(
            f"{c.label}: Dice {c.dice:.6f}, max abs logit diff {c.max_abs_logit_diff:.3g}"
            for c in checks
            if not c.passed
        )
        super().__init__(
            f"the exported model does not match PyTorch (Dice vs PyTorch below {min_dice}): "
            f"{failed}; {output} was not written"
        )


def export_model(
    output: str | Path,
    fmt: str,
    check_images: Sequence[str | Path],
    *,
    weights: str | Path | None = None,
    min_dice: float = MIN_DICE,
) -> ExportReport:
    """Export ``weights`` (default: the shipped model) to ``output``, verified first.

    Args:
        output: the file to write (``.onnx`` / ``.pt`` by convention).
        fmt: ``onnx`` or ``torchscript``.
        check_images: real X-rays, in any format lungseg reads, to verify the export on; the
            package contains none, so the caller must give at least one.
        weights: a lungseg safetensors file; None exports the shipped model.
        min_dice: the Dice against PyTorch every check must reach.

    Returns:
        The written path, the checks and the timings.

    Raises:
        LungsegError: an unknown format, no check image, or a missing optional dependency.
        InvalidInputError: an unreadable weights file or check image.
        ExportVerificationError: a check failed; nothing was written.
    """
    output = Path(output)
    if fmt not in FORMATS:
        raise LungsegError(f"unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if not check_images:
        raise LungsegError(
            "export needs at least one real X-ray to verify the exported model on "
            "(lungseg ships none)"
        )
    if output.is_dir():
        raise InvalidInputError(output, "is a folder; give the file to write")
    model, info = load_weights(weights if weights is not None else shipped_weights_path())
    images = [(str(path), read_image(path)[0]) for path in check_images]  # bad files fail first

    started = time.perf_counter()
    data = _onnx_bytes(model, info) if fmt == "onnx" else _torchscript_bytes(model, info)
    exported_at = time.perf_counter()
    checks = _verify(Segmenter(model, info), _load_exported(data, fmt), images, min_dice)
    verified_at = time.perf_counter()
    if not all(check.passed for check in checks):
        raise ExportVerificationError(output, checks, min_dice)
    atomic_write_bytes(output, data)
    return ExportReport(
        path=output,
        format=fmt,
        checks=checks,
        export_seconds=exported_at - started,
        verify_seconds=verified_at - exported_at,
        size_bytes=len(data),
    )


def load_torchscript(source: str | Path | bytes) -> tuple[torch.jit.ScriptModule, WeightsInfo]:
    """Load a TorchScript file written by :func:`export_model` and the WeightsInfo inside it."""
    name = "<exported model in memory>" if isinstance(source, bytes) else str(source)
    extra_files = {METADATA_KEY: ""}
    try:
        module = torch.jit.load(
            io.BytesIO(source) if isinstance(source, bytes) else str(source),
            map_location="cpu",
            _extra_files=extra_files,
        )
    except (RuntimeError, ValueError, OSError) as err:
        raise InvalidInputError(name, f"not a loadable TorchScript file ({err})") from err
    stored = extra_files[METADATA_KEY]  # bytes, empty when the file has no such entry
    metadata = {METADATA_KEY: stored.decode()} if stored else {}
    return module.eval(), info_from_metadata(name, metadata)


def _metadata_json(info: WeightsInfo) -> str:
    return json.dumps(info.to_metadata())


def _example_batch(info: WeightsInfo) -> torch.Tensor:
    # Batch 2, not 1: exporters treat a size-1 axis as a constant they may specialise on.
    return torch.randn(BATCH_CHECK, 1, *info.image_size, generator=torch.Generator().manual_seed(0))


def _onnx_bytes(model: nn.Module, info: WeightsInfo) -> bytes:
    """The model as an ONNX graph (opset :data:`ONNX_OPSET`, dynamic batch) with its info."""
    try:
        import onnx
    except ImportError as err:
        raise LungsegError("ONNX export needs onnx: pip install 'lungseg[onnx]'") from err
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (_example_batch(info),),
        buffer,
        dynamo=False,  # see the module docstring for why
        opset_version=ONNX_OPSET,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        # Height and width dynamic too: the quality pass may run on a smaller grid.
        dynamic_axes={
            ONNX_INPUT: {0: "batch", 2: "height", 3: "width"},
            ONNX_OUTPUT: {0: "batch", 2: "height", 3: "width"},
        },
    )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    onnx.helper.set_model_props(proto, {METADATA_KEY: _metadata_json(info)})
    proto.doc_string = f"lungseg {info.lungseg_version} {info.model_config.get('name', '')}"
    return proto.SerializeToString()


def _torchscript_bytes(model: nn.Module, info: WeightsInfo) -> bytes:
    """The model traced to TorchScript (dynamic batch) with its info in ``_extra_files``."""
    with torch.no_grad():
        traced = torch.jit.trace(model, (_example_batch(info),), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={METADATA_KEY: _metadata_json(info)})
    return buffer.getvalue()


def _load_exported(data: bytes, fmt: str) -> Segmenter:
    """A Segmenter over the exported bytes, its info read back from the bytes' own metadata."""
    if fmt == "onnx":
        runner = OnnxRuntimeModel(data)
        return Segmenter(runner, runner.info)
    module, info = load_torchscript(data)
    return Segmenter(module, info)


def _verify(
    reference: Segmenter,
    exported: Segmenter,
    images: list[tuple[str, np.ndarray]],
    min_dice: float,
) -> list[ExportCheck]:
    """Compare the exported model with PyTorch on each image alone, then on a batch of two."""
    cases = [(label, [image]) for label, image in images]
    batch = [image for _, image in images[:BATCH_CHECK]]
    names = [Path(label).name for label, _ in images[:BATCH_CHECK]]
    if len(batch) < BATCH_CHECK:
        # One check image: pair it with its mirror, so the two batch members differ and an
        # export that mixed them up, or baked the batch size in, would show.
        batch.append(np.ascontiguousarray(batch[0][:, ::-1]))
        names.append(f"{names[0]} mirrored")
    cases.append((f"batch of {BATCH_CHECK} ({', '.join(names)})", batch))
    return [_compare(label, group, reference, exported, min_dice) for label, group in cases]


def _compare(
    label: str,
    images: list[np.ndarray],
    reference: Segmenter,
    exported: Segmenter,
    min_dice: float,
) -> ExportCheck:
    """Run ``images`` through the exported model in one call and PyTorch one at a time."""
    inputs = [reference.prepare(image) for image in images]
    exported_logits = exported.logits(torch.stack(inputs))
    diffs, scores = [], []
    for image, x, got in zip(images, inputs, exported_logits, strict=True):
        expected = reference.logits(x[None])[0]
        diffs.append(float((got - expected).abs().max()))
        size = image.shape[:2]
        # Every output channel (lungs, and the heart where there is one) must agree.
        expected_masks = reference.probabilities_at(expected, size) > reference.threshold
        exported_masks = exported.probabilities_at(got, size) > exported.threshold
        scores.extend(map(dice, exported_masks, expected_masks))
    max_diff = float(np.max(diffs))  # np.max, unlike max(), keeps a NaN
    worst_dice = min(scores)
    return ExportCheck(
        label=label,
        batch_size=len(images),
        max_abs_logit_diff=max_diff,
        dice=worst_dice,
        passed=worst_dice >= min_dice and bool(np.isfinite(max_diff)),
    )
