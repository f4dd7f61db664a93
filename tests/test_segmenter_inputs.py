"""``Segmenter.__call__`` takes what people hand it, and refuses the rest in words.

Every accepted form of one real X-ray (a test image of the paper split) gives the shipped
model's mask for the file itself; every refused form raises :class:`LungsegError` saying what
is expected. The scaling rules themselves are tested against files in ``tests/test_io.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lungseg.errors import LungsegError
from lungseg.inference import Segmentation, Segmenter
from lungseg.metrics import dice

pytestmark = pytest.mark.data

MIN_DICE = 0.999


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_pretrained()


@pytest.fixture(scope="module")
def xray(test_split_pairs) -> Path:
    """A Montgomery test X-ray: 512x512 8-bit grey, levels 0 to 255."""
    return test_split_pairs[0].image


@pytest.fixture(scope="module")
def grey(xray: Path) -> np.ndarray:
    pixels = np.asarray(Image.open(xray))
    assert pixels.dtype == np.uint8 and pixels.ndim == 2
    assert (pixels.min(), pixels.max()) == (0, 255)  # so min-max scaling equals / 255
    return pixels


@pytest.fixture(scope="module")
def from_path(segmenter: Segmenter, xray: Path) -> Segmentation:
    return segmenter(xray)


def _rgb(g: np.ndarray) -> np.ndarray:
    return np.stack([g, g, g], axis=-1)


ACCEPTED: dict[str, Callable[[np.ndarray, Path], object]] = {
    "str path": lambda g, path: str(path),
    "uint8 (H, W)": lambda g, path: g,
    "uint16 (H, W)": lambda g, path: g.astype(np.uint16) * 257,  # / 65535, as a 16-bit file
    "uint32 (H, W)": lambda g, path: g.astype(np.uint32) * 16843009,  # (2**32 - 1) / 255
    "int16 (H, W)": lambda g, path: g.astype(np.int16) - 100,  # signed: min-max
    "int64 (H, W)": lambda g, path: g.astype(np.int64),
    "float32 [0, 1]": lambda g, path: g.astype(np.float32) / 255,
    "float64 [0, 1]": lambda g, path: g / 255.0,
    "float16 [0, 1]": lambda g, path: (g / 255.0).astype(np.float16),
    "float32 0-255": lambda g, path: g.astype(np.float32),  # outside [0, 1]: min-max
    "non-contiguous": lambda g, path: np.asfortranarray(g),
    "(1, H, W)": lambda g, path: g[None],
    "(H, W, 1)": lambda g, path: g[..., None],
    "RGB uint8": lambda g, path: _rgb(g),
    "RGBA uint8": lambda g, path: np.dstack([_rgb(g), np.full_like(g, 255)]),
    "RGB float": lambda g, path: _rgb(g) / 255.0,
    "PIL L": lambda g, path: Image.fromarray(g),
    "PIL RGB": lambda g, path: Image.fromarray(_rgb(g)),
    "PIL RGBA": lambda g, path: Image.fromarray(_rgb(g)).convert("RGBA"),
    "PIL I;16": lambda g, path: Image.fromarray(g.astype(np.uint16) * 257),
    "PIL F": lambda g, path: Image.fromarray(g.astype(np.float32) / 255),
    "PIL opened": lambda g, path: Image.open(path),
    "torch uint8 (H, W)": lambda g, path: torch.from_numpy(g.copy()),
    "torch float (1, H, W)": lambda g, path: torch.from_numpy(g / 255.0).float()[None],
    "torch bfloat16": lambda g, path: torch.from_numpy(g / 255.0).to(torch.bfloat16),
    "torch RGB (H, W, 3)": lambda g, path: torch.from_numpy(_rgb(g)),
    "torch requires_grad": lambda g, path: torch.tensor(g / 255.0, requires_grad=True),
}


@pytest.mark.parametrize("make", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_input_gives_the_files_mask(segmenter, xray, grey, from_path, make):
    result = segmenter(make(grey, xray))
    assert result.mask.shape == grey.shape and result.mask.dtype == bool
    assert dice(result.mask, from_path.mask) >= MIN_DICE
    assert from_path.mask.mean() > 0.1  # the comparison is about real lungs


def test_array_meta_gives_areas_in_cm2(segmenter, grey, from_path):
    from lungseg.data.io import ImageMeta

    meta = ImageMeta("upload.png", *grey.shape, 8, (0.5, 0.5), "png")
    result = segmenter(grey, meta=meta)
    assert result.meta is meta
    assert result.measurements.area_cm2 == pytest.approx(result.mask.sum() * 0.25 / 100, rel=1e-3)
    assert from_path.measurements.area_cm2 is None  # the PNG states no spacing


REFUSED: dict[str, tuple[Callable[[np.ndarray], object], str]] = {
    "1-D": (lambda g: g.ravel(), "1-D array of shape (262144,)"),
    "4-D batch": (lambda g: g[None, None], "4-D array of shape (1, 1, 512, 512)"),
    "(3, H, W) colour-first": (lambda g: np.stack([g, g, g]), "colour-first (C, H, W)"),
    "torch (3, H, W)": (lambda g: torch.from_numpy(np.stack([g, g, g])), "colour-first"),
    "torch 4-D": (lambda g: torch.zeros(2, 1, 64, 64), "4-D array of shape (2, 1, 64, 64)"),
    "(H, W, 5)": (lambda g: np.dstack([g] * 5), "3-D array of shape (512, 512, 5)"),
    "NaN-only": (lambda g: np.full(g.shape, np.nan, np.float32), "NaN or infinite"),
    "one NaN": (lambda g: np.where(g == g[0, 0], np.nan, g / 255.0), "NaN or infinite"),
    "infinity": (lambda g: np.where(g > 200, np.inf, g / 255.0), "NaN or infinite"),
    "15 px high": (lambda g: g[:15], "image is 512x15 pixels (WxH); at least 16 pixels"),
    "15 px wide PIL": (lambda g: Image.fromarray(g[:, :15]), "image is 15x512 pixels"),
    "empty array": (lambda g: np.zeros((0, 0), np.uint8), "image is 0x0 pixels"),
    "complex": (lambda g: g.astype(np.complex64), "complex64 pixels"),
    "strings": (lambda g: g.astype(str), "pixels must be bool, integer or float"),
    "bytes": (lambda g: g.tobytes(), "read_image_bytes"),
    "nested list": (lambda g: g[:20, :20].tolist(), "np.asarray"),
    "None": (lambda g: None, "an input of type NoneType is not an image"),
    "dict": (lambda g: {"image": g}, "an input of type dict is not an image"),
}


@pytest.mark.parametrize(("make", "says"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_input_says_what_is_expected(segmenter, grey, make, says):
    with pytest.raises(LungsegError) as caught:
        segmenter(make(grey))
    message = str(caught.value)
    assert says in message
    assert "\n" not in message
    # each message states the accepted forms, the accepted values or the smallest size
    assert any(
        part in message for part in ("grey image (H, W)", "finite floats", "at least 16 pixels")
    )


def test_a_missing_path_is_still_an_input_error(segmenter, tmp_path):
    from lungseg.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="file not found"):
        segmenter(tmp_path / "missing.png")
