"""``lungseg data check``: real data passes, each problem is named, errors are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungseg import cli
from lungseg.cli import main


@pytest.fixture(autouse=True)
def only_data_command(monkeypatch):
    # These tests are about `data`; another subcommand's module being broken must not fail them.
    monkeypatch.setattr(cli, "COMMANDS", ("data",))


def png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


IMAGE = np.tile(np.arange(40, dtype=np.uint8) * 6, (32, 1))  # 40x32 (WxH)
MASK = np.zeros((32, 40), np.uint8)
MASK[8:24, 10:30] = 255  # 25% coverage


@pytest.fixture
def clean_tree(tmp_path) -> Path:
    for stem in ("a", "b"):
        png(tmp_path / "site" / "images" / f"{stem}.png", IMAGE)
        png(tmp_path / "site" / "masks" / f"{stem}.png", MASK)
    return tmp_path / "site"


def test_clean_tree_passes(clean_tree, capsys):
    assert main(["data", "check", str(clean_tree)]) == 0
    out = capsys.readouterr().out
    assert "site" in out and "40x32 (2)" in out and "25.0%" in out
    assert "No problems found." in out


def test_unpaired_image_and_size_mismatch_named(clean_tree, capsys):
    png(clean_tree / "images" / "lonely.png", IMAGE)
    png(clean_tree / "masks" / "b.png", MASK[:30])  # 40x30 mask for a 40x32 image
    assert main(["data", "check", str(clean_tree)]) == 1
    out = capsys.readouterr().out
    assert "unpaired_image" in out and "lonely.png" in out
    mismatch = next(line for line in out.splitlines() if "size_mismatch" in line)
    assert "b.png" in mismatch and "40x30" in mismatch and "40x32" in mismatch
    assert "images/b.png" in mismatch  # names the image as well as the mask
    assert "2 problem(s) found." in out


@pytest.mark.parametrize(
    ("grey_pixels", "exit_code", "label"),
    [(4, 0, "grey_edges"), (200, 1, "non_binary_mask")],  # 0.3% vs 15.6% of 1280 pixels
)
def test_grey_mask_rule(clean_tree, capsys, grey_pixels, exit_code, label):
    soft = MASK.copy()
    soft.flat[:grey_pixels] = 128
    png(clean_tree / "masks" / "a.png", soft)
    assert main(["data", "check", str(clean_tree)]) == exit_code
    out = capsys.readouterr().out
    assert f"{label}: {clean_tree / 'masks' / 'a.png'}" in out


@pytest.mark.parametrize(
    "stored",
    [
        np.zeros_like(MASK),
        np.full_like(MASK, 255),
        np.where(np.arange(MASK.size).reshape(MASK.shape) % 3 == 0, 128, MASK).astype(np.uint8),
        np.where(np.arange(MASK.size).reshape(MASK.shape) < 5, 128, MASK).astype(np.uint8),
    ],
    ids=["empty", "full", "non-binary", "grey-edges"],
)
def test_reports_exactly_what_the_mask_rules_say(clean_tree, capsys, stored):
    # The command applies lungseg.data.masks' rules; it has none of its own.
    from lungseg.data.masks import mask_note, mask_problem, read_mask_values

    path = clean_tree / "masks" / "a.png"
    png(path, stored)
    values = read_mask_values(path)
    problem, note = mask_problem(values), mask_note(values)
    expected = problem if problem is not None else note
    code = main(["data", "check", str(clean_tree)])
    assert code == (1 if problem is not None else 0)
    assert f"  {expected[0]}: {path}: {expected[1]}" in capsys.readouterr().out.splitlines()


def test_unreadable_image_is_a_problem_not_a_crash(clean_tree, capsys):
    (clean_tree / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["data", "check", str(clean_tree)]) == 1
    captured = capsys.readouterr()
    assert "unreadable" in captured.out and "a.png" in captured.out
    assert "Traceback" not in captured.err


def test_split_with_missing_ids(clean_tree, tmp_path, capsys):
    split = tmp_path / "split.json"
    split.write_text('{"train": ["site/a"], "test": ["site/zz"]}')
    assert main(["data", "check", str(clean_tree), "--split", str(split)]) == 1
    out = capsys.readouterr().out
    assert "train 1, test 1 (1 missing)" in out
    assert "missing_id" in out and "site/zz" in out
    assert "1 pair(s) of the data are in no subset" in out


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda tmp: tmp / "nowhere", "nowhere"),
        (lambda tmp: _write(tmp / "list.csv", "path,label\n"), "list.csv"),
    ],
    ids=["missing-folder", "csv-without-columns"],
)
def test_bad_path_is_one_line_error(tmp_path, capsys, make, named):
    assert main(["data", "check", str(make(tmp_path))]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lungseg data: error:") and named in err
    assert len(err.splitlines()) == 1


def test_bad_split_file_is_one_line_error(clean_tree, tmp_path, capsys):
    split = _write(tmp_path / "split.json", "{not json")
    assert main(["data", "check", str(clean_tree), "--split", str(split)]) == 1
    err = capsys.readouterr().err.strip()
    assert "split.json" in err and len(err.splitlines()) == 1


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.data
def test_shared_data_passes(data_root, split_file, capsys):
    assert main(["data", "check", str(data_root), "--split", str(split_file)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["montgomery"][1:3] == ["138", "512x512"]
    assert rows["shenzhen"][1:3] == ["566", "512x512"]
    assert rows["wingspan"][1:3] == ["259", "512x512"]
    assert rows["covidqu"][1:3] == ["2238", "256x256"]
    assert int(rows["total"][1]) == 138 + 566 + 259 + 2238
    assert "train 282, val 211, test 211" in out
    assert "No problems found." in out
