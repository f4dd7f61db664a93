"""Reading X-rays and masks, finding pairs on disk, and serving them to training.

* :mod:`lungseg.data.io`: any image file to float32 [0, 1] plus :class:`ImageMeta`; masks.
* :mod:`lungseg.data.discovery`: image/mask pairs in known folder layouts, split files.
* :mod:`lungseg.data.transforms`: the shared preprocessing and the training augmentation.
* :mod:`lungseg.data.dataset`: the PyTorch dataset (imports torch, so it is not re-exported).
"""

from __future__ import annotations

from lungseg.data.discovery import Discovery, Pair, Problem, discover, load_split, select
from lungseg.data.io import ImageMeta, read_image, read_image_bytes, read_mask, read_masks

__all__ = [
    "Discovery",
    "ImageMeta",
    "Pair",
    "Problem",
    "discover",
    "load_split",
    "read_image",
    "read_image_bytes",
    "read_mask",
    "read_masks",
    "select",
]
