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

from lungseg.data.io import ImageMeta, read_image
from lungseg.data.transforms import preprocess
from lungseg.runtime import resolve_runtime
from lungseg.weights import WeightsInfo, load_weights, shipped_weights_path


@dataclass
class Segmentation:
    """One image's result: a boolean mask and lung probabilities, both at original size."""

    mask: np.ndarray
    probabilities: np.ndarray
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
        self, model: nn.Module, info: WeightsInfo, device: str = "cpu", precision: str = "fp32"
    ) -> None:
        self.runtime = resolve_runtime(device, precision)
        self.model = model.to(self.runtime.device).eval()
        self.info = info
        self.threshold = info.threshold

    @classmethod
    def from_pretrained(
        cls, weights: str | Path | None = None, *, device: str = "cpu", precision: str = "fp32"
    ) -> Segmenter:
        """Load ``weights`` (a lungseg safetensors file), or the model shipped in the package."""
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

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[Segmentation]:
        """Segment several [0, 1] float images of any sizes in one batch."""
        batch = torch.stack([self.prepare(image) for image in images])
        logits = self.logits(batch)
        results = []
        for image, image_logits in zip(images, logits, strict=True):
            prob = self.probabilities_at(image_logits, image.shape[:2])
            results.append(Segmentation(mask=prob > self.threshold, probabilities=prob))
        return results

    def __call__(self, image: str | Path | np.ndarray) -> Segmentation:
        """Segment one X-ray given as a file path (any format lungseg reads) or a [0,1] array."""
        meta = None
        if not isinstance(image, np.ndarray):
            image, meta = read_image(image)
        result = self.predict_arrays([np.asarray(image, dtype=np.float32)])[0]
        result.meta = meta
        return result
