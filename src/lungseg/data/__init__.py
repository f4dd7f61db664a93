"""Reading X-rays and masks, finding pairs on disk, and serving them to training.

* :mod:`lungseg.data.io`: any image file (or array, tensor, PIL image) to float32 [0, 1] plus
  :class:`ImageMeta`; which files are images.
* :mod:`lungseg.data.masks`: mask files to bool, and the rules a lung mask must pass.
* :mod:`lungseg.data.discovery`: image/mask pairs in known folder layouts, split files.
* :mod:`lungseg.data.transforms`: the shared preprocessing and the training augmentation.
* :mod:`lungseg.data.dataset`: the PyTorch dataset (imports torch, so it is not re-exported).
"""

from __future__ import annotations

from lungseg.data.discovery import Discovery, Pair, Problem, discover, load_split, select
from lungseg.data.io import ImageMeta, as_grey_image, read_image, read_image_bytes
from lungseg.data.masks import read_mask, read_masks

__all__ = [
    "Discovery",
    "ImageMeta",
    "Pair",
    "Problem",
    "as_grey_image",
    "discover",
    "load_split",
    "read_image",
    "read_image_bytes",
    "read_mask",
    "read_masks",
    "select",
]
