"""The Segmenter: one object behind the Python API, the CLI and the web service.

It owns the model, the input size and the decision threshold read from the weights file, and
it always returns results at the image's ORIGINAL resolution: logits are computed at the
network's size and resized back (bilinear) before the sigmoid and the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungseg.backends import OnnxRuntimeModel, resolve_backend
from lungseg.data.io import ImageMeta, read_image
from lungseg.data.transforms import preprocess
from lungseg.errors import LungsegError
from lungseg.measure import LungMeasurements, lung_labels, measure_lungs
from lungseg.postprocess import postprocess_mask
from lungseg.runtime import resolve_runtime
from lungseg.weights import WeightsInfo, load_weights, shipped_weights_path


@dataclass
class Segmentation:
    """One image's result, everything at the image's original size.

    Attributes:
        mask: bool (H, W) lungs, post-processed unless that was turned off.
        probabilities: float32 (H, W) lung probability before the threshold.
        labels: uint8 (H, W): 0 background, 1 the patient's right lung, 2 the left one.
        measurements: areas per side (cm2 when the spacing is known) and the quality flag.
        meta: what the file said about itself, when the input was a file.
    """

    mask: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray
    measurements: LungMeasurements
    meta: ImageMeta | None = None


class Segmenter:
    """Segment lungs in chest X-rays.

    Example:
        >>> seg = Segmenter.from_pretrained()
        >>> result = seg("chest.png")
        >>> result.mask.shape == (result.meta.height, result.meta.width)
        True
    """

    def __init__(
        self,
        model: nn.Module | OnnxRuntimeModel,
        info: WeightsInfo,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        """Wrap a ready model.

        Args:
            model: the torch module (``self.model`` stays that module, so it can be benchmarked
                or exported), or an :class:`~lungseg.backends.OnnxRuntimeModel`.
            info: what the weights say about themselves (input size, threshold, ...).
            device, precision: where and how the torch module runs. An OnnxRuntimeModel chose
                both when its session was built and returns fp32 CPU logits, so torch only
                resizes them, on the CPU.
        """
        if isinstance(model, nn.Module):
            self.backend = "torch"
            self.runtime = resolve_runtime(device, precision)
            self.model = model.to(self.runtime.device).eval()
        else:
            self.backend = "onnxruntime"
            self.runtime = resolve_runtime("cpu", "fp32")
            self.model = model
        self.info = info
        self.threshold = info.threshold

    @classmethod
    def from_pretrained(
        cls,
        weights: str | Path | None = None,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        backend: str | None = None,
    ) -> Segmenter:
        """Load a model from ``weights``, or the model shipped in the package.

        Args:
            weights: a lungseg safetensors file (backend ``torch``) or an ONNX file written by
                ``lungseg export`` (backend ``onnxruntime``); None means the shipped model.
            device: ``cpu``, ``cuda`` or ``auto``.
            precision: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (onnxruntime: fp32 only).
            backend: ``torch`` or ``onnxruntime``; None picks ``onnxruntime`` for a ``.onnx``
                file and ``torch`` otherwise.

        Raises:
            LungsegError: backend ``onnxruntime`` without ``weights``. The shipped model is not
                exported behind the user's back: export verifies on a real X-ray, which the
                package does not contain, and a hidden cache file is a side effect nobody
                asked for. The message says which command writes the file.
            InvalidInputError: a missing or unreadable weights file.
        """
        backend = resolve_backend(backend, weights)
        if backend == "onnxruntime":
            if weights is None:
                raise LungsegError(
                    "the onnxruntime backend runs an exported model: write one with "
                    "'lungseg export --format onnx -o lungs.onnx --check-image XRAY' and pass "
                    "that file as the weights"
                )
            runner = OnnxRuntimeModel(weights, device=device, precision=precision)
            return cls(runner, runner.info)
        model, info = load_weights(weights if weights is not None else shipped_weights_path())
        return cls(model, info, device=device, precision=precision)

    @property
    def input_size(self) -> tuple[int, int]:
        """The (height, width) the network sees."""
        return tuple(self.info.image_size)  # type: ignore[return-value]

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """A [0, 1] float image (H, W) -> the network's normalised input (1, h, w)."""
        return torch.from_numpy(preprocess(image, self.input_size)).unsqueeze(0)

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) prepared inputs -> (B, 1, h, w) float32 logits."""
        batch = batch.to(self.runtime.device)
        with self.runtime.autocast():
            return self.model(batch).float()

    @torch.inference_mode()
    def probabilities_at(self, logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """One image's (1, h, w) logits -> (H, W) probabilities at the original size."""
        resized = F.interpolate(
            logits[None], size=tuple(size), mode="bilinear", align_corners=False
        )
        return torch.sigmoid(resized)[0, 0].cpu().numpy()

    def finish(
        self, probabilities: np.ndarray, meta: ImageMeta | None = None, *, postprocess: bool = True
    ) -> Segmentation:
        """Probabilities at original size -> mask, sides and measurements (one place for all).

        ``postprocess`` keeps the two largest components and fills their holes: a lung is one
        piece without holes, so what it removes are the model's specks and gaps.
        """
        mask = probabilities > self.threshold
        if postprocess:
            mask = postprocess_mask(mask)
        spacing = meta.pixel_spacing_mm if meta is not None else None
        return Segmentation(
            mask=mask,
            probabilities=probabilities,
            labels=lung_labels(mask),
            measurements=measure_lungs(mask, spacing),
            meta=meta,
        )

    def predict_arrays(
        self, images: Sequence[np.ndarray], *, postprocess: bool = True
    ) -> list[Segmentation]:
        """Segment several [0, 1] float images of any sizes in one batch."""
        batch = torch.stack([self.prepare(image) for image in images])
        logits = self.logits(batch)
        return [
            self.finish(
                self.probabilities_at(image_logits, image.shape[:2]), postprocess=postprocess
            )
            for image, image_logits in zip(images, logits, strict=True)
        ]

    def __call__(
        self,
        image: str | Path | np.ndarray,
        *,
        meta: ImageMeta | None = None,
        postprocess: bool = True,
    ) -> Segmentation:
        """Segment one X-ray given as a file path (any format lungseg reads) or a [0,1] array.

        For an array, ``meta`` (e.g. from :func:`~lungseg.data.io.read_image_bytes`) supplies
        the pixel spacing, hence areas in cm2; a file states its own.
        """
        if not isinstance(image, np.ndarray):
            image, meta = read_image(image)
        batch = self.prepare(np.asarray(image, dtype=np.float32))[None]
        probabilities = self.probabilities_at(self.logits(batch)[0], image.shape[:2])
        return self.finish(probabilities, meta, postprocess=postprocess)
