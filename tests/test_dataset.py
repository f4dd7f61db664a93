"""lungseg.data.transforms and lungseg.data.dataset: shapes, normalisation, aligned augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lungseg.data.dataset import SegmentationDataset, load_full_mask
from lungseg.data.discovery import Pair, discover, load_split, select
from lungseg.data.transforms import preprocess, resize_mask
from lungseg.errors import LungsegError, MaskMismatchError

SIZE = (32, 48)


def blob_image(h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    """Two bright 'lungs' (0.8) on a dark background (0.2), with a little texture."""
    rng = np.random.default_rng(seed)
    image = np.full((h, w), 0.2)
    image[h // 5 : 4 * h // 5, w // 8 : 3 * w // 8] = 0.8
    image[h // 5 : 4 * h // 5, 5 * w // 8 : 7 * w // 8] = 0.8
    return np.clip(image + rng.normal(0, 0.02, (h, w)), 0, 1)


def write_pair(root: Path, stem: str, image: np.ndarray, mask: np.ndarray) -> None:
    for folder, pixels in (("images", image), ("masks", mask)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / folder / f"{stem}.png")


@pytest.fixture
def pairs(tmp_path) -> list[Pair]:
    for i in range(3):
        image = blob_image(seed=i)
        write_pair(
            tmp_path / "site",
            f"p{i}",
            (image * 255).round().astype(np.uint8),
            (image > 0.5).astype(np.uint8) * 255,
        )
    return discover(tmp_path / "site").pairs


# --- transforms -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(32, 40), (128, 160), (64, 80), (100, 30)])
def test_preprocess_shape_and_zscore(size):
    out = preprocess(blob_image(), size)
    assert out.shape == size and out.dtype == np.float32
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3


@pytest.mark.parametrize("size", [(20, 20), (16, 16)])
def test_preprocess_blank_image_stays_near_zero(size):
    # no division blow-up: resizing leaves float rounding noise (~1e-8) that eps must swamp
    out = preprocess(np.full((20, 20), 0.7, np.float32), size)
    assert np.abs(out).max() < 0.2


def test_resize_mask_keeps_area_and_is_bool():
    mask = blob_image() > 0.5
    for size in [(32, 40), (128, 160)]:
        resized = resize_mask(mask, size)
        assert resized.dtype == bool and resized.shape == size
        assert abs(resized.mean() - mask.mean()) < 0.02


# --- dataset ----------------------------------------------------------------------------------


def test_item_shapes_dtypes_and_normalisation(pairs):
    dataset = SegmentationDataset(pairs, SIZE)
    assert len(dataset) == 3
    item = dataset[1]
    assert item["image"].shape == (1, *SIZE) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, *SIZE) and item["mask"].dtype == torch.float32
    assert abs(item["image"].mean().item()) < 1e-3 and abs(item["image"].std().item() - 1) < 1e-2
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert (item["id"], item["source"]) == ("site/p1", "site")
    assert item["original_size"].tolist() == [64, 80]
    # the image's bright half is where the mask says lung
    assert (item["image"][item["mask"] > 0] > 0).float().mean() > 0.95


def test_cache_changes_nothing_but_speed(pairs):
    cached, uncached = (
        SegmentationDataset(pairs, SIZE),
        SegmentationDataset(pairs, SIZE, cache=False),
    )
    first = cached[0]
    for _ in range(2):
        assert torch.equal(cached[0]["image"], first["image"])
        assert torch.equal(uncached[0]["image"], first["image"])
    assert len(cached._cached) == 1 and not uncached._cached


def test_augmentation_changes_image_but_keeps_mask_aligned(pairs):
    plain = SegmentationDataset(pairs, SIZE)[0]["image"]
    dataset = SegmentationDataset(pairs, SIZE, augment=True)
    torch.manual_seed(0)
    changed = 0
    for _ in range(12):
        item = dataset[0]
        image, mask = item["image"][0], item["mask"][0] > 0
        changed += not torch.allclose(image, plain, atol=1e-3)
        threshold = (image[mask].mean() + image[~mask].mean()) / 2
        agreement = ((image > threshold) == mask).float().mean().item()
        assert agreement > 0.95
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert changed >= 8


def test_augmentation_reproducible_from_torch_seed(pairs):
    dataset = SegmentationDataset(pairs, SIZE, augment=True)
    draws = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        draws.append(torch.stack([dataset[i]["image"] for i in range(3)]))
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])


def test_picklable_and_reproducible_with_workers(pairs):
    dataset = pickle.loads(pickle.dumps(SegmentationDataset(pairs, SIZE, augment=True)))

    def epoch() -> torch.Tensor:
        torch.manual_seed(3)
        loader = DataLoader(dataset, batch_size=3, num_workers=1)
        return next(iter(loader))["image"]

    assert torch.equal(epoch(), epoch())


def test_montgomery_masks_are_merged(tmp_path):
    root = tmp_path / "mont"
    left, right = np.zeros((64, 80), np.uint8), np.zeros((64, 80), np.uint8)
    left[10:50, 5:30], right[10:50, 50:75] = 255, 255
    Image.fromarray((blob_image() * 255).astype(np.uint8)).save(_mkdir(root / "CXR_png") / "m.png")
    Image.fromarray(left).save(_mkdir(root / "ManualMask" / "leftMask") / "m.png")
    Image.fromarray(right).save(_mkdir(root / "ManualMask" / "rightMask") / "m.png")
    (pair,) = discover(root).pairs
    full = load_full_mask(pair)
    assert full.shape == (64, 80) and full.sum() == 2 * 40 * 25
    mask = SegmentationDataset([pair], SIZE)[0]["mask"][0]
    assert abs(mask.mean().item() - full.mean()) < 0.02


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def test_mask_of_wrong_size_is_refused(tmp_path):
    write_pair(tmp_path / "s", "a", np.zeros((64, 80), np.uint8), np.zeros((60, 80), np.uint8))
    (pair,) = discover(tmp_path / "s").pairs
    with pytest.raises(MaskMismatchError, match="a.png"):
        SegmentationDataset([pair], SIZE)[0]
    with pytest.raises(MaskMismatchError):
        load_full_mask(pair)


def test_no_pairs_is_an_error():
    with pytest.raises(LungsegError, match="no pairs"):
        SegmentationDataset([], SIZE)


@pytest.mark.data
def test_real_pairs(data_root, split_file):
    pairs = select(discover(data_root).pairs, load_split(split_file), "train")[:2]
    item = SegmentationDataset(pairs, (256, 256))[1]
    assert item["image"].shape == (1, 256, 256) and item["original_size"].tolist() == [512, 512]
    assert 0.1 < item["mask"].mean().item() < 0.45  # lungs cover about a quarter of a chest film
    assert load_full_mask(pairs[1]).shape == (512, 512)


# --- soft masks (lung fraction per pixel) on real X-rays ----------------------------------------


def test_soft_masks_keep_the_boundary_that_binary_masks_cut(test_split_pairs):
    pairs = test_split_pairs[:2]  # a Montgomery and a Shenzhen X-ray at 512x512
    binary = SegmentationDataset(pairs, (128, 128))
    soft = SegmentationDataset(pairs, (128, 128), soft_masks=True)
    for i, pair in enumerate(pairs):
        hard, fraction = binary[i]["mask"][0], soft[i]["mask"][0]
        assert fraction.dtype == torch.float32 and fraction.min() >= 0 and fraction.max() <= 1
        border = (fraction > 0.01) & (fraction < 0.99)
        assert border.sum() > 200, "a 4x shrink leaves partly covered pixels along both lungs"
        # cut at 0.5 it is the binary mask (float16 may flip a pixel lying exactly at 0.5)
        assert ((fraction >= 0.5) == (hard > 0)).float().mean() > 0.999
        # and it keeps the lung area that cutting at 0.5 rounds away
        full = load_full_mask(pair)
        assert abs(fraction.mean().item() - full.mean()) < abs(hard.mean().item() - full.mean())


def test_augmented_soft_masks_stay_fractions_aligned_with_the_image(test_split_pairs):
    dataset = SegmentationDataset(test_split_pairs[:1], (128, 128), augment=True, soft_masks=True)
    plain = SegmentationDataset(test_split_pairs[:1], (128, 128), soft_masks=True)[0]["mask"][0]
    torch.manual_seed(0)
    moved = 0
    for _ in range(6):
        mask = dataset[0]["mask"][0]
        assert mask.min() >= 0 and mask.max() <= 1
        assert ((mask > 0.01) & (mask < 0.99)).sum() > 200  # still fractions, not cut to {0, 1}
        moved += not torch.allclose(mask, plain)
    assert moved >= 3
