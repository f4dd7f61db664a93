"""Where ``lungseg predict`` writes, and how a run survives interruption.

For an input named ``NAME`` the outputs are ``NAME_mask.png`` (0/255 at the original
resolution), ``NAME_overlay.png``, optionally ``NAME_probabilities.png`` (16-bit) and
``NAME_seg.dcm`` (DICOM Segmentation). Each file is written atomically, and only after all of
them the image's row is written to the journal (``.lungseg-predict/NAME.json``), also
atomically. The journal is the run's memory: an image with a row is finished and is skipped by a
rerun, a killed run leaves at worst complete files without a row (redone next time), and the
final ``results.csv`` is merged from the journal - by rank 0 alone in a distributed run, after
every rank has written its own rows.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.atomic import atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from lungseg.measure import LungMeasurements
from lungseg.png import encode_png
from lungseg.predict.inputs import InputImage

JOURNAL = ".lungseg-predict"

COLUMNS = (
    "file",
    "name",
    "status",
    "error",
    "width",
    "height",
    "pixel_spacing_mm",
    *(field.name for field in dataclasses.fields(LungMeasurements)),
)
"""results.csv columns. ``right``/``left`` are the PATIENT's sides (right lung = image left)."""


def output_path(out_dir: Path, image: InputImage, kind: str, suffix: str = ".png") -> Path:
    """``OUT/NAME_kind.png``, creating the mirrored sub-folder."""
    path = out_dir / f"{image.name}_{kind}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Encode pixels as PNG (see :func:`lungseg.png.encode_png`) and write them atomically."""
    atomic_write_bytes(path, encode_png(pixels))


def journal_path(out_dir: Path, image: InputImage) -> Path:
    return out_dir / JOURNAL / f"{image.name}.json"


def remove_interrupted_writes(out_dir: Path, images: Sequence[InputImage]) -> list[Path]:
    """Delete the temporary files a killed run left where ``images``' outputs and rows go.

    Files under their final names are always complete (atomic writes); the temporaries are the
    only trace a kill mid-write leaves, and without this they would pile up, one per kill.
    """
    folders = {out_dir, out_dir / JOURNAL}
    for image in images:
        folders.add((out_dir / image.name).parent)
        folders.add(journal_path(out_dir, image).parent)
    return [path for folder in sorted(folders) for path in remove_stale_temporaries(folder)]


def finished_row(out_dir: Path, image: InputImage) -> dict[str, Any] | None:
    """The journal row of an image a previous run finished successfully, else ``None``."""
    path = journal_path(out_dir, image)
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return row if row.get("status") == "ok" else None


def record_row(out_dir: Path, image: InputImage, row: dict[str, Any]) -> None:
    """Write one image's row to the journal: the last step of finishing (or failing) it.

    A failed image's row is not fsync'ed: a rerun retries it whether or not the row survived a
    power cut, and a folder of thousands of broken files should not wait on thousands of syncs.
    """
    path = journal_path(out_dir, image)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(row, sort_keys=True), durable=row["status"] == "ok")


def collect_rows(out_dir: Path, images: Sequence[InputImage]) -> list[dict[str, Any]]:
    """The journal rows of ``images``, in their order (images without a row are left out)."""
    rows = []
    for image in images:
        path = journal_path(out_dir, image)
        if path.is_file():
            rows.append(json.loads(path.read_text()))
    return rows


def write_results(
    out_dir: Path, rows: Sequence[dict[str, Any]], summary: dict[str, Any], as_json: bool
) -> Path:
    """``results.csv`` (one row per image) and, when asked, ``results.json`` with a summary."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in COLUMNS})
    csv_path = out_dir / "results.csv"
    atomic_write_text(csv_path, buffer.getvalue())
    if as_json:
        document = {"summary": summary, "images": list(rows)}
        atomic_write_text(out_dir / "results.json", json.dumps(document, indent=2) + "\n")
    return csv_path


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return " ".join(f"{v:g}" for v in value)
    return value
