"""The quality estimate: its signals, its fit, its cut, degraded copies, and what predict does
with it (``estimated_dice`` in every row, ``--min-quality`` withholds masks, saying why)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from lungseg.cli import main
from lungseg.data.degrade import DEGRADATIONS, degrade
from lungseg.inference import Segmenter
from lungseg.quality import SIGNALS, QualityModel, zoomed_back, zoomed_out
from lungseg.weights import save_weights


def test_zooming_out_and_back_is_the_identity_inside_the_image() -> None:
    x = torch.zeros(1, 1, 64, 64)
    x[:, :, 16:48, 20:40] = 1.0
    back = zoomed_back(zoomed_out(x))
    inner = (slice(None), slice(None), slice(8, 56), slice(8, 56))
    assert ((back[inner] > 0.5) == (x[inner] > 0.5)).float().mean() > 0.99


def test_a_smaller_second_pass_maps_back_onto_the_first_pass_grid() -> None:
    x = torch.zeros(1, 1, 64, 64)
    x[:, :, 16:48, 20:40] = 1.0
    small = zoomed_out(x, size=(48, 48))
    assert small.shape == (1, 1, 48, 48)
    back = zoomed_back(small, size=(64, 64))
    assert back.shape == x.shape
    inner = (slice(None), slice(None), slice(8, 56), slice(8, 56))
    assert ((back[inner] > 0.5) == (x[inner] > 0.5)).float().mean() > 0.97


def test_the_pass_size_travels_with_the_quality_model() -> None:
    model = QualityModel((1.0, 0.0, 0.0, 0.0, 0.0), 0.0, 0.9, "synthetic", SIGNALS, (192, 192))
    assert model.to_dict()["pass_size"] == [192, 192]
    assert QualityModel.from_dict(model.to_dict()) == model
    # Weights calibrated before the size was a choice ran the pass at the network's size.
    older = {k: v for k, v in model.to_dict().items() if k != "pass_size"}
    assert QualityModel.from_dict(older).pass_size is None


def test_fit_recovers_a_linear_relation_and_cuts_below_most_failures() -> None:
    rng = np.random.default_rng(0)
    signals = [
        {
            "tta_dice": t,
            "uncertain": u,
            "postprocess_change": p,
            "implausible": float(i),
            "cut_by_border": float(c),
        }
        for t, u, p, i, c in zip(
            rng.uniform(0.6, 1.0, 400),
            rng.uniform(0.0, 0.5, 400),
            rng.uniform(0.0, 0.2, 400),
            rng.random(400) < 0.1,
            rng.random(400) < 0.2,
            strict=True,
        )
    ]
    dice = [
        0.1
        + 0.9 * s["tta_dice"]
        - 0.2 * s["uncertain"]
        - 0.5 * s["postprocess_change"]
        + 0.05 * s["cut_by_border"]
        for s in signals
    ]
    model = QualityModel.fit(signals, dice, fitted_on="synthetic")
    assert model.coef[0] == pytest.approx(0.9, abs=1e-6)
    assert model.coef[SIGNALS.index("cut_by_border")] == pytest.approx(0.05, abs=1e-6)
    estimates = np.array([model.estimate(s) for s in signals])
    assert np.allclose(estimates, np.clip(dice, 0, 1), atol=1e-6)
    failed = np.array(dice) < 0.85
    assert (estimates[failed] < model.threshold).mean() >= 0.9
    assert QualityModel.from_dict(model.to_dict()) == model
    with pytest.raises(ValueError, match="signals"):
        QualityModel.from_dict({**model.to_dict(), "signals": ["tta_dice"]})
    with pytest.raises(ValueError, match="signals"):
        QualityModel.from_dict({**model.to_dict(), "signals": [*SIGNALS[:4], "made_up"]})
    # A model calibrated before cut_by_border existed weighs the four signals it names.
    older = {**model.to_dict(), "signals": list(SIGNALS[:4]), "coef": list(model.coef[:4])}
    assert QualityModel.from_dict(older).estimate(signals[0]) == pytest.approx(
        np.clip(
            model.intercept + np.dot(model.coef[:4], [signals[0][n] for n in SIGNALS[:4]]), 0, 1
        )
    )


@pytest.mark.parametrize("kind", list(DEGRADATIONS))
def test_degraded_copies_are_reproducible_images_with_their_mask(kind: str) -> None:
    image = np.random.default_rng(1).random((120, 100)).astype(np.float32)
    mask = np.zeros((120, 100), dtype=bool)
    mask[30:90, 20:80] = True
    first = degrade(kind, image, mask, np.random.default_rng(7))
    again = degrade(kind, image, mask, np.random.default_rng(7))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    out, truth = first
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    assert out.shape == truth.shape and not np.array_equal(out, image)
    if kind != "crop":
        assert np.array_equal(truth, mask)


def calibrated(segmenter: Segmenter, threshold: float | None) -> Segmenter:
    """The segmenter with a quality model that trusts the second pass alone (None: none)."""
    extra = {k: v for k, v in segmenter.info.extra.items() if k != "quality_model"}
    if threshold is not None:
        extra["quality_model"] = QualityModel(
            (1.0, 0.0, 0.0, 0.0, 0.0), 0.0, threshold, "t"
        ).to_dict()
    return Segmenter(segmenter.model, dataclasses.replace(segmenter.info, extra=extra))


@pytest.mark.data
def test_a_smaller_second_pass_agrees_on_a_real_x_ray(test_split_pairs: list) -> None:
    plain = calibrated(Segmenter.from_pretrained(), 0.5)
    extra = dict(plain.info.extra)
    extra["quality_model"] = {**extra["quality_model"], "pass_size": [192, 192]}
    smaller = Segmenter(plain.model, dataclasses.replace(plain.info, extra=extra))
    assert plain.quality_pass_size == tuple(plain.info.image_size)
    assert smaller.quality_pass_size == (192, 192)
    image = test_split_pairs[0].image
    full, small = plain(image), smaller(image)
    assert np.array_equal(full.mask, small.mask)  # the first pass is the same
    # The cheaper pass still agrees with a good mask, and not trivially (its own grid).
    assert 0.9 < small.quality_signals["tta_dice"] < 1.0
    assert small.quality_signals["tta_dice"] != full.quality_signals["tta_dice"]


def test_the_shipped_weights_carry_a_quality_model_fitted_on_val() -> None:
    model = Segmenter.from_pretrained().quality_model
    assert model is not None and "val of multi_source.json" in model.fitted_on
    assert 0.5 < model.threshold < 1.0


@pytest.mark.data
def test_estimated_dice_is_measured_and_flags_below_the_cut(test_split_pairs: list) -> None:
    plain = calibrated(Segmenter.from_pretrained(), None)
    assert plain.quality_model is None
    image = test_split_pairs[0].image
    assert plain(image).measurements.estimated_dice is None
    result = calibrated(plain, 0.5)(image)
    assert set(result.quality_signals) == set(SIGNALS)
    assert result.measurements.estimated_dice == pytest.approx(
        result.quality_signals["tta_dice"], abs=1e-4
    )
    assert result.measurements.quality == "ok"
    strict = calibrated(plain, 1.01)(image)
    assert strict.measurements.quality == "check"
    assert "estimated Dice" in strict.measurements.reason
    assert np.array_equal(strict.mask, result.mask)  # the estimate never changes the mask


@pytest.mark.data
def test_min_quality_withholds_masks_and_says_why(test_split_pairs: list, tmp_path: Path) -> None:
    weights = tmp_path / "calibrated.safetensors"
    segmenter = calibrated(Segmenter.from_pretrained(), 0.5)
    save_weights(weights, segmenter.model, segmenter.info)
    images = [str(pair.image) for pair in test_split_pairs[:2]]
    out = tmp_path / "out"
    args = ["predict", *images, "-o", str(out), "--weights", str(weights), "--quiet"]
    assert main([*args, "--min-quality", "0.999"]) == 0
    with (out / "results.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["status"] for row in rows] == ["withheld", "withheld"]
    assert all("below --min-quality 0.999" in row["error"] for row in rows)
    assert all(float(row["estimated_dice"]) < 0.999 for row in rows)
    assert not list(out.glob("*_mask.png"))

    uncalibrated = tmp_path / "uncalibrated.safetensors"
    bare = calibrated(segmenter, None)
    save_weights(uncalibrated, bare.model, bare.info)
    plain = tmp_path / "plain"
    code = main(
        ["predict", images[0], "-o", str(plain), "--weights", str(uncalibrated), "--quiet"]
        + ["--min-quality", "0.9"]
    )
    assert code == 2  # weights without a quality model: a usage error, no work done
    assert not (plain / "results.csv").exists()
