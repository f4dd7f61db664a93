"""`lungseg predict` on real X-rays: outputs at original size, the table, reruns, bad files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungseg.cli import main
from lungseg.data.dataset import load_full_mask
from lungseg.errors import InvalidInputError
from lungseg.metrics import dice
from lungseg.predict import collect_inputs


@pytest.fixture(scope="module")
def test_pairs(test_split_pairs: list) -> list:
    """Two test-split pairs of each source, so both hospitals' images are exercised."""
    by_source: dict[str, list] = {}
    for pair in test_split_pairs:
        by_source.setdefault(pair.source, []).append(pair)
    return [p for source in sorted(by_source) for p in by_source[source][:2]]


@pytest.fixture
def xray_tree(tmp_path: Path, test_pairs: list) -> Path:
    """A folder of real X-rays with a sub-folder, as a user's export would look."""
    root = tmp_path / "in"
    for i, pair in enumerate(test_pairs):
        target = root / ("sub" if i % 2 else "") / pair.image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pair.image, target)
    return root


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_collect_inputs_mirrors_names_and_refuses_clashes(tmp_path: Path, xray_tree: Path):
    images = collect_inputs([xray_tree])
    names = [im.name for im in images]
    assert names == sorted(names) and len(names) == 4
    assert any(name.startswith("sub/") for name in names)
    # A glob and an explicit file name the same image once.
    first = next(im.path for im in images if "/" not in im.name)
    assert len(collect_inputs([first, str(xray_tree / "*.png")])) == len(
        list(xray_tree.glob("*.png"))
    )
    # Two files whose outputs would collide are refused before any work.
    other = tmp_path / "elsewhere" / first.name
    other.parent.mkdir()
    shutil.copy(first, other)
    with pytest.raises(InvalidInputError, match="would be named"):
        collect_inputs([first, other])
    with pytest.raises(InvalidInputError, match="no such file"):
        collect_inputs([tmp_path / "missing.png"])
    with pytest.raises(InvalidInputError, match="matches no image"):
        collect_inputs([str(tmp_path / "*.dcm")])
    # The output folder inside the input tree is never an input.
    (xray_tree / "out").mkdir()
    shutil.copy(first, xray_tree / "out" / "x.png")
    assert len(collect_inputs([xray_tree], exclude=xray_tree / "out")) == 4


def test_predict_writes_masks_overlays_and_table(tmp_path: Path, xray_tree: Path, test_pairs):
    (xray_tree / "notes.png").write_text("not an image")  # a bad file is reported and skipped
    out = tmp_path / "out"
    table = tmp_path / "table.json"
    argv = ["predict", str(xray_tree), "-o", str(out), "--probabilities", "--quiet"]
    code = main([*argv, "--json", str(table)])
    assert code == 1  # one file failed; every other one was done
    rows = {row["name"]: row for row in read_rows(out / "results.csv")}
    assert rows["notes"]["status"] == "error" and "notes.png" in rows["notes"]["error"]
    assert not list(out.glob("notes_*"))  # nothing written for the bad file
    truth_by_name = {p.image.stem: load_full_mask(p) for p in test_pairs}
    for name, row in rows.items():
        if name == "notes":
            continue
        assert row["status"] == "ok"
        mask = np.asarray(Image.open(out / f"{name}_mask.png"))
        truth = truth_by_name[Path(name).name]
        assert mask.shape == truth.shape == (int(row["height"]), int(row["width"]))
        assert set(np.unique(mask)) <= {0, 255}
        assert dice(mask > 0, truth) > 0.9  # the shipped model really segments lungs
        overlay = np.asarray(Image.open(out / f"{name}_overlay.png"))
        assert overlay.shape == (*truth.shape, 3)
        probabilities = np.asarray(Image.open(out / f"{name}_probabilities.png"))
        assert probabilities.dtype == np.uint16 and probabilities.shape == truth.shape
        area = int(row["right_area_px"]) + int(row["left_area_px"])
        assert int(row["area_px"]) == area == int((mask > 0).sum())
        assert int(row["right_area_px"]) > 0 and int(row["left_area_px"]) > 0
        assert row["quality"] in ("ok", "check")
    document = json.loads(table.read_text())
    assert [image["name"] for image in document["images"]] == list(rows)  # the same rows
    assert document["summary"]["failed"] == 1


def test_rerun_skips_finished_images_and_redoes_interrupted_ones(tmp_path: Path, xray_tree: Path):
    out = tmp_path / "out"
    assert main(["predict", str(xray_tree), "-o", str(out), "--quiet"]) == 0
    table = (out / "results.csv").read_text()
    masks = sorted(out.rglob("*_mask.png"))
    stamps = {p: p.stat().st_mtime_ns for p in masks}
    # Simulate a run killed after writing one image's files but before its journal row.
    victim = masks[0]
    journal = (
        out
        / ".lungseg-predict"
        / (victim.relative_to(out).as_posix()[: -len("_mask.png")] + ".json")
    )
    journal.unlink()
    assert main(["predict", str(xray_tree), "-o", str(out), "--quiet"]) == 0
    assert (out / "results.csv").read_text() == table
    redone = [p for p in masks if p.stat().st_mtime_ns != stamps[p]]
    assert redone == [victim]
    assert main(["predict", str(xray_tree), "-o", str(out), "--quiet", "--overwrite"]) == 0
    assert all(p.stat().st_mtime_ns != stamps[p] for p in masks[1:])


def test_strict_stops_at_the_first_bad_file(tmp_path: Path, xray_tree: Path, capsys):
    (xray_tree / "aaa.png").write_bytes(b"")  # sorts first
    code = main(["predict", str(xray_tree), "-o", str(tmp_path / "out"), "--strict", "--quiet"])
    assert code == 1
    assert "aaa.png" in capsys.readouterr().err


def test_postprocess_keeps_at_most_two_components(tmp_path: Path, xray_tree: Path):
    out = tmp_path / "out"
    assert main(["predict", str(xray_tree), "-o", str(out), "--quiet"]) == 0
    assert all(int(row["components"]) <= 2 for row in read_rows(out / "results.csv"))


def test_two_gloo_ranks_merge_the_same_table_as_one_process(tmp_path: Path, xray_tree: Path):
    # Both runs as subprocesses with one thread and batch 1, so each image meets exactly the same
    # arithmetic; only the sharding differs.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["predict", str(xray_tree), "--quiet", "--batch-size", "1", "--workers", "0"]
    single = tmp_path / "single"
    cmd = [sys.executable, "-m", "lungseg", *args, "-o", str(single)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = tmp_path / "sharded"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd = [*launch, "-m", "lungseg", *args, "-o", str(sharded)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (sharded / "results.csv").read_text() == (single / "results.csv").read_text()
    for mask in single.rglob("*_mask.png"):
        twin = sharded / mask.relative_to(single)
        assert np.array_equal(np.asarray(Image.open(mask)), np.asarray(Image.open(twin)))
