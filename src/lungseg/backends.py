"""Inference backends: what runs the network inside a :class:`~lungseg.inference.Segmenter`.

``torch`` runs the PyTorch module rebuilt from a safetensors weights file. ``onnxruntime`` runs
an ONNX file written by ``lungseg export``; :class:`OnnxRuntimeModel` is called exactly like the
torch module ((B, 1, h, w) float32 tensor in, logits tensor out), so the Segmenter's
preprocessing, resizing back and thresholding are one code path for both backends.

An exported file describes itself: the :class:`~lungseg.weights.WeightsInfo` (architecture,
input size, threshold, preprocessing, version) is stored in the ONNX model's metadata under
:data:`METADATA_KEY`, so no other file is needed to run it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lungseg.errors import InvalidInputError, LungsegError
from lungseg.weights import WeightsInfo

BACKENDS = ("torch", "onnxruntime")
# Key of the exported files' metadata entry (ONNX metadata_props, TorchScript _extra_files)
# holding WeightsInfo.to_metadata() as JSON.
METADATA_KEY = "lungseg"
ONNX_INPUT = "image"
ONNX_OUTPUT = "logits"


def resolve_backend(backend: str | None, weights: str | Path | None) -> str:
    """The backend to use: ``backend`` if given, else ``onnxruntime`` for a ``.onnx`` file.

    Raises:
        LungsegError: an unknown backend name.
        InvalidInputError: an ``.onnx`` file asked for with the torch backend (it would fail
            later as "not a safetensors file", which does not say what to do).
    """
    is_onnx = weights is not None and Path(weights).suffix.lower() == ".onnx"
    if backend is None:
        return "onnxruntime" if is_onnx else "torch"
    if backend not in BACKENDS:
        raise LungsegError(f"unknown backend {backend!r}; use one of: {', '.join(BACKENDS)}")
    if backend == "torch" and is_onnx:
        raise InvalidInputError(
            weights,  # type: ignore[arg-type]
            "is an ONNX model; run it with backend 'onnxruntime'",
        )
    return backend


def info_from_metadata(source: str | Path, metadata: dict[str, str]) -> WeightsInfo:
    """Read the WeightsInfo that ``lungseg export`` stored under :data:`METADATA_KEY`."""
    if METADATA_KEY not in metadata:
        raise InvalidInputError(
            source, f"has no '{METADATA_KEY}' metadata: it was not written by lungseg export"
        )
    try:
        return WeightsInfo.from_metadata(json.loads(metadata[METADATA_KEY]))
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidInputError(source, f"unreadable '{METADATA_KEY}' metadata ({err})") from err


class OnnxRuntimeModel:
    """An ONNX model written by ``lungseg export``, run by ONNX Runtime, called like the module.

    Args:
        source: the ``.onnx`` file, or its bytes (export verifies the bytes before writing them).
        device: ``cpu``, ``cuda`` (needs the onnxruntime-gpu build) or ``auto`` (CUDA when that
            build is installed, else CPU).
        precision: ``fp32`` or ``auto``; the exported graph is fp32, and casting it is not
            worth a second code path on CPUs without native bf16.
        threads: ONNX Runtime's intra-op threads; by default torch's thread count, so
            ``OMP_NUM_THREADS`` / ``torch.set_num_threads`` limit both backends alike (ONNX
            Runtime would otherwise take every core).

    Attributes:
        info: the WeightsInfo stored in the file.
        session: the ``onnxruntime.InferenceSession``, for whoever wants to benchmark it.
    """

    def __init__(
        self,
        source: str | Path | bytes,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise LungsegError(
                "the onnxruntime backend needs ONNX Runtime: pip install 'lungseg[onnx]'"
            ) from err
        name = "<exported model in memory>" if isinstance(source, bytes) else str(source)
        if not isinstance(source, bytes) and not Path(source).is_file():
            raise InvalidInputError(name, "ONNX model file not found")
        if precision not in ("fp32", "auto"):
            raise LungsegError(
                f"precision {precision!r} is not available with the onnxruntime backend: "
                "the exported model runs in fp32"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
        options.inter_op_num_threads = 1  # one chain of convolutions: nothing to run side by side
        # Idle threads sleep instead of spinning: predict's decode worker and writer thread
        # (and anything else on the machine) need the cores between network calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                source if isinstance(source, bytes) else str(source),
                options,
                providers=_providers(device, ort.get_available_providers()),
            )
        except Exception as err:  # ORT raises its own untyped errors (InvalidProtobuf, Fail...)
            raise InvalidInputError(name, f"not a loadable ONNX model ({err})") from err
        self.info = info_from_metadata(name, self.session.get_modelmeta().custom_metadata_map)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        # The input's shape as exported: ints where fixed, names where dynamic.
        self._expected = [
            "B",
            1,
            *(d if isinstance(d, int) else "?" for d in self.session.get_inputs()[0].shape[2:]),
        ]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) float32 prepared inputs -> (B, 1, h, w) float32 logits on the CPU.

        ``h, w``: the weights' image size, or any size where the export left them dynamic (the
        quality pass may run smaller)."""
        if batch.ndim != 4 or any(
            isinstance(want, int) and want != got
            for want, got in zip(self._expected, batch.shape, strict=True)
        ):
            shown = ", ".join(map(str, self._expected))
            raise LungsegError(
                f"the exported model takes ({shown}) inputs, got "
                f"{tuple(batch.shape)}: prepare images with Segmenter.prepare"
            )
        array = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        (logits,) = self.session.run([self._output], {self._input: array})
        return torch.from_numpy(logits)


def _providers(device: str, available: list[str]) -> list[str]:
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cpu" or (device == "auto" and not has_cuda):
        return ["CPUExecutionProvider"]
    if device in ("cuda", "auto"):
        if not has_cuda:
            raise LungsegError(
                "device 'cuda' with the onnxruntime backend needs the onnxruntime-gpu build"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise LungsegError(f"unknown device {device!r}; use auto, cpu or cuda")
