"""A PyTorch dataset of X-ray/mask pairs at the network's input size.

Each sample is read with :mod:`lungseg.data.io`, resized with the shared
:func:`~lungseg.data.transforms.resize_image`, optionally augmented on the [0, 1] image, then
z-scored with :func:`~lungseg.data.transforms.normalize`, exactly the path inference takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from lungseg.data.discovery import Pair
from lungseg.data.io import read_image
from lungseg.data.masks import MASK_PROBLEMS, read_masks
from lungseg.data.transforms import lung_fraction, normalize, resize_image, resize_mask
from lungseg.errors import LungsegError


@dataclass(frozen=True)
class _Resized:
    """One pair at the network size, as kept in the cache."""

    image: np.ndarray  # float16 (h, w) in [0, 1]
    mask: np.ndarray  # bool (h, w); float16 lung fraction with soft_masks
    heart: np.ndarray | None  # as mask; None when the pair has no heart label (or not asked)
    original_size: tuple[int, int]  # (H, W) of the file


class SegmentationDataset(Dataset):
    """X-ray/mask pairs as normalised tensors at a fixed size.

    With ``cache=True`` each pair is decoded and resized once, then kept in memory: decoding a
    PNG and area-resizing it costs more than a CPU training step of a small network, so
    re-decoding every epoch would dominate training time. The cache holds the image as float16
    (exact enough for 8-bit sources and half the memory of float32) and the mask as bool:
    about ``3 * N * h * w`` bytes, e.g. 140 MB for 704 pairs at 256x256. Each DataLoader worker
    fills its own copy, so with ``num_workers > 0`` use ``persistent_workers=True`` or the cache
    is rebuilt every epoch. Images always pass through float16, cached or not, so ``cache``
    never changes a sample.

    Augmentation draws its seed from torch's random generator for every sample. DataLoader seeds
    that generator per worker from ``torch.initial_seed()``, so a run is reproducible after
    ``torch.manual_seed`` and workers do not repeat each other's augmentations.

    Args:
        pairs: the pairs to serve, e.g. ``select(discover(root).pairs, split, "train")``.
        size: network input (height, width).
        augment: apply :func:`~lungseg.data.augment.train_augmentation` (training only).
        augmentation: its kind, ``"basic"`` or ``"hospital"``.
        cache: keep resized pairs in memory after their first read.
        soft_masks: serve each pixel's lung fraction
            (:func:`~lungseg.data.transforms.lung_fraction`) instead of the mask cut at 0.5.
        heart: also serve the heart mask of pairs that have one; the geometry moves it with
            the lungs.

    Each item is a dict: ``image`` float32 (1, h, w) z-scored; ``mask`` float32 (1, h, w) in
    {0, 1} (in [0, 1] with ``soft_masks``); ``id`` and ``source`` strings; ``original_size``
    int64 tensor ``[H, W]``. With ``heart=True`` also ``heart``, float32 (1, h, w) like ``mask``
    (zeros where there is no label), and ``has_heart``, a bool tensor saying which.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        size: tuple[int, int],
        *,
        augment: bool = False,
        augmentation: str = "basic",
        cache: bool = True,
        soft_masks: bool = False,
        heart: bool = False,
    ) -> None:
        if not pairs:
            raise LungsegError("cannot build a dataset from no pairs")
        self.pairs = list(pairs)
        self.size = (int(size[0]), int(size[1]))
        self.augment = augment
        self.cache = cache
        self.soft_masks = soft_masks
        self.heart = heart
        if augment:
            from lungseg.data.augment import train_augmentation

            self._augmentation = train_augmentation(augmentation, soft_masks)
        else:
            self._augmentation = None
        self._cached: dict[int, _Resized] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, object]:
        pair = self.pairs[index]
        resized = self._resized(index)
        image = resized.image.astype(np.float32)
        # Lungs and heart as channels of one mask, so every geometric transform moves both.
        heart = resized.heart if resized.heart is not None else np.zeros_like(resized.mask)
        masks = np.stack([resized.mask, heart], axis=-1) if self.heart else resized.mask[..., None]
        if self._augmentation is not None:
            self._augmentation.set_random_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
            augmented = self._augmentation(
                image=image, mask=masks.astype(np.float32 if self.soft_masks else np.uint8)
            )
            image = np.clip(augmented["image"], 0.0, 1.0)
            masks = augmented["mask"].reshape(masks.shape)
            masks = np.clip(masks, 0.0, 1.0) if self.soft_masks else masks > 0
        channels = torch.from_numpy(
            np.ascontiguousarray(masks.astype(np.float32).transpose(2, 0, 1))
        )
        item: dict[str, object] = {
            "image": torch.from_numpy(normalize(image))[None],  # (1, h, w)
            "mask": channels[:1],  # (1, h, w)
            "id": pair.id,
            "source": pair.source,
            "original_size": torch.tensor(resized.original_size),
        }
        if self.heart:
            item["heart"] = channels[1:]
            item["has_heart"] = torch.tensor(resized.heart is not None)
        return item

    def preload(self, progress: bool = False) -> None:
        """Decode and resize every pair now, in this process.

        DataLoader workers forked afterwards inherit the filled cache (copy-on-write), so a
        loader created per epoch never decodes a PNG again.
        """
        from tqdm import tqdm

        for index in tqdm(
            range(len(self)), desc="load", unit="img", disable=None if progress else True
        ):
            self._resized(index)

    def _resized(self, index: int) -> _Resized:
        if index in self._cached:
            return self._cached[index]
        pair = self.pairs[index]
        image, meta = read_image(pair.image)
        # A training target must be a lung mask: empty, full or grey masks are refused by name.
        mask = read_masks(
            pair.masks,
            image_path=pair.image,
            image_size=(meta.height, meta.width),
            refuse=MASK_PROBLEMS,
        )
        heart = None
        if self.heart and pair.heart is not None:
            heart = read_masks(
                (pair.heart,),
                image_path=pair.image,
                image_size=(meta.height, meta.width),
                refuse=MASK_PROBLEMS,
            )
        resized = _Resized(
            resize_image(image, self.size).astype(np.float16),
            self._resize_target(mask),
            None if heart is None else self._resize_target(heart),
            (meta.height, meta.width),
        )
        if self.cache:
            self._cached[index] = resized
        return resized

    def _resize_target(self, mask: np.ndarray) -> np.ndarray:
        if self.soft_masks:
            return lung_fraction(mask, self.size).astype(np.float16)
        return resize_mask(mask, self.size)


def load_full_mask(pair: Pair) -> np.ndarray:
    """A pair's mask at the image's own resolution, left/right masks merged: bool (H, W).

    Evaluation compares predictions with this, not with the resized training mask, so metrics
    are those of the original image. An empty or full mask is returned as it is (its scores are
    defined, see :mod:`lungseg.metrics`); a non-binary one is refused, since thresholding a
    probability map would invent a ground truth.

    Raises:
        InvalidInputError: a file cannot be read, or a mask is not binary.
        MaskMismatchError: a mask's size differs from its image's.
    """
    return read_masks(pair.masks, image_path=pair.image, refuse=("non_binary_mask",))
