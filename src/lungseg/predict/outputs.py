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

RUN_COLUMNS = ("model", "model_version", "threshold", "postprocess")
"""What made the row's masks: the architecture and the lungseg version the weights name, the
threshold and whether the masks were post-processed. Recorded per row, when the image is done,
so a rerun that skips finished images never attributes them to its own settings."""

DICOM_COLUMNS = ("sop_instance_uid", "study_instance_uid", "patient_id")
"""For a DICOM input its SOPInstanceUID, StudyInstanceUID and PatientID, so a row links back to
the archive; empty for other formats and for a DICOM without the tag. ``--anonymize`` leaves
the three columns out (of results.csv and the JSON)."""

COLUMNS = (
    "file",
    "name",
    "status",
    "error",
    *RUN_COLUMNS,
    *DICOM_COLUMNS,
    "width",
    "height",
    "pixel_spacing_row_mm",
    "pixel_spacing_col_mm",
    "warnings",
    *(field.name for field in dataclasses.fields(LungMeasurements)),
)
"""results.csv columns, in this order, one row per input in input order. ``right``/``left``
are the PATIENT's sides (right lung = image left). Areas in cm2 are rounded to 0.01 cm2 and
empty when the file states no pixel spacing; the spacing is the file's (row, column) spacing
in mm. ``warnings`` holds what the reader noticed about the file (a lateral view, an unusual
DICOM Modality, a resolution dropped as implausible), joined by "; "."""


def columns(anonymize: bool = False) -> tuple[str, ...]:
    """results.csv's columns; ``anonymize`` leaves out :data:`DICOM_COLUMNS`."""
    return tuple(c for c in COLUMNS if not (anonymize and c in DICOM_COLUMNS))


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
    out_dir: Path,
    rows: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    json_path: Path | None = None,
    anonymize: bool = False,
) -> Path:
    """``OUT/results.csv`` (one row per image) and, when asked, the same rows with a summary as
    JSON at ``json_path``. ``anonymize`` drops :data:`DICOM_COLUMNS` from both, also from rows
    an earlier run without it recorded."""
    fields = columns(anonymize)
    rows = [{k: v for k, v in _upgrade(row).items() if k in fields} for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(k, row.get(k)) for k in fields})
    csv_path = out_dir / "results.csv"
    atomic_write_text(csv_path, buffer.getvalue())
    if json_path is not None:
        document = {"summary": summary, "images": rows}
        atomic_write_text(json_path, json.dumps(document, indent=2) + "\n")
    return csv_path


def _upgrade(row: dict[str, Any]) -> dict[str, Any]:
    """A journal row of an older lungseg (spacing as one list) in today's columns."""
    if "pixel_spacing_mm" not in row:
        return row
    row = dict(row)
    spacing = row.pop("pixel_spacing_mm") or (None, None)
    row["pixel_spacing_row_mm"], row["pixel_spacing_col_mm"] = spacing
    return row


def _cell(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    if column.endswith("_cm2"):
        return f"{value:.2f}"
    if column.endswith("_mm") or column == "threshold":
        return f"{value:g}"
    return f"{value:.4f}"
