"""lungseg.data.discovery: every folder layout, problems reported, split files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungseg.data.discovery import SUBSETS, discover, load_split, select
from lungseg.errors import InvalidInputError, LungsegError


def png(path: Path, value: int = 0) -> Path:
    """A tiny 32x32 grey PNG: discovery never decodes, but the files should be real."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32), value, np.uint8)).save(path)
    return path


def names(paths) -> list[str]:
    return [Path(p).name for p in paths]


def test_images_and_masks_with_mask_suffixes(tmp_path):
    root = tmp_path / "hospital"
    for stem in ("a", "b", "c"):
        png(root / "images" / f"{stem}.png")
    png(root / "masks" / "a.png")
    png(root / "masks" / "b_mask.png")
    png(root / "masks" / "c-mask.png")
    (root / "images" / "notes.txt").write_text("not an image")
    found = discover(root)
    assert [p.id for p in found.pairs] == ["hospital/a", "hospital/b", "hospital/c"]
    assert [names(p.masks) for p in found.pairs] == [["a.png"], ["b_mask.png"], ["c-mask.png"]]
    assert found.problems == []
    assert found.pairs[0].image == root / "images" / "a.png"


def test_unpaired_files_are_problems_not_dropped(tmp_path):
    png(tmp_path / "images" / "paired.png")
    png(tmp_path / "masks" / "paired.png")
    png(tmp_path / "images" / "lonely_image.png")
    png(tmp_path / "masks" / "lonely_mask.png")
    found = discover(tmp_path)
    assert [p.id for p in found.pairs] == [f"{tmp_path.name}/paired"]
    kinds = {(problem.kind, problem.path.name) for problem in found.problems}
    assert kinds == {("unpaired_image", "lonely_image.png"), ("unpaired_mask", "lonely_mask.png")}


def test_kaggle_chest_xray_masks_and_labels(tmp_path):
    root = tmp_path / "Lung Segmentation"
    png(root / "CXR_png" / "MCUCXR_0001_0.png")
    png(root / "CXR_png" / "CHNCXR_0001_0.png")
    png(root / "CXR_png" / "CHNCXR_0002_0.png")  # Kaggle ships some Shenzhen images unmasked
    png(root / "masks" / "MCUCXR_0001_0.png")
    png(root / "masks" / "CHNCXR_0001_0_mask.png")
    found = discover(root)
    assert [p.id for p in found.pairs] == [
        "Lung Segmentation/CHNCXR_0001_0",
        "Lung Segmentation/MCUCXR_0001_0",
    ]
    assert [(p.kind, p.path.name) for p in found.problems] == [
        ("unpaired_image", "CHNCXR_0002_0.png")
    ]


def test_nlm_montgomery_left_and_right_masks(tmp_path):
    root = tmp_path / "MontgomerySet"
    for stem in ("MCUCXR_0001_0", "MCUCXR_0002_0"):
        png(root / "CXR_png" / f"{stem}.png")
        png(root / "ManualMask" / "leftMask" / f"{stem}.png")
    png(root / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png")
    found = discover(root)
    (pair,) = found.pairs
    assert pair.id == "MontgomerySet/MCUCXR_0001_0"
    assert [p.parent.name for p in pair.masks] == ["leftMask", "rightMask"]
    unpaired = {(p.kind, p.path.parent.name) for p in found.problems}
    assert ("unpaired_image", "CXR_png") in unpaired  # MCUCXR_0002_0 lacks its right mask


def test_csv_manifest_as_file_and_in_folder(tmp_path):
    png(tmp_path / "img" / "x1.png")
    png(tmp_path / "img" / "x2.png")
    png(tmp_path / "lbl" / "x1_left.png")
    png(tmp_path / "lbl" / "x1_right.png")
    png(tmp_path / "lbl" / "x2.png")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "image,mask,source\n"
        "img/x1.png,lbl/x1_left.png;lbl/x1_right.png,siteA\n"
        "img/x2.png,lbl/x2.png,\n"
        "img/gone.png,lbl/x2.png,\n"
    )
    for root in (manifest, tmp_path):
        found = discover(root)
        assert [p.id for p in found.pairs] == ["siteA/x1", f"{tmp_path.name}/x2"]
        assert names(found.pairs[0].masks) == ["x1_left.png", "x1_right.png"]
        assert [(p.kind, p.path.name) for p in found.problems] == [("missing_file", "gone.png")]


def test_csv_manifest_without_columns(tmp_path):
    (tmp_path / "list.csv").write_text("path,label\na.png,b.png\n")
    with pytest.raises(LungsegError, match="'image' and 'mask' columns"):
        discover(tmp_path / "list.csv")


def test_several_sources_under_one_root(tmp_path):
    for source in ("montgomery", "shenzhen"):
        png(tmp_path / source / "images" / "s1.png")
        png(tmp_path / source / "masks" / "s1.png")
    (tmp_path / "splits").mkdir()  # not a source: ignored
    found = discover(tmp_path)
    assert [p.id for p in found.pairs] == ["montgomery/s1", "shenzhen/s1"]
    assert {s: len(p) for s, p in found.by_source().items()} == {"montgomery": 1, "shenzhen": 1}


def test_duplicate_stems_reported(tmp_path):
    png(tmp_path / "images" / "a.png")
    png(tmp_path / "images" / "a.jpg")  # a JPEG named like the PNG
    png(tmp_path / "masks" / "a.png")
    found = discover(tmp_path)
    assert len(found.pairs) == 1
    assert [(p.kind, p.path.name) for p in found.problems] == [("duplicate_id", "a.png")]


def test_discovery_and_predict_take_the_same_files(tmp_path):
    # One rule (lungseg.data.io.is_image_file) for a data folder and for predict's inputs.
    from dicom_factory import write_dicom_file, xray_dataset

    from lungseg.predict import collect_inputs

    images = tmp_path / "images"
    png(images / "a.png")
    png(images / "b.JPG")
    write_dicom_file(images / "IM0001", xray_dataset(np.zeros((32, 32), np.uint16)))
    (images / "README").write_text("not DICOM")
    (images / "notes.txt").write_text("not an image")
    for stem in ("a", "b", "IM0001", "README", "notes"):
        png(tmp_path / "masks" / f"{stem}.png")
    found = discover(tmp_path)
    assert sorted(p.image.name for p in found.pairs) == ["IM0001", "a.png", "b.JPG"]
    assert sorted(p.path.name for p in collect_inputs([images])) == ["IM0001", "a.png", "b.JPG"]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda root: None, "not found"),
        (lambda root: root.mkdir(), "no image/mask pairs found"),
        (lambda root: root.write_text("x"), "expected a data folder or a CSV"),
    ],
    ids=["missing", "empty-folder", "plain-file"],
)
def test_bad_roots(tmp_path, make, error):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(LungsegError, match=error):
        discover(root)


# --- splits -----------------------------------------------------------------------------------


def write_json(path: Path, content) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_load_split_and_select(tmp_path):
    for stem in ("a", "b", "c"):
        png(tmp_path / "src" / "images" / f"{stem}.png")
        png(tmp_path / "src" / "masks" / f"{stem}.png")
    pairs = discover(tmp_path / "src").pairs
    split = load_split(
        write_json(
            tmp_path / "s.json",
            {"description": "ignored", "train": ["src/c", "src/a"], "val": [], "test": ["src/b"]},
        )
    )
    assert split == {"train": ["src/c", "src/a"], "val": [], "test": ["src/b"]}
    assert [p.id for p in select(pairs, split, "train")] == ["src/c", "src/a"]  # split order
    with pytest.raises(LungsegError, match="no subset 'holdout'"):
        select(pairs, split, "holdout")


def test_select_names_missing_ids(tmp_path):
    png(tmp_path / "images" / "a.png")
    png(tmp_path / "masks" / "a.png")
    pairs = discover(tmp_path).pairs
    wanted = [pairs[0].id] + [f"x/{i}" for i in range(8)]
    with pytest.raises(LungsegError, match=r"8 of the 9 ids of 'test'.*x/0, x/1.*and 3 more"):
        select(pairs, {"test": wanted}, "test")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("not json", InvalidInputError),
        ([1, 2], LungsegError),
        ({"description": "no subsets"}, LungsegError),
        ({"train": "a"}, LungsegError),
        ({"train": ["a", "a"]}, LungsegError),
        ({"train": ["a"], "test": ["a"]}, LungsegError),  # a leak
    ],
)
def test_malformed_split(tmp_path, content, error):
    path = tmp_path / "split.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(error, match="split.json"):
        load_split(path)


# --- the shared data --------------------------------------------------------------------------


# What the shared data's README states, per source (the total grows when a source is added).
SHARED_SOURCES = {"covidqu": 2238, "montgomery": 138, "shenzhen": 566, "wingspan": 259}


@pytest.mark.data
def test_shared_data(data_root, split_file):
    found = discover(data_root)
    assert found.problems == []
    assert {s: len(p) for s, p in found.by_source().items()} == SHARED_SOURCES
    split = load_split(split_file)
    sizes = {subset: len(select(found.pairs, split, subset)) for subset in split}
    assert sizes == {"train": 282, "val": 211, "test": 211}
    pair = select(found.pairs, split, "test")[0]
    assert pair.image.is_file() and pair.masks[0].is_file()


@pytest.mark.data
def test_multi_source_split_keeps_the_paper_split_and_covers_every_source(data_root, split_file):
    found = discover(data_root)
    paper, multi = load_split(split_file), load_split(data_root / "splits" / "multi_source.json")
    for subset in SUBSETS:
        by_source: dict[str, int] = {}
        for pair in select(found.pairs, multi, subset):
            by_source[pair.source] = by_source.get(pair.source, 0) + 1
        assert set(by_source) == set(SHARED_SOURCES), subset
        paper_ids = {i for i in multi[subset] if i.split("/")[0] in ("montgomery", "shenzhen")}
        assert paper_ids == set(paper[subset]), subset
    assert [len(multi[s]) for s in SUBSETS] == [2230, 485, 486]
