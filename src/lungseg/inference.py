"""The Segmenter: one object behind the Python API, the CLI, evaluation and the web service.

It owns the model, the input size and the decision threshold read from the weights file, and
it always returns results at the image's ORIGINAL resolution: logits are computed at the
network's size and resized back (bilinear) before the sigmoid and the threshold.

:meth:`Segmenter.predict_many` is the one prediction path (as nnU-Net has one predictor):
``lungseg predict``, ``lungseg evaluate``, the threshold choice after training and the web
service all consume the :class:`Segmentation` it yields, so a reported score is the score of
the masks users get. Files are decoded in DataLoader workers, the network runs in the calling
thread and what follows it (resize back, post-processing, measurements, quality) on a second
thread while the network takes the next batch; a file that cannot be read either stops the run
or comes back as a :class:`FailedInput`, in input order.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungseg.backends import OnnxRuntimeModel, resolve_backend
from lungseg.compiled import CompiledNetwork
from lungseg.data.io import NOT_FRONTAL, ImageMeta, as_grey_image, read_image
from lungseg.data.transforms import preprocess
from lungseg.errors import InvalidInputError, LungsegError
from lungseg.measure import LungMeasurements, lung_labels, measure_lungs
from lungseg.models.fold import cast_for_autocast, fold_batch_norms
from lungseg.orientation import THEN_MIRRORED, Orientation, apply_flip, check_orientation
from lungseg.postprocess import postprocess_mask
from lungseg.quality import QualityModel, quality_signals, zoomed_back, zoomed_out
from lungseg.runtime import PrecisionChoice, Runtime, measure_cpu_precision, resolve_runtime
from lungseg.weights import WeightsInfo, load_weights, shipped_weights_path

if TYPE_CHECKING:
    from PIL import Image

FLIP_NAMES = {
    "horizontal": "mirrored left-right",
    "vertical": "flipped upside down",
    "rotate180": "rotated by 180 degrees",
}
"""How a result names the flip :mod:`lungseg.orientation` found and undid."""


@dataclass
class Segmentation:
    """One image's result, everything at the image's original size.

    Attributes:
        mask: bool (H, W) lungs, post-processed unless that was turned off.
        probabilities: float32 (H, W) lung probability before the threshold.
        labels: uint8 (H, W): 0 background, 1 the patient's right lung, 2 the left one.
        measurements: areas per side (cm2 when the spacing is known), the heart's area and
            the cardiothoracic ratio, and the quality flag.
        meta: what the file said about itself, when the input was a file.
        heart: bool (H, W) heart (one component, holes filled when post-processed); None when
            the weights have no heart channel.
        heart_probabilities: float32 (H, W) heart probability before its threshold; None when
            the weights have no heart channel.
        grey: the decoded X-ray as 8-bit grey (H, W), for overlays; None for array inputs.
        quality_signals: what :mod:`lungseg.quality` estimates the Dice from; None when the
            second pass did not run.
    """

    mask: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray
    measurements: LungMeasurements
    meta: ImageMeta | None = None
    heart: np.ndarray | None = None
    heart_probabilities: np.ndarray | None = None
    grey: np.ndarray | None = None
    quality_signals: dict[str, float] | None = None


@dataclass(frozen=True)
class FailedInput:
    """An input :meth:`Segmenter.predict_many` could not segment, and why."""

    path: Path | None
    reason: str

    def error(self) -> InvalidInputError | LungsegError:
        """The error to raise for it (names the file)."""
        if self.path is None:
            return LungsegError(self.reason)
        return InvalidInputError(self.path, self.reason)

    def __str__(self) -> str:
        return str(self.error())


class _DecodeDataset(torch.utils.data.Dataset):
    """Decodes one input in a worker: the network input, the 8-bit grey image and the meta.

    A file that cannot be read comes back as its reason, never as an exception: raised in a
    worker it would reach the caller as a RuntimeError wrapping a traceback.
    """

    def __init__(self, inputs: Sequence[str | Path | np.ndarray], segmenter: Segmenter) -> None:
        self.inputs = list(inputs)
        self.prepare = segmenter.prepare

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.inputs[index]
        if isinstance(item, np.ndarray):
            pixels = np.asarray(item, dtype=np.float32)
            return {"input": self.prepare(pixels), "size": pixels.shape[:2], "meta": None}
        path = Path(item)
        try:
            pixels, meta = read_image(path)
        except InvalidInputError as err:
            return {"failed": FailedInput(Path(err.path), err.reason)}
        except LungsegError as err:
            return {"failed": FailedInput(path, str(err))}
        return {
            "input": self.prepare(pixels),
            "size": pixels.shape[:2],
            "meta": meta,
            "grey": np.round(pixels * 255).astype(np.uint8),  # 1 byte per pixel across IPC
        }


def _flag_film(measurements: LungMeasurements, meta: ImageMeta | None) -> LungMeasurements:
    """A lateral or oblique film's mask is "check", whatever its shape: the model only knows
    frontal films (:data:`~lungseg.data.io.NOT_FRONTAL`)."""
    film = [w for w in (meta.warnings if meta is not None else ()) if NOT_FRONTAL in w]
    return _add_reasons(measurements, film)


def _add_reasons(measurements: LungMeasurements, reasons: list[str]) -> LungMeasurements:
    """``measurements`` flagged "check" for ``reasons`` too, after those it already has
    (unchanged when there are none)."""
    if not reasons:
        return measurements
    joined = "; ".join([measurements.reason, *reasons] if measurements.reason else reasons)
    return dataclasses.replace(measurements, quality="check", reason=joined)


def _upright_view(result: Segmentation, flip: str) -> Orientation:
    """The orientation of ``result``'s masks as seen on the film turned by ``flip``."""
    heart = None if result.heart is None else apply_flip(result.heart, flip)
    return check_orientation(apply_flip(result.mask, flip), heart)


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
        compile: bool = False,
    ) -> None:
        """Wrap a ready model.

        Args:
            model: the torch module (``self.model`` stays that module, so it can be benchmarked
                or exported), or an :class:`~lungseg.backends.OnnxRuntimeModel`.
            info: what the weights say about themselves (input size, threshold, ...).
            device, precision: where and how the torch module runs; ``precision="auto"`` on a
                CPU times fp32 and bf16 autocast for this network (``measure_cpu_precision``,
                cached per machine) and keeps the faster, on CUDA it takes bf16 or fp16. The
                Python default is fp32, the reference every other precision is checked
                against; the CLI defaults to auto. An OnnxRuntimeModel chose both when its
                session was built and returns fp32 CPU logits, so torch only resizes them.
            compile: run the torch network under ``torch.compile`` (:mod:`lungseg.compiled`:
                faster on long runs, tens of seconds per new batch shape, eager where it
                cannot compile); ignored by the onnxruntime backend.
        """
        self.precision_choice: PrecisionChoice | None = None
        if isinstance(model, nn.Module):
            self.backend = "torch"
            # Under torchrun each process takes its own GPU (cuda:LOCAL_RANK), not all cuda:0.
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            self.runtime = resolve_runtime(device, precision, local_rank)
            self.model = model.to(self.runtime.device).eval()
            # What runs: batch norms folded into the convolutions (same function, one pass
            # fewer over every map) in channels_last, the layout oneDNN's kernels and the
            # attention's token views want; self.model stays the module as loaded.
            self._network = (
                self.model  # a loaded TorchScript export runs as it was traced
                if isinstance(self.model, torch.jit.ScriptModule)
                else fold_batch_norms(self.model).to(memory_format=torch.channels_last)
            )
            if precision == "auto" and self.runtime.device.type == "cpu":
                # Measured, never assumed: bf16 only where this CPU runs this network faster
                # in it (timed once per machine and network, then cached).
                shape = (1, getattr(model, "in_channels", 1), *info.image_size)
                self.precision_choice = measure_cpu_precision(
                    self._network, shape, training=False, channels_last=True
                )
                self.runtime = Runtime(self.runtime.device, self.precision_choice.dtype)
            if self.runtime.dtype is not None and not isinstance(
                self.model, torch.jit.ScriptModule
            ):
                # Weights in the autocast dtype once, not cast again on every call.
                self._network = cast_for_autocast(self._network, self.runtime.dtype)
            if compile:
                self._network = CompiledNetwork(self._network)
        else:
            self.backend = "onnxruntime"
            self.runtime = resolve_runtime("cpu", "fp32")
            self.model = model
            self._network = model
        self.info = info
        self.threshold = info.threshold
        self.heart_threshold = info.heart_threshold
        quality_model = self.quality_model
        # The second pass's input size: the one the quality model was calibrated with
        # (scripts/calibrate_quality.py sets it while it measures), else the network's.
        self.quality_pass_size: tuple[int, int] = tuple(  # type: ignore[assignment]
            quality_model.pass_size
            if quality_model is not None and quality_model.pass_size
            else info.image_size
        )

    @classmethod
    def from_pretrained(
        cls,
        weights: str | Path | None = None,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        backend: str | None = None,
        compile: bool = False,
    ) -> Segmenter:
        """Load a model from ``weights``, or the model shipped in the package.

        Args:
            weights: a lungseg safetensors file (backend ``torch``) or an ONNX file written by
                ``lungseg export`` (backend ``onnxruntime``); None means the shipped model.
            device: ``cpu``, ``cuda`` or ``auto``.
            precision: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (onnxruntime: fp32 only).
            backend: ``torch`` or ``onnxruntime``; None picks ``onnxruntime`` for a ``.onnx``
                file and ``torch`` otherwise.
            compile: ``torch.compile`` the network (torch backend; see :meth:`__init__`).

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
        return cls(model, info, device=device, precision=precision, compile=compile)

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
        if self.backend == "torch":
            if self.runtime.device.type == "cuda":  # page-locked: the copy overlaps the work
                batch = batch.pin_memory().to(self.runtime.device, non_blocking=True)
            batch = batch.contiguous(memory_format=torch.channels_last)
        with self.runtime.autocast():
            return self._network(batch).float()

    @property
    def has_heart(self) -> bool:
        """Whether the weights have a heart channel (channel 1)."""
        return "heart" in self.info.labels

    @torch.inference_mode()
    def probabilities_at(self, logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """One image's (C, h, w) logits -> (C, H, W) probabilities at the original size."""
        resized = F.interpolate(
            logits[None], size=tuple(size), mode="bilinear", align_corners=False
        )
        return torch.sigmoid(resized)[0].cpu().numpy()

    def finish(
        self,
        probabilities: np.ndarray,
        meta: ImageMeta | None = None,
        *,
        postprocess: bool = True,
        threshold: float | None = None,
        network_logits: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Segmentation:
        """(C, H, W) probabilities at original size -> masks, sides and measurements.

        ``postprocess`` keeps the two largest lung components and the largest heart component
        and fills their holes: a lung and a heart are each one piece without holes, so what it
        removes are the model's specks and gaps. ``threshold`` overrides the weights' lung
        threshold (for threshold tuning). ``network_logits`` (the lung logits at the network's
        size, and those of the zoomed-out second pass) add the quality signals and, with a
        calibrated quality model, ``estimated_dice``.
        """
        lungs = probabilities[0]
        cut = self.threshold if threshold is None else threshold
        raw = lungs > cut
        mask = postprocess_mask(raw) if postprocess else raw
        heart = None
        if self.has_heart:
            heart = self.heart_mask(probabilities[1], postprocess=postprocess)
        spacing = meta.pixel_spacing_mm if meta is not None else None
        sides = lung_labels(mask)
        measurements = _flag_film(measure_lungs(mask, spacing, heart=heart, sides=sides), meta)
        orientation = check_orientation(mask, heart)
        measurements = _add_reasons(measurements, orientation.reasons())
        signals = None
        if network_logits is not None:
            signals = quality_signals(
                *network_logits, raw, mask, implausible=measurements.quality != "ok"
            )
            if self.quality_model is not None:
                measurements = self._judge(measurements, signals)
        return Segmentation(
            mask=mask,
            probabilities=lungs,
            labels=sides,
            measurements=measurements,
            meta=meta,
            heart=heart,
            heart_probabilities=probabilities[1] if self.has_heart else None,
            quality_signals=signals,
        )

    def _judge(self, measurements: LungMeasurements, signals: dict[str, float]) -> LungMeasurements:
        """Add the estimated Dice, and flag the mask "check" when it is below the cut."""
        assert self.quality_model is not None
        estimate = round(self.quality_model.estimate(signals), 4)
        cut = self.quality_model.threshold
        low = [f"estimated Dice {estimate:.3f} below {cut:.3f}: the network is unsure of this mask"]
        judged = dataclasses.replace(measurements, estimated_dice=estimate)
        return _add_reasons(judged, low if estimate < cut else [])

    @property
    def quality_model(self) -> QualityModel | None:
        """The calibrated quality model the weights carry (``info.extra["quality_model"]``)."""
        values = self.info.extra.get("quality_model")
        return QualityModel.from_dict(values) if values else None

    def lung_mask(
        self, probabilities: np.ndarray, threshold: float | None = None, *, postprocess: bool = True
    ) -> np.ndarray:
        """(H, W) lung probabilities -> the bool lung mask (the weights' threshold by default)."""
        mask = probabilities > (self.threshold if threshold is None else threshold)
        return postprocess_mask(mask) if postprocess else mask

    def heart_mask(
        self, probabilities: np.ndarray, threshold: float | None = None, *, postprocess: bool = True
    ) -> np.ndarray:
        """(H, W) heart probabilities -> the bool heart mask (the weights' heart threshold by
        default; post-processing keeps its largest component and fills its holes)."""
        mask = probabilities > (self.heart_threshold if threshold is None else threshold)
        return postprocess_mask(mask, keep=1) if postprocess else mask

    def predict_many(
        self,
        inputs: Iterable[str | Path | np.ndarray],
        *,
        batch_size: int = 8,
        workers: int = 1,
        postprocess: bool = True,
        threshold: float | None = None,
        skip_failed: bool = False,
        quality: bool | None = None,
        fix_orientation: bool = False,
        progress: bool = False,
        desc: str = "predict",
    ) -> Iterator[Segmentation | FailedInput]:
        """Segment many X-rays, in input order: files (any format lungseg reads) or arrays.

        Args:
            inputs: file paths, or [0, 1] float arrays (H, W) of any sizes.
            batch_size: images per network call.
            workers: DataLoader processes that decode files (0: in this process; arrays are
                always prepared here, sending them to a worker would only copy them).
            postprocess, threshold: as in :meth:`finish`.
            skip_failed: yield a :class:`FailedInput` for a file that cannot be read instead
                of raising its error.
            quality: run the second, zoomed-out pass that gives the quality signals and
                ``estimated_dice`` (:mod:`lungseg.quality`); None: when the weights carry a
                calibrated quality model. It doubles the network's time per image.
            fix_orientation: segment a film that looks mirrored or upside down
                (:mod:`lungseg.orientation`) again the right way up, and say so in the
                result's reason; without it such a mask is only flagged "check".
            progress: show a progress bar (on a terminal).

        Raises:
            InvalidInputError: a file cannot be read (unless ``skip_failed``).
        """
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        inputs = list(inputs)
        if quality is None:
            quality = self.quality_model is not None
        any_file = any(not isinstance(item, np.ndarray) for item in inputs)
        loader = DataLoader(
            _DecodeDataset(inputs, self),
            batch_size=max(1, batch_size),
            num_workers=workers if any_file else 0,
            collate_fn=list,
        )
        options = {"postprocess": postprocess, "threshold": threshold}
        # What follows the network (resize back, threshold, post-processing, measurements,
        # quality signals; benchmarks/pipeline_stages.py times it) runs on a second thread,
        # overlapping the next batch's network call: OpenCV, numpy and torch release the GIL.
        # A batch's results are yielded while the next batch is in the network, so at most two
        # batches are in flight.
        waiting: deque[Future[Segmentation] | dict[str, Any]] = deque()
        bar = tqdm(total=len(inputs), desc=desc, unit="img", disable=None if progress else True)
        finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lungseg-finish")
        try:
            for items in loader:
                good = [item for item in items if "failed" not in item]
                finished = iter(
                    [
                        finisher.submit(
                            self._finish_decoded, *job, options, quality, fix_orientation
                        )
                        for job in self._network_jobs(good, quality)
                    ]
                )
                for item in items:
                    waiting.append(item if "failed" in item else next(finished))
                while len(waiting) > len(items):
                    yield self._settle(waiting.popleft(), skip_failed)
                    bar.update()
            while waiting:
                yield self._settle(waiting.popleft(), skip_failed)
                bar.update()
        finally:
            finisher.shutdown(cancel_futures=True)
            bar.close()

    @staticmethod
    def _settle(
        entry: Future[Segmentation] | dict[str, Any], skip_failed: bool
    ) -> Segmentation | FailedInput:
        """A finished result, or a decoding failure yielded (``skip_failed``) or raised."""
        if isinstance(entry, Future):
            return entry.result()  # re-raises what finishing raised, in input order
        if skip_failed:
            return entry["failed"]
        raise entry["failed"].error()

    def _network_jobs(
        self, items: list[dict[str, Any]], quality: bool
    ) -> list[tuple[dict[str, Any], torch.Tensor, torch.Tensor | None]]:
        """One network call (two passes with ``quality``) for decoded items: each item with its
        logits and its zoomed-out pass's (or None)."""
        if not items:
            return []
        logits, second = self._passes(torch.stack([item["input"] for item in items]), quality)
        second = second if second is not None else [None] * len(items)
        return list(zip(items, logits, second, strict=True))

    def _finish_decoded(
        self,
        item: dict[str, Any],
        logits: torch.Tensor,
        tta_logits: torch.Tensor | None,
        options: dict[str, Any],
        quality: bool,
        fix_orientation: bool = False,
    ) -> Segmentation:
        """:meth:`finish` for one decoded item from its logits; with ``fix_orientation`` a film
        found mirrored or upside down is segmented again the right way up, and its result
        flipped back onto the file's pixels."""
        result = self.finish(
            self.probabilities_at(logits, item["size"]),
            item["meta"],
            network_logits=None if tta_logits is None else (logits[0], tta_logits[0]),
            **options,
        )
        if fix_orientation:
            flip = check_orientation(result.mask, result.heart).flip
            if flip != "none":
                result = self._upright(item, flip, quality, options)
            if flip in THEN_MIRRORED and _upright_view(result, flip).mirrored:
                result = self._upright(item, THEN_MIRRORED[flip], quality, options)
        result.grey = item.get("grey")
        return result

    def _passes(
        self, batch: torch.Tensor, quality: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's logits and, with ``quality``, those of its zoomed-out copy mapped back.
        At the network's size both passes go through one call (a larger batch runs faster per
        image); a smaller :attr:`quality_pass_size` takes a second, cheaper call."""
        if not quality:
            return self.logits(batch), None
        size = (batch.shape[2], batch.shape[3])
        if self.quality_pass_size == size:
            both = self.logits(torch.cat([batch, zoomed_out(batch)]))
            return both[: len(batch)], zoomed_back(both[len(batch) :])
        second = self.logits(zoomed_out(batch, size=self.quality_pass_size))
        return self.logits(batch), zoomed_back(second, size=size)

    def _upright(
        self, item: dict[str, Any], flip: str, quality: bool, options: dict[str, Any]
    ) -> Segmentation:
        """Segment ``item``'s film flipped upright, then map the masks back onto its pixels.

        Sides are labelled on the upright film (so the patient's right lung is named right),
        the result says what was corrected, and it is flagged "check" if even the upright
        film still looks wrong.
        """
        upright = torch.from_numpy(apply_flip(item["input"].numpy(), flip).copy())[None]
        logits, tta = self._passes(upright, quality)
        result = self.finish(
            self.probabilities_at(logits[0], item["size"]),
            item["meta"],
            network_logits=None if tta is None else (logits[0, 0], tta[0, 0]),
            **options,
        )
        note = f"orientation corrected ({FLIP_NAMES[flip]}) before segmenting"
        reason = f"{note}; {result.measurements.reason}" if result.measurements.reason else note
        back = {
            name: np.ascontiguousarray(apply_flip(getattr(result, name), flip))
            for name in ("mask", "probabilities", "labels")
        }
        for name in ("heart", "heart_probabilities"):
            if getattr(result, name) is not None:
                back[name] = np.ascontiguousarray(apply_flip(getattr(result, name), flip))
        measurements = dataclasses.replace(result.measurements, reason=reason)
        return dataclasses.replace(result, measurements=measurements, **back)

    def predict_arrays(
        self, images: Sequence[np.ndarray], *, postprocess: bool = True
    ) -> list[Segmentation]:
        """Segment several [0, 1] float images of any sizes in one batch."""
        return list(  # type: ignore[arg-type]
            self.predict_many(images, batch_size=len(images), postprocess=postprocess)
        )

    def __call__(
        self,
        image: str | os.PathLike | np.ndarray | torch.Tensor | Image.Image,
        *,
        meta: ImageMeta | None = None,
        postprocess: bool = True,
        fix_orientation: bool = False,
    ) -> Segmentation:
        """Segment one X-ray: a file path (any format lungseg reads) or an image in memory.

        In memory, :func:`~lungseg.data.io.as_grey_image` takes a numpy array or torch tensor
        (H, W), (1, H, W), RGB (H, W, 3) or RGBA (H, W, 4), or a PIL image, and scales it as a
        file would be: unsigned integers by their type's maximum (uint8 / 255, uint16 / 65535),
        signed integers min-max, floats in [0, 1] kept (others min-max); colour becomes grey by
        luminance. For such an input, ``meta`` (e.g. from
        :func:`~lungseg.data.io.read_image_bytes`) supplies the pixel spacing, hence areas in
        cm2; a file states its own.

        Raises:
            InvalidInputError: a file that cannot be read.
            LungsegError: an input of another type or shape (1-D, 4-D, colour-first
                (3, H, W)), NaN values, or under 16 pixels a side; the message says what is
                accepted.
        """
        if isinstance(image, (str, os.PathLike)):
            (result,) = self.predict_many(
                [image],
                batch_size=1,
                workers=0,
                postprocess=postprocess,
                fix_orientation=fix_orientation,
            )
            return result  # type: ignore[return-value]
        pixels = as_grey_image(image)
        item = {"input": self.prepare(pixels), "size": pixels.shape[:2], "meta": meta}
        quality = self.quality_model is not None
        (job,) = self._network_jobs([item], quality)
        options = {"postprocess": postprocess, "threshold": None}
        return self._finish_decoded(*job, options, quality, fix_orientation)
