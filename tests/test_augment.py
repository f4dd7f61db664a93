"""lungseg.data.augment: every transform of both sets keeps image and mask aligned.

A known asymmetric shape is drawn into the image and the mask alike; each transform is applied
alone (always on). Geometric ones must move the mask exactly as they move the shape; the others
must leave the mask untouched while changing the image.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from lungseg.data.augment import BurnedInText, train_augmentation

GEOMETRIC = (A.Affine, A.CropAndPad)
SIZE = 128


def known_shape() -> np.ndarray:
    """An L (bright, 0.85) and a square (0.85) on a 0.15 background: no symmetry to hide in."""
    shape = np.zeros((SIZE, SIZE), dtype=bool)
    shape[20:100, 20:40] = True
    shape[80:100, 20:70] = True
    shape[30:60, 80:110] = True
    return shape


def leaves(transforms) -> list:
    """The transforms of a Compose, with every OneOf opened up."""
    found = []
    for transform in transforms:
        if isinstance(transform, A.OneOf):
            found += leaves(transform.transforms)
        else:
            found.append(transform)
    return found


def alone(transform, seed: int) -> A.Compose:
    transform.p = 1.0
    compose = A.Compose([transform])
    compose.set_random_seed(seed)
    return compose


@pytest.mark.parametrize("kind", ["basic", "hospital"])
def test_every_transform_keeps_image_and_mask_aligned(kind: str) -> None:
    shape = known_shape()
    image = np.where(shape, 0.85, 0.15).astype(np.float32)
    transforms = leaves(train_augmentation(kind).transforms)
    assert len(transforms) >= (4 if kind == "basic" else 11)
    for transform in transforms:
        name = type(transform).__name__
        for seed in range(4):
            out = alone(transform, seed)(image=image, mask=shape.astype(np.uint8))
            moved_image, moved_mask = out["image"], out["mask"].astype(bool)
            assert moved_image.shape == moved_mask.shape == (SIZE, SIZE), name
            if isinstance(transform, GEOMETRIC):
                bright = moved_image > 0.5
                overlap = 2 * (bright & moved_mask).sum() / (bright.sum() + moved_mask.sum())
                assert overlap > 0.99, (name, seed, overlap)
            else:
                assert np.array_equal(moved_mask, shape), (name, seed)
                assert not np.allclose(moved_image, image, atol=1e-4), (name, seed)


def test_geometry_really_moves_the_shape() -> None:
    """The alignment test above would pass for a transform that does nothing; this one not."""
    shape = known_shape()
    affine = next(t for t in train_augmentation("hospital").transforms if isinstance(t, A.Affine))
    moved = [
        alone(affine, seed)(image=shape.astype(np.float32), mask=shape.astype(np.uint8))["mask"]
        for seed in range(4)
    ]
    assert all(not np.array_equal(m.astype(bool), shape) for m in moved)


def test_burned_in_text_is_white_near_an_edge_and_reproducible() -> None:
    image = np.full((SIZE, SIZE), 0.3, dtype=np.float32)
    first = alone(BurnedInText(), 7)(image=image)["image"]
    again = alone(BurnedInText(), 7)(image=image)["image"]
    assert np.array_equal(first, again)
    changed = np.argwhere(first != image)
    assert len(changed) > 0 and first.max() > 0.75
    assert first.dtype == np.float32 and first.min() >= 0.3  # text only brightens
    rows = changed[:, 0]
    assert ((rows < SIZE // 6 + 30) | (rows > SIZE - SIZE // 6 - 30)).all()


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown augmentation 'strong'"):
        train_augmentation("strong")
