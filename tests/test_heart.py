"""The heart channel and the cardiothoracic ratio: definition, data, loss, training, outputs.

The CTR definition is checked against the expert CTRs of Wingspan's manifest with the manual
masks; the masked loss must ignore images without a heart label; a run with ``heart=true``
learns a second channel; and lungs-only weights written before the heart channel still load
and predict, with no heart and no CTR.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from lungseg.data.dataset import SegmentationDataset
from lungseg.data.discovery import discover
from lungseg.data.masks import read_mask
from lungseg.evaluate import PairPrediction, tune_heart_threshold
from lungseg.inference import Segmenter
from lungseg.losses import build_loss
from lungseg.measure import cardiothoracic_extents, measure_lungs
from lungseg.models import create_model
from lungseg.weights import LABELS_WITH_HEART, WeightsInfo, load_weights, save_weights


def two_lungs_and_heart() -> tuple[np.ndarray, np.ndarray]:
    lungs = np.zeros((100, 120), dtype=bool)
    lungs[20:80, 10:50] = True  # patient's right lung, columns 10..49
    lungs[20:80, 70:115] = True  # left lung, columns 70..114
    heart = np.zeros_like(lungs)
    heart[50:85, 40:90] = True  # columns 40..89, widest on every row
    return lungs, heart


def test_ctr_is_heart_extent_over_the_lungs_outer_extent() -> None:
    lungs, heart = two_lungs_and_heart()
    extents = cardiothoracic_extents(heart, lungs)
    assert extents is not None
    assert extents.heart_columns == (40, 89) and extents.thorax_columns == (10, 114)
    assert extents.ctr == pytest.approx(50 / 105)
    assert 50 <= extents.heart_row < 85 and 20 <= extents.thorax_row < 80
    measured = measure_lungs(lungs, (0.5, 0.5), heart=heart)
    assert measured.ctr == round(50 / 105, 4) and measured.cardiomegaly is False
    assert measured.heart_area_px == heart.sum()
    assert measured.heart_area_cm2 == pytest.approx(heart.sum() * 0.0025)


def test_ctr_is_none_without_a_heart_or_a_lung() -> None:
    lungs, heart = two_lungs_and_heart()
    one_lung = lungs.copy()
    one_lung[:, 60:] = False
    assert cardiothoracic_extents(np.zeros_like(heart), lungs) is None
    assert cardiothoracic_extents(heart, one_lung) is None
    empty = measure_lungs(lungs, heart=np.zeros_like(heart))
    assert (empty.heart_area_px, empty.ctr, empty.cardiomegaly) == (0, None, None)
    lungs_only = measure_lungs(lungs)
    assert (lungs_only.heart_area_px, lungs_only.ctr, lungs_only.cardiomegaly) == (None,) * 3


@pytest.mark.data
def test_ctr_of_the_manual_masks_reproduces_the_expert_ctr(data_root: Path) -> None:
    folder = data_root / "wingspan"
    rows = [r for r in json.loads((folder / "manifest.json").read_text()) if r["ctr"] is not None]
    assert len(rows) >= 220
    errors = []
    for row in rows:
        heart = read_mask(folder / "heart" / f"{row['id']}.png")
        lungs = read_mask(folder / "masks" / f"{row['id']}.png")
        extents = cardiothoracic_extents(heart, lungs)
        assert extents is not None, row["id"]
        errors.append(abs(extents.ctr - row["ctr"]))
    # The expert measured the full-size films; these masks are 512x512 copies of them.
    assert np.mean(errors) <= 0.002, np.mean(errors)
    assert np.max(errors) <= 0.006, np.max(errors)


def test_masked_heart_loss_ignores_images_without_a_heart_label() -> None:
    torch.manual_seed(0)
    loss_fn = build_loss("bce+dice")
    logits = torch.randn(4, 2, 16, 16, requires_grad=True)
    target = (torch.rand(4, 2, 16, 16) > 0.5).float()
    labelled = torch.tensor([[True, True], [True, False], [True, True], [True, False]])
    loss = loss_fn(logits, target, labelled)
    loss.backward()
    assert logits.grad is not None
    # No gradient reaches the heart logits of the two unlabelled images ...
    assert torch.count_nonzero(logits.grad[[1, 3], 1]) == 0
    assert torch.count_nonzero(logits.grad[[0, 2], 1]) > 0
    # ... and the loss equals the lungs' on all images plus the heart's on the labelled ones.
    lungs = loss_fn(logits[:, :1], target[:, :1])
    heart = loss_fn(logits[[0, 2], 1:], target[[0, 2], 1:])
    assert loss.item() == pytest.approx((lungs + heart).item(), rel=1e-6)
    # No heart label anywhere: the heart adds nothing at all.
    none = torch.tensor([[True, False]] * 4)
    assert loss_fn(logits, target, none).item() == pytest.approx(lungs.item(), rel=1e-6)


def write_synthetic_source(root: Path, with_heart: tuple[str, ...]) -> None:
    """Three 96x96 'X-rays' with lung masks; heart masks (a copy of the lungs) for some."""
    for sub in ("images", "masks", "heart"):
        (root / sub).mkdir(parents=True)
    lungs, _ = two_lungs_and_heart()
    lungs = np.array(Image.fromarray(lungs).resize((96, 96)))
    for stem in ("a", "b", "c"):
        rng = np.random.default_rng(len(stem) + ord(stem))
        image = (rng.random((96, 96)) * 80 + lungs * 120).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(lungs.astype(np.uint8) * 255).save(root / "masks" / f"{stem}.png")
        if stem in with_heart:
            Image.fromarray(lungs.astype(np.uint8) * 255).save(root / "heart" / f"{stem}.png")


def test_heart_masks_are_found_and_move_with_the_lungs(tmp_path: Path) -> None:
    write_synthetic_source(tmp_path / "src", with_heart=("a", "c"))
    pairs = discover(tmp_path / "src").pairs
    assert [p.heart is not None for p in pairs] == [True, False, True]
    dataset = SegmentationDataset(
        pairs, (64, 64), augment=True, augmentation="hospital", heart=True
    )
    for index in range(len(pairs)):
        for seed in range(4):
            torch.manual_seed(seed)
            item = dataset[index]
            assert item["mask"].shape == item["heart"].shape == (1, 64, 64)
            if item["has_heart"]:  # the heart mask is the lung mask here: they stay equal
                assert torch.equal(item["heart"], item["mask"])
            else:
                assert item["heart"].sum() == 0


def tiny_heart_segmenter() -> Segmenter:
    torch.manual_seed(0)
    model = create_model("msag_unet_cpu", out_channels=2).eval()
    info = WeightsInfo(model_config=model.config, image_size=(64, 64), labels=LABELS_WITH_HEART)
    return Segmenter(model, info)


def test_the_heart_threshold_is_the_one_whose_ctr_matches_the_manual_masks() -> None:
    """Heart probability 0.62 on the true heart's columns, lower the farther outside: only the
    cut 0.60 gives the manual CTR, lower cuts widen the heart, higher ones lose it."""
    lungs, heart = two_lungs_and_heart()
    probabilities = np.zeros(heart.shape, dtype=np.float32)
    for step, value in enumerate((0.62, 0.57, 0.52, 0.47, 0.42)):
        columns = slice(40 - 5 * step, 90 + 5 * step)
        band = probabilities[50:85, columns]
        band[band == 0] = value
    result = SimpleNamespace(
        probabilities=lungs.astype(np.float32), heart_probabilities=probabilities
    )
    item = PairPrediction(pair=None, result=result, truth=lungs, heart_truth=heart)
    chosen, scores = tune_heart_threshold(tiny_heart_segmenter(), [item, item])
    assert chosen == 0.6 and scores[0.6]["ctr_error"] == 0.0 and scores[0.6]["dice"] == 1.0
    assert scores[0.45]["ctr_error"] == pytest.approx((80 - 50) / 105)  # columns 25..104
    assert scores[0.65]["ctr_error"] == pytest.approx(50 / 105)  # no heart left: CTR 0
    without_heart = PairPrediction(pair=None, result=result, truth=lungs, heart_truth=None)
    assert tune_heart_threshold(tiny_heart_segmenter(), [without_heart]) == (0.5, {})


def test_weights_record_their_labels_and_refuse_a_mismatch(tmp_path: Path) -> None:
    segmenter = tiny_heart_segmenter()
    segmenter.info.heart_threshold = 0.35
    save_weights(tmp_path / "heart.safetensors", segmenter.model, segmenter.info)
    _, info = load_weights(tmp_path / "heart.safetensors")
    assert info.labels == ("lungs", "heart") and info.heart_threshold == 0.35
    assert Segmenter.from_pretrained(tmp_path / "heart.safetensors").heart_threshold == 0.35
    wrong = WeightsInfo(model_config=segmenter.model.config, image_size=(64, 64))
    save_weights(tmp_path / "wrong.safetensors", segmenter.model, wrong)
    with pytest.raises(Exception, match="1 labels for 2 output channels"):
        load_weights(tmp_path / "wrong.safetensors")


@pytest.mark.data
def test_lungs_only_weights_without_labels_still_load_and_predict(
    tmp_path: Path, test_split_pairs: list
) -> None:
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = create_model("msag_unet_cpu").eval()
    save_weights(
        tmp_path / "new.safetensors", model, WeightsInfo(model.config, image_size=(64, 64))
    )
    from safetensors import safe_open

    with safe_open(str(tmp_path / "new.safetensors"), framework="pt") as handle:
        meta = dict(handle.metadata())
    del meta["labels"], meta["heart_threshold"]  # as files written before the heart channel
    meta["model_config"] = json.dumps(
        {k: v for k, v in json.loads(meta["model_config"]).items() if k != "out_channels"}
    )
    save_file(load_file(str(tmp_path / "new.safetensors")), tmp_path / "old.safetensors", meta)

    segmenter = Segmenter.from_pretrained(tmp_path / "old.safetensors")
    assert not segmenter.has_heart and segmenter.heart_threshold == 0.5
    result = segmenter(test_split_pairs[0].image)
    assert result.heart is None
    assert result.measurements.ctr is None and result.measurements.heart_area_px is None


@pytest.mark.data
def test_predict_writes_the_heart_and_its_columns(tmp_path: Path, test_split_pairs: list) -> None:
    from lungseg.predict.runner import PredictOptions, predict

    segmenter = tiny_heart_segmenter()
    images = [pair.image for pair in test_split_pairs[:2]]
    summary = predict(images, tmp_path / "out", segmenter, PredictOptions(progress=False))
    assert summary.segmented == 2
    for image in images:
        heart = np.array(Image.open(tmp_path / "out" / f"{image.stem}_heart.png"))
        assert heart.shape == np.array(Image.open(image)).shape[:2]
        assert set(np.unique(heart)) <= {0, 255}
    with (tmp_path / "out" / "results.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    for column in ("heart_area_px", "heart_area_cm2", "ctr", "cardiomegaly"):
        assert column in rows[0]
    assert all(int(row["heart_area_px"]) >= 0 for row in rows)


@pytest.mark.data
@pytest.mark.slow
def test_a_heart_run_learns_the_heart_channel(data_root: Path, tmp_path: Path) -> None:
    from lungseg.config import apply_overrides, get_preset
    from lungseg.errors import LungsegError
    from lungseg.training import train

    split = json.loads((data_root / "splits" / "multi_source.json").read_text())

    def pick(subset: str, source: str, n: int) -> list[str]:
        return [i for i in split[subset] if i.startswith(source)][:n]

    small = tmp_path / "split.json"
    small.write_text(
        json.dumps(
            {
                "train": pick("train", "wingspan", 16) + pick("train", "montgomery", 8),
                "val": pick("val", "wingspan", 6) + pick("val", "montgomery", 2),
            }
        )
    )
    config = apply_overrides(get_preset("smoke"), ["heart=true", "epochs=3"])
    summary = train(config, data_root, small, tmp_path / "run")
    with (tmp_path / "run" / "metrics.csv").open() as stream:
        history = list(csv.DictReader(stream))
    assert len(history) == 3 and all(row["val_dice_heart"] for row in history)
    _, info = load_weights(tmp_path / "run" / "model.safetensors")
    assert info.labels == ("lungs", "heart") and "val_heart_dice" in summary
    assert summary["heart_threshold"] == info.heart_threshold  # chosen on val by CTR error

    montgomery_only = tmp_path / "lungs_only.json"
    montgomery_only.write_text(
        json.dumps({"train": pick("train", "montgomery", 8), "val": pick("val", "montgomery", 2)})
    )
    with pytest.raises(LungsegError, match="has a heart mask"):
        train(config, data_root, montgomery_only, tmp_path / "no_heart")
