"""The bad-input matrix (issue 7): every entry point against every kind of bad input.

Entry points: ``lungseg data check``, ``lungseg train`` (smoke preset), ``lungseg evaluate`` and
``lungseg predict``, run in-process through :func:`lungseg.cli.main`, and the API
(``POST /v1/segment``) through FastAPI's TestClient. Every bad file is made from a real X-ray or
mask of the shared data (truncated, re-encoded, resized, emptied...) and put beside a good real
pair. Each case must end in a message that names the file and says what is wrong, with exit
code 1 (CLI) or a 4xx ``{"detail": ...}`` (API), without a traceback, and without partial output:
predict writes no mask for the bad file but its table for the good ones, train no checkpoint,
evaluate no ``--json``/``--csv``, the API keeps no result.

What a bad MASK means depends on the entry point: ``data check`` reports empty, full (all-white)
and non-binary masks as problems; ``train`` refuses them by name before training; ``evaluate``
refuses a non-binary mask but scores an empty or full one by the rules of :mod:`lungseg.metrics`,
with a warning naming it (those masks are wrong for lungs, yet their scores are well defined).

Valid but unusual formats (RGB, RGBA, palette and 16-bit PNG, float32 TIFF) must be segmented
like the original grey PNG by predict and the API.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from dicom_factory import dicom_file_bytes, xray_dataset
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML
from scipy import ndimage

from lungseg.cli import main
from lungseg.metrics import dice

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e .[serve]")

from fastapi.testclient import TestClient  # noqa: E402

from lungseg.serve import ServeSettings, create_app  # noqa: E402

CLI_ENTRIES = ("data_check", "train", "evaluate", "predict")
MASK_READERS = ("data_check", "train", "evaluate")  # the entry points that read masks
MANY = 3000  # empty files in the "thousands of empty files" case


# --- the real X-ray every bad file is made from -----------------------------------------------


@dataclass(frozen=True)
class Source:
    """A real pair of the test split: the good pair of every case and the stuff of bad files."""

    pair: object  # its discovery Pair
    png: bytes  # the X-ray's file as stored (8-bit grey PNG)
    grey: np.ndarray  # its pixels, uint8 (H, W)
    mask: np.ndarray  # its mask, uint8 0/255 (H, W)


@pytest.fixture(scope="module")
def source(test_split_pairs: list) -> Source:
    pair = test_split_pairs[0]
    grey = np.asarray(Image.open(pair.image).convert("L"))
    mask = np.asarray(Image.open(pair.masks[0]).convert("L"))
    assert grey.shape == mask.shape == (512, 512), "the shared data's images are 512x512"
    return Source(pair, pair.image.read_bytes(), grey, mask)


def encode(pixels: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def with_png_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR claiming another size (CRC fixed): a decompression bomb's header."""
    data = bytearray(png)
    struct.pack_into(">II", data, 16, width, height)  # IHDR data starts after 8 + 4 + 4 bytes
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))  # CRC of type + data
    return bytes(data)


def dicom_bytes(pixels: np.ndarray, *, with_pixels: bool = True, syntax=None) -> bytes:
    """A DX DICOM of ``pixels``; without its pixel data, or declaring another transfer syntax."""
    ds = xray_dataset(pixels)
    if not with_pixels:
        del ds.PixelData
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([pixels.tobytes()])
    return dicom_file_bytes(ds)


# --- the cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One kind of bad input.

    Attributes:
        target: ``"image"`` (a bad X-ray file), ``"mask"`` (a bad mask beside a good X-ray) or
            ``"folder"`` (a bad folder of images).
        suffix: the bad file's name ending.
        make: builds the bad file's bytes (image, mask) or the bad folder from the real source.
        words: what the message must say besides the file's name.
        status: the API's answer to it (image cases).
    """

    target: str
    suffix: str
    make: Callable
    words: tuple[str, ...]
    status: int = 0


IMAGE_CASES = {
    "zero_byte": Case("image", ".png", lambda s: b"", ("file is empty",), 422),
    "truncated_png": Case(
        "image", ".png", lambda s: s.png[: len(s.png) // 2], ("truncated", "PNG"), 422
    ),
    "truncated_jpeg": Case(
        "image",
        ".jpg",
        lambda s: (jpeg := encode(s.grey, "JPEG", quality=90))[: len(jpeg) // 2],
        ("truncated", "JPEG"),
        422,
    ),
    "text_renamed_png": Case(
        "image",
        ".png",
        lambda s: b"PatientID,Name,Finding\n0001,DOE^JANE,normal\n" * 20,
        ("not a supported image",),
        415,
    ),
    "one_pixel": Case("image", ".png", lambda s: encode(s.grey[256:257, 256:257]), ("1x1",), 422),
    # Over the reader's limit (100 MP; the server's is 36 MP), refused from the header alone.
    "over_pixel_limit": Case(
        "image",
        ".png",
        lambda s: with_png_size(s.png, 12_000, 12_000),
        ("12000x12000", "over the limit"),
        413,
    ),
    # So far over that Pillow's own decompression-bomb guard refuses it while opening it.
    "pixel_bomb_header": Case(
        "image",
        ".png",
        lambda s: with_png_size(s.png, 20_000, 20_000),
        ("too large", "400000000 pixels"),
        413,
    ),
    "dicom_without_pixels": Case(
        "image", ".dcm", lambda s: dicom_bytes(s.grey, with_pixels=False), ("no pixel data",), 415
    ),
    "dicom_unsupported_syntax": Case(
        "image",
        ".dcm",
        lambda s: dicom_bytes(s.grey, syntax=MPEG2MPML),
        ("transfer syntax", "MPEG2"),
        415,
    ),
}


def blurred(mask: np.ndarray) -> np.ndarray:
    """The mask smoothed into a probability-map-like image: a quarter of it is grey."""
    soft = ndimage.gaussian_filter(mask.astype(np.float32), sigma=6)
    return np.round(soft).astype(np.uint8)


MASK_CASES = {
    "mask_other_size": Case(
        "mask",
        ".png",
        lambda s: encode(np.asarray(Image.fromarray(s.mask).resize((256, 256), Image.NEAREST))),
        ("256x256", "512x512"),
    ),
    "mask_non_binary": Case("mask", ".png", lambda s: encode(blurred(s.mask)), ("neither 0 nor",)),
    "mask_empty": Case("mask", ".png", lambda s: encode(np.zeros_like(s.mask)), ("mask is empty",)),
    "mask_all_white": Case(
        "mask", ".png", lambda s: encode(np.full_like(s.mask, 255)), ("every pixel",)
    ),
}


def lock_folder(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make listing ``folder`` fail as ``chmod 000`` makes it fail for an ordinary user.

    The tests run as root (here and in CI), whom no permission bit stops, so the refusal is
    raised where the OS would raise it: ``os.scandir`` and ``os.listdir`` (``os.walk`` and
    ``Path.iterdir`` list through them). Any other folder lists as usual.
    """
    locked = os.path.realpath(folder)

    def refusing(lister: Callable) -> Callable:
        def guarded(path: object = ".") -> object:
            if not isinstance(path, int) and os.path.realpath(os.fsdecode(path)) == locked:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            return lister(path)

        return guarded

    monkeypatch.setattr(os, "scandir", refusing(os.scandir))
    monkeypatch.setattr(os, "listdir", refusing(os.listdir))


FOLDER_CASES = {
    "unreadable_folder": Case("folder", "", lock_folder, ("cannot list the folder",)),
    "many_empty_files": Case("folder", ".png", lambda folder: None, ("file is empty",)),
}

CASES = {**IMAGE_CASES, **MASK_CASES, **FOLDER_CASES}
MATRIX = (
    [(entry, case) for case in IMAGE_CASES for entry in (*CLI_ENTRIES, "api")]
    + [(entry, case) for case in MASK_CASES for entry in MASK_READERS]
    + [(entry, case) for case in FOLDER_CASES for entry in CLI_ENTRIES]
)


# --- the data folder a case runs on -----------------------------------------------------------


@dataclass
class Workspace:
    root: Path  # images/ + masks/, the layout every CLI entry point reads
    bad: Path  # the bad file, or the bad folder
    good: Path  # the good X-ray beside it


def build_workspace(tmp_path: Path, source: Source, name: str, case: Case) -> Workspace:
    root = tmp_path / "data"
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    good = Path(shutil.copy(source.pair.image, images / source.pair.image.name))
    shutil.copy(source.pair.masks[0], masks / f"{good.stem}.png")
    stem = f"bad_{name}"
    if case.target == "image":
        bad = images / f"{stem}{case.suffix}"
        bad.write_bytes(case.make(source))
        (masks / f"{stem}.png").write_bytes(encode(source.mask))
    elif case.target == "mask":
        (images / f"{stem}.png").write_bytes(source.png)
        bad = masks / f"{stem}.png"
        bad.write_bytes(case.make(source))
    elif name == "many_empty_files":
        for i in range(MANY):
            (images / f"empty_{i:04d}.png").touch()
            (masks / f"empty_{i:04d}.png").touch()
        bad = images
    else:
        bad = images
    return Workspace(root, bad, good)


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text[-2000:]


def run_cli(args: list, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture):
    """Run ``lungseg ARGS`` in-process: (exit code, stdout, everything it printed or logged)."""
    caplog.clear()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    text = out + err + caplog.text
    assert_no_traceback(text)
    return code, out, text


def named_line(text: str, path: Path, words: tuple[str, ...]) -> str:
    """The line that names ``path``; it must also say every one of ``words``."""
    lines = [line for line in text.splitlines() if str(path) in line]
    assert lines, f"{path} is not named in:\n{text[-3000:]}"
    line = next((line for line in lines if all(w in line for w in words)), None)
    assert line is not None, f"no line names {path} with {words}:\n" + "\n".join(lines[:5])
    return line


# --- one runner per entry point ---------------------------------------------------------------


def check_data_check(ws: Workspace, name: str, case: Case, capsys, caplog) -> None:
    code, out, text = run_cli(["data", "check", ws.root], capsys, caplog)
    assert code == 1
    if name == "many_empty_files":
        named_line(out, ws.bad / "empty_0000.png", ("unreadable", *case.words))
        assert f"{MANY} problem(s) found. By kind: {MANY} unreadable." in out.splitlines()[-1]
    else:
        named_line(text, ws.bad, case.words)


def check_train(ws: Workspace, name: str, case: Case, capsys, caplog, tmp_path: Path) -> None:
    run = tmp_path / "run"
    for args in (
        ["train", "--data", ws.root, "--out", run, "--preset", "smoke", "--epochs", 1],
        ["train", "--resume", run],  # a tired user's next try: the same clear refusal
    ):
        code, _, text = run_cli(args, capsys, caplog)
        assert code == 1
        if name == "many_empty_files":  # the first empty file met stops it, named
            assert re.search(r"images/empty_\d{4}\.png: file is empty", text), text[-2000:]
        else:
            named_line(text, ws.bad, case.words)
        left = sorted(path.name for path in run.iterdir())
        assert left == ["config.json", "run.json"], f"a failed run left {left}"  # no checkpoint


def check_evaluate(ws: Workspace, name: str, case: Case, capsys, caplog, tmp_path: Path) -> None:
    summary, table = tmp_path / "eval.json", tmp_path / "eval.csv"
    args = ["evaluate", "--data", ws.root, "--json", summary, "--csv", table]
    code, _, text = run_cli(args, capsys, caplog)  # default --workers 1: a DataLoader worker
    if name in ("mask_empty", "mask_all_white"):  # scored as they are, with a warning
        assert code == 0
        named_line(caplog.text, ws.bad, case.words)
        rows = {row["id"]: row for row in csv.DictReader(table.open())}
        row = rows[f"data/{ws.bad.stem}"]
        if name == "mask_empty":  # truth empty, prediction not: Dice 0, distances undefined
            assert float(row["dice"]) == 0.0 and math.isnan(float(row["hd95"]))
            assert json.loads(summary.read_text())["undefined"]["hd95"] == 1
        else:  # truth is everything: every predicted pixel is right
            assert float(row["precision"]) == 1.0 and float(row["recall"]) < 0.5
        return
    assert code == 1
    if name == "many_empty_files":
        assert re.search(r"images/empty_\d{4}\.png: file is empty", text), text[-2000:]
    else:
        named_line(text, ws.bad, case.words)
    assert not summary.exists() and not table.exists()


def check_predict(ws: Workspace, name: str, case: Case, capsys, caplog, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, out, text = run_cli(
        ["predict", ws.root / "images", "-o", out_dir, "--quiet"], capsys, caplog
    )
    assert code == 1
    if name == "unreadable_folder":  # nothing can be listed: stops before any work
        named_line(text, ws.bad, case.words)
        assert not any(out_dir.iterdir())
        return
    rows = {Path(row["file"]).name: row for row in csv.DictReader((out_dir / "results.csv").open())}
    assert rows[ws.good.name]["status"] == "ok"
    assert (out_dir / f"{ws.good.stem}_mask.png").is_file()
    bad_files = sorted(ws.bad.glob("empty_*.png")) if name == "many_empty_files" else [ws.bad]
    assert len(rows) == 1 + len(bad_files)
    for bad in bad_files:
        row = rows[bad.name]
        assert row["status"] == "error" and str(bad) in row["error"]
        assert all(word in row["error"] for word in case.words), row["error"]
        assert not (out_dir / f"{bad.stem}_mask.png").exists()
        assert not (out_dir / f"{bad.stem}_overlay.png").exists()
    named_line(out, bad_files[0], case.words)  # the summary lists the failures by name
    if name == "many_empty_files":
        assert "1 image(s) segmented" in out and f"{MANY} failed" in out
        assert f"... and {MANY - 5} more" in out
    assert not list(out_dir.rglob("*.tmp"))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One server with the default limits for every API case."""
    settings = ServeSettings(temp_dir=tmp_path_factory.mktemp("serve"))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def check_api(client: TestClient, ws: Workspace, case: Case) -> None:
    kept = client.get("/healthz").json()["results_kept"]
    response = client.post("/v1/segment", files={"file": (ws.bad.name, ws.bad.read_bytes())})
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert ws.bad.name in detail and all(word in detail for word in case.words), detail
    assert_no_traceback(response.text)
    assert client.get("/healthz").json()["results_kept"] == kept  # nothing stored for it


# --- the matrix -------------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "name"), MATRIX, ids=[f"{e}-{n}" for e, n in MATRIX])
def test_bad_input(entry, name, source, tmp_path, capsys, caplog, monkeypatch, request):
    case = CASES[name]
    ws = build_workspace(tmp_path, source, name, case)
    if name == "unreadable_folder":
        lock_folder(monkeypatch, ws.bad)
    if entry == "data_check":
        check_data_check(ws, name, case, capsys, caplog)
    elif entry == "train":
        check_train(ws, name, case, capsys, caplog, tmp_path)
    elif entry == "evaluate":
        check_evaluate(ws, name, case, capsys, caplog, tmp_path)
    elif entry == "predict":
        check_predict(ws, name, case, capsys, caplog, tmp_path)
    else:
        check_api(request.getfixturevalue("client"), ws, case)


# --- valid formats that are not 8-bit grey ----------------------------------------------------

VALID_FORMATS = {
    "rgb": lambda s: encode(np.stack([s.grey] * 3, axis=-1)),
    "rgba": lambda s: encode(np.dstack([s.grey] * 3 + [np.full_like(s.grey, 255)])),
    "palette": lambda s: encode_image(Image.fromarray(s.grey).convert("RGB").quantize(256)),
    "png16": lambda s: encode(s.grey.astype(np.uint16) * 257),
    "float32_tiff": lambda s: tiff_bytes(s.grey.astype(np.float32) / 255),
}
VALID_SUFFIX = {"float32_tiff": ".tif"}


def encode_image(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def tiff_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels)
    return buffer.getvalue()


def mask_of(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png))) > 0


@pytest.mark.parametrize("entry", ["predict", "api"])
def test_valid_unusual_formats_are_segmented(entry, source, tmp_path, capsys, caplog, request):
    """RGB, RGBA, palette, 16-bit PNG and float TIFF of a real X-ray: the same lungs as its PNG."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "original.png").write_bytes(source.png)
    for fmt, make in VALID_FORMATS.items():
        (folder / f"{fmt}{VALID_SUFFIX.get(fmt, '.png')}").write_bytes(make(source))
    masks: dict[str, np.ndarray] = {}
    if entry == "predict":
        out_dir = tmp_path / "out"
        code, out, _ = run_cli(["predict", folder, "-o", out_dir, "--quiet"], capsys, caplog)
        assert code == 0, out
        rows = list(csv.DictReader((out_dir / "results.csv").open()))
        assert [row["status"] for row in rows] == ["ok"] * (len(VALID_FORMATS) + 1)
        for path in folder.iterdir():
            masks[path.stem] = mask_of((out_dir / f"{path.stem}_mask.png").read_bytes())
    else:
        client = request.getfixturevalue("client")
        for path in folder.iterdir():
            response = client.post(
                "/v1/segment?format=png", files={"file": (path.name, path.read_bytes())}
            )
            assert response.status_code == 200, response.text
            masks[path.stem] = mask_of(response.content)
    reference = masks.pop("original")
    assert reference.shape == source.grey.shape and reference.mean() > 0.1
    for fmt, mask in masks.items():
        assert dice(mask, reference) > 0.99, fmt


# --- inputs that must not pass as "ok" (issue 15) ---------------------------------------------


def suspect_inputs(source: Source, folder: Path) -> dict[str, tuple[str, str]]:
    """Write the suspect files into ``folder``; per file name, (column, words it must hold)."""
    from pydicom.data import get_testdata_file

    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "ct_small.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), folder / "mr_small.dcm")
    (folder / "mirrored.png").write_bytes(encode(np.ascontiguousarray(source.grey[:, ::-1])))
    (folder / "upside_down.png").write_bytes(encode(np.ascontiguousarray(source.grey[::-1])))
    (folder / "at_300_dpi.png").write_bytes(encode(source.grey, dpi=(300, 300)))
    lateral = xray_dataset(source.grey, ViewPosition="LL")
    (folder / "lateral.dcm").write_bytes(dicom_file_bytes(lateral))
    return {
        "ct_small.dcm": ("error", "DICOM Modality CT (computed tomography) is not a chest"),
        "mr_small.dcm": ("error", "DICOM Modality MR (magnetic resonance) is not a chest"),
        "mirrored.png": ("reason", "the film looks mirrored"),
        "upside_down.png": ("reason", "the film looks upside down"),
        "at_300_dpi.png": ("warnings", "PNG resolution 300 dpi would make the image 4.33 x 4.33"),
        "lateral.dcm": ("reason", "lateral view (ViewPosition LL)"),
    }


def test_suspect_inputs_are_refused_or_flagged_by_predict_and_the_api(
    source, tmp_path, capsys, caplog, request
) -> None:
    """pydicom's CT and MR files (whose preamble looks like a TIFF) are refused naming the
    modality; a mirrored, an upside-down and a lateral film are segmented but flagged "check"
    with the reason; a 300-dpi PNG gets no cm2 and says why. The untouched X-ray stays "ok"."""
    from lungseg.data.io import REFUSED_MODALITIES

    assert REFUSED_MODALITIES["CT"] == "computed tomography"
    assert REFUSED_MODALITIES["MR"] == "magnetic resonance"
    folder, out_dir = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    (folder / "original.png").write_bytes(source.png)
    expected = suspect_inputs(source, folder)
    code, out, _ = run_cli(["predict", folder, "-o", out_dir, "--quiet"], capsys, caplog)
    assert code == 1  # two inputs were refused
    rows = {Path(row["file"]).name: row for row in csv.DictReader((out_dir / "results.csv").open())}
    assert rows["original.png"]["status"] == "ok" and rows["original.png"]["quality"] == "ok"
    for name, (column, words) in expected.items():
        row = rows[name]
        assert words in row[column], (name, row)
        if column == "error":
            assert row["status"] == "error" and str(folder / name) in row["error"]
            assert not (out_dir / f"{Path(name).stem}_mask.png").exists()
        elif column == "reason":
            assert row["status"] == "ok" and row["quality"] == "check", (name, row)
    assert rows["at_300_dpi.png"]["area_cm2"] == "" and int(rows["at_300_dpi.png"]["area_px"]) > 0

    client = request.getfixturevalue("client")
    for name, (column, words) in expected.items():
        response = client.post("/v1/segment", files={"file": (name, (folder / name).read_bytes())})
        body = response.json()
        if column == "error":
            assert response.status_code == 422 and words in body["detail"], response.text
        elif column == "reason":
            assert response.status_code == 200 and body["lungs"]["quality"] == "check"
            assert words in body["lungs"]["reason"], body["lungs"]
