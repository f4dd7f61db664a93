"""The shipped model: it loads, its card is honest, and `lungseg evaluate` reproduces the card."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lungseg.cli import main
from lungseg.data.discovery import discover, load_split, select
from lungseg.data.masks import read_mask
from lungseg.evaluate import evaluate
from lungseg.inference import Segmenter
from lungseg.weights import shipped_weights_path

CARD = Path(__file__).resolve().parents[1] / "src" / "lungseg" / "weights" / "lungseg_cxr.json"
KEYS = ("n", "dice", "iou", "accuracy", "precision", "recall", "specificity", "hd95", "assd")


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(CARD.read_text())


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_pretrained()


def test_shipped_weights_are_small_and_match_their_card(card: dict, segmenter: Segmenter) -> None:
    assert shipped_weights_path().stat().st_size < 20_000_000
    assert segmenter.model.config == card["model_config"]
    assert segmenter.threshold == card["threshold"]
    assert list(segmenter.input_size) == card["input_size"]
    assert set(card["sources"]) == {"covidqu", "montgomery", "shenzhen", "wingspan"}
    for subset in ("val_metrics", "test_metrics"):
        for kind in ("raw", "postprocessed"):
            assert set(card[subset][kind]["per_source"]) == set(card["sources"]), subset
        heart = card[subset]["heart"]  # the heart channel, scored on Wingspan's heart masks
        assert heart["n"] == 52 and heart["dice"] > 0.9, heart
    assert card["labels"] == list(segmenter.info.labels) == ["lungs", "heart"]
    assert segmenter.quality_model is not None  # calibrated on val before shipping


@pytest.mark.data
def test_card_counts_match_the_split(card: dict, data_root: Path) -> None:
    split = load_split(data_root / "splits" / "multi_source.json")
    assert card["test_metrics"]["raw"]["n"] == len(split["test"]) == 486
    assert card["val_metrics"]["raw"]["n"] == len(split["val"]) == 485
    trained = {s: card["sources"][s]["train_images"] for s in card["sources"]}
    assert sum(trained.values()) == len(split["train"])


@pytest.mark.data
def test_evaluate_reproduces_the_cards_dice_on_a_fixed_subset(
    card: dict, segmenter: Segmenter, data_root: Path
) -> None:
    """The card's check subset (the first test ids of every source) scores what the card says."""
    ids = card["check_subset"]["ids"]
    expected = card["check_subset"]["metrics"]
    pairs = select(discover(data_root).pairs, {"test": ids}, "test")
    assert {pair.source for pair in pairs} == set(card["sources"]) and len(ids) == 24
    postprocess = card["check_subset"].get("postprocess", False)
    aggregate = evaluate(segmenter, pairs, progress=False, postprocess=postprocess).aggregate()
    assert aggregate["n"] == expected["n"] == 24
    assert aggregate["mean"]["dice"] == pytest.approx(expected["dice"], abs=0.002)
    assert aggregate["mean"]["hd95"] == pytest.approx(expected["hd95"], rel=0.02)
    for source, part in aggregate["per_source"].items():
        assert part["mean"]["dice"] == pytest.approx(
            expected["per_source"][source]["dice"], abs=0.002
        ), source


@pytest.mark.data
def test_segmenter_returns_masks_at_original_resolution(
    segmenter: Segmenter, data_root: Path
) -> None:
    image = next((data_root / "montgomery" / "images").glob("*.png"))
    result = segmenter(image)
    truth = read_mask(data_root / "montgomery" / "masks" / image.name)
    assert result.mask.shape == truth.shape == (result.meta.height, result.meta.width)
    assert result.mask.dtype == bool
    assert result.probabilities.min() >= 0.0 and result.probabilities.max() <= 1.0
    inter = (result.mask & truth).sum()
    assert 2 * inter / (result.mask.sum() + truth.sum()) > 0.9


@pytest.mark.data
def test_cli_evaluate_writes_json_and_csv(
    data_root: Path, split_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = json.loads(split_file.read_text())
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"train": [], "val": [], "test": ids["test"][:6]}))
    out_json, out_csv = tmp_path / "m.json", tmp_path / "m.csv"
    code = main(
        [
            "evaluate",
            "--data",
            str(data_root),
            "--split",
            str(small),
            "--json",
            str(out_json),
            "--csv",
            str(out_csv),
            "--workers",
            "0",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "F1 = Dice" in printed and "hd95" in printed
    result = json.loads(out_json.read_text())
    assert all(key in result for key in KEYS) and result["n"] == 6
    assert 0.5 < result["dice"] <= 1.0
    assert set(result["per_source"]) <= {"montgomery", "shenzhen"}
    rows = list(csv.DictReader(out_csv.open()))
    assert [row["id"] for row in rows] == ids["test"][:6]
    assert np.mean([float(row["dice"]) for row in rows]) == pytest.approx(result["dice"], abs=1e-9)


def test_cli_evaluate_with_missing_weights_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["evaluate", "--weights", str(tmp_path / "nope.safetensors"), "--data", str(tmp_path)]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "nope.safetensors" in err and "Traceback" not in err


def test_segmenter_is_part_of_the_public_api() -> None:
    import lungseg

    assert lungseg.Segmenter is Segmenter
    assert "Segmenter" in lungseg.__all__
