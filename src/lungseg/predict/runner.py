"""The ``lungseg predict`` loop: segment with :meth:`Segmenter.predict_many`, write, merge.

Decoding (the slow, format-dependent part) runs in ``predict_many``'s DataLoader workers; a file
that cannot be read comes back as a :class:`~lungseg.inference.FailedInput`, so one bad file is
reported and skipped instead of ending the run (``strict`` ends it). Under ``torchrun`` every
rank takes every ``world_size``-th image of the input list and rank 0 merges the journal into
one table, so the result does not depend on how many processes made it.

Each row records the settings that made it (model, version, threshold, post-processing) and,
unless ``anonymize``, a DICOM input's SOPInstanceUID, StudyInstanceUID and PatientID
(:func:`dicom_ids`); see :data:`~lungseg.predict.outputs.COLUMNS`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lungseg.distributed import DistInfo, barrier, cleanup, init_distributed
from lungseg.errors import LungsegError
from lungseg.inference import FailedInput, Segmentation, Segmenter
from lungseg.overlay import render_overlay
from lungseg.predict.inputs import InputImage, collect_inputs
from lungseg.predict.outputs import (
    DICOM_COLUMNS,
    collect_rows,
    finished_row,
    output_path,
    record_row,
    remove_interrupted_writes,
    write_png,
    write_results,
)

log = logging.getLogger(__name__)

WITHHELD = "withheld"
"""Status of a row whose mask ``--min-quality`` kept back."""


@dataclass
class PredictOptions:
    """How to predict; the defaults are what the CLI uses."""

    batch_size: int = 8
    workers: int = 1
    postprocess: bool = True
    probabilities: bool = False
    dicom_seg: bool = False
    overwrite: bool = False
    strict: bool = False
    json_path: Path | None = None
    """Also write the table and a summary as JSON here (``--json PATH``)."""
    anonymize: bool = False
    """Leave the DICOM UIDs and PatientID out of the table (``--anonymize``)."""
    fix_orientation: bool = False
    """Segment mirrored or upside-down films the right way up (``--fix-orientation``)."""
    min_quality: float | None = None
    """Write no mask whose estimated Dice is below this (``--min-quality``); the row says why."""
    quality: bool = True
    """Run the quality pass where the weights carry a quality model (``--no-quality``: never)."""
    progress: bool = True


@dataclass
class PredictSummary:
    """What a run did: this process's share; on rank 0, ``failed`` counts the merged table and
    ``errors`` holds its failed rows' messages (``"FILE: reason"``), in table order."""

    images: int
    segmented: int
    skipped: int
    failed: int
    seconds: float
    results: Path | None
    errors: list[str] = field(default_factory=list)
    withheld: int = 0
    """Rows whose mask ``--min-quality`` kept back (rank 0: of the merged table)."""

    @property
    def images_per_second(self) -> float:
        return self.segmented / self.seconds if self.seconds > 0 else 0.0


def predict(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    segmenter: Segmenter,
    options: PredictOptions | None = None,
) -> PredictSummary:
    """Segment every image ``inputs`` names into ``out_dir``; see the module docstring."""
    options = options or PredictOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = collect_inputs(inputs, exclude=out_dir)
    dist = init_distributed(segmenter.runtime.device.type)
    try:
        return _predict(images, out_dir, segmenter, options, dist)
    finally:
        cleanup(dist)


def _predict(
    images: list[InputImage],
    out_dir: Path,
    segmenter: Segmenter,
    options: PredictOptions,
    dist: DistInfo,
) -> PredictSummary:
    if dist.is_main:  # before any rank writes: only a killed run's temporaries can be there
        for stale in remove_interrupted_writes(out_dir, images):
            log.info("removed %s, left by a run killed while writing it", stale)
    barrier(dist)
    run = run_columns(segmenter, options)
    mine = images[dist.rank :: dist.world_size]
    done = {} if options.overwrite else _finished_rows(out_dir, mine)
    todo = [im for im in mine if im.name not in done]
    skipped = len(mine) - len(todo)
    if skipped and dist.is_main:
        log.info("%d image(s) already done in %s (use --overwrite to redo them)", skipped, out_dir)
    other = sum(any(row.get(k) != v for k, v in run.items()) for row in done.values())
    if other and dist.is_main:
        log.warning(
            "%d of the images already done were made with another model, threshold or "
            "post-processing (results.csv's model, model_version, threshold and postprocess "
            "columns say which); --overwrite redoes them with this run's",
            other,
        )
    started = time.perf_counter()
    segmented = failed = 0
    bar = tqdm(
        total=len(todo),
        desc="predict",
        unit="img",
        disable=None if options.progress and dist.is_main else True,  # None: only on a terminal
    )
    results = segmenter.predict_many(
        [image.path for image in todo],
        batch_size=options.batch_size,
        workers=options.workers,
        postprocess=options.postprocess,
        fix_orientation=options.fix_orientation,
        skip_failed=True,
        quality=None if options.quality else False,
    )

    def write(image: InputImage, result: Segmentation | FailedInput) -> bool:
        """Write one image's files and row; False when it failed (and was recorded so)."""
        try:
            if isinstance(result, FailedInput):
                raise result.error()
            _write_one(out_dir, image, result, segmenter, options, run)
            return True
        except LungsegError as err:
            _fail(out_dir, image, str(err), options, run)
            return False

    # One writer thread: PNG encoding and file writes (which release the GIL) overlap the
    # network's next batch. At most two batches wait, so memory stays bounded.
    pending: deque[Future[bool]] = deque()
    limit = 2 * max(1, options.batch_size)

    def settle(count: int) -> None:
        nonlocal segmented, failed
        while len(pending) > count:
            if pending.popleft().result():  # re-raises what write() did not catch (strict)
                segmented += 1
            else:
                failed += 1
            bar.update()
            bar.set_postfix(img_s=f"{(segmented + failed) / (time.perf_counter() - started):.1f}")

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lungseg-write") as writer:
        try:
            for image, result in zip(todo, results, strict=True):
                pending.append(writer.submit(write, image, result))
                settle(limit)
            settle(0)
        finally:
            for future in pending:  # an error stops the run: drop what has not started
                future.cancel()
    bar.close()
    seconds = time.perf_counter() - started
    barrier(dist)
    results = None
    errors: list[str] = []
    withheld = 0
    if dist.is_main:
        rows = collect_rows(out_dir, images)
        if not options.anonymize:
            rows = [_with_dicom_ids(row) for row in rows]
        summary = {
            "images": len(images),
            "ok": sum(row["status"] == "ok" for row in rows),
            "withheld": sum(row["status"] == WITHHELD for row in rows),
            "failed": sum(row["status"] == "error" for row in rows),
            "model": segmenter.info.model_config.get("name"),
            "lungseg_version": segmenter.info.lungseg_version,
            "threshold": segmenter.threshold,
            "postprocess": options.postprocess,
            "anonymized": options.anonymize,
        }
        results = write_results(out_dir, rows, summary, options.json_path, options.anonymize)
        failed, withheld = summary["failed"], summary["withheld"]
        errors = [row["error"] for row in rows if row["status"] == "error"]
    return PredictSummary(len(mine), segmented, skipped, failed, seconds, results, errors, withheld)


def run_columns(segmenter: Segmenter, options: PredictOptions) -> dict[str, Any]:
    """The settings every row records (:data:`~lungseg.predict.outputs.RUN_COLUMNS`)."""
    return {
        "model": segmenter.info.model_config.get("name"),
        "model_version": segmenter.info.lungseg_version,
        "threshold": segmenter.threshold,
        "postprocess": options.postprocess,
    }


def dicom_ids(path: Path) -> dict[str, str]:
    """A DICOM file's SOPInstanceUID, StudyInstanceUID and PatientID (``""`` where missing).

    Only the three tags are read (no pixel data). A file that is not DICOM, or that cannot be
    read again, gives empty values: the ids label a row, they never fail it.
    """
    import pydicom

    from lungseg.data.io import looks_like_dicom

    ids = dict.fromkeys(DICOM_COLUMNS, "")
    try:
        with Path(path).open("rb") as stream:
            head = stream.read(132)
            if not looks_like_dicom(head):
                return ids
            stream.seek(0)
            ds = pydicom.dcmread(
                stream,
                stop_before_pixels=True,
                specific_tags=list(_DICOM_TAGS),
                force=head[128:132] != b"DICM",  # old files without a preamble, as read_image
            )
    except Exception:  # OSError, InvalidDicomError, struct errors on truncation, ...
        return ids
    for keyword, column in _DICOM_TAGS.items():
        value = ds.get(keyword)
        ids[column] = "" if value is None else str(value).strip()
    return ids


_DICOM_TAGS = dict(
    zip(("SOPInstanceUID", "StudyInstanceUID", "PatientID"), DICOM_COLUMNS, strict=True)
)


def _with_dicom_ids(row: dict[str, Any]) -> dict[str, Any]:
    """Fill in the ids of an ok row an ``--anonymize`` run recorded without them."""
    if row.get("status") != "ok" or all(column in row for column in DICOM_COLUMNS):
        return row
    return {**row, **dicom_ids(Path(row["file"]))}


def _finished_rows(out_dir: Path, images: Sequence[InputImage]) -> dict[str, dict[str, Any]]:
    """The journal rows of the ``images`` a previous run finished, by output name."""
    rows = {}
    for image in images:
        row = finished_row(out_dir, image)
        if row is not None:
            rows[image.name] = row
    return rows


def _fail(
    out_dir: Path,
    image: InputImage,
    message: str,
    options: PredictOptions,
    run: dict[str, Any],
) -> None:
    """Report a file that could not be segmented: stop (``strict``) or record it and go on."""
    if options.strict:
        raise LungsegError(message)
    log.warning("skipped %s", message)
    row = {"file": str(image.path), "name": image.name, "status": "error", "error": message}
    record_row(out_dir, image, {**row, **run})


def _write_one(
    out_dir: Path,
    image: InputImage,
    result: Segmentation,
    segmenter: Segmenter,
    options: PredictOptions,
    run: dict[str, Any],
) -> None:
    meta = result.meta
    assert meta is not None and result.grey is not None  # a file input states both
    estimate = result.measurements.estimated_dice
    withheld = options.min_quality is not None and estimate is not None
    withheld = withheld and estimate < options.min_quality  # type: ignore[operator]
    if not withheld:
        _write_images(out_dir, image, result, segmenter, options)
    spacing = meta.pixel_spacing_mm or (None, None)
    row: dict[str, Any] = {
        "file": str(image.path),
        "name": image.name,
        "status": WITHHELD if withheld else "ok",
        "error": f"estimated Dice {estimate:.3f} is below --min-quality {options.min_quality}: "
        "no mask written"
        if withheld
        else None,
        **run,
    }
    if not options.anonymize:
        row.update(
            dicom_ids(image.path)
            if meta.source_format == "dicom"
            else dict.fromkeys(DICOM_COLUMNS, "")
        )
    row.update(
        width=meta.width,
        height=meta.height,
        pixel_spacing_row_mm=spacing[0],
        pixel_spacing_col_mm=spacing[1],
        warnings="; ".join(meta.warnings),
    )
    measurements = result.measurements.as_row()
    for column, value in measurements.items():  # areas to 0.01 cm2, in the JSON too
        if column.endswith("_cm2") and value is not None:
            measurements[column] = round(value, 2)
    row.update(measurements)
    record_row(out_dir, image, row)


def _write_images(
    out_dir: Path,
    image: InputImage,
    result: Segmentation,
    segmenter: Segmenter,
    options: PredictOptions,
) -> None:
    """The mask, heart, overlay (and probabilities, DICOM SEG) PNGs of one image."""
    meta = result.meta
    assert meta is not None and result.grey is not None
    write_png(output_path(out_dir, image, "mask"), result.mask.astype(np.uint8) * 255)
    if result.heart is not None:
        write_png(output_path(out_dir, image, "heart"), result.heart.astype(np.uint8) * 255)
    overlay = render_overlay(result.grey / 255.0, result.labels, heart=result.heart)
    write_png(output_path(out_dir, image, "overlay"), overlay)
    if options.probabilities:
        scaled = np.round(result.probabilities * 65535).astype(np.uint16)
        write_png(output_path(out_dir, image, "probabilities"), scaled)
    if options.dicom_seg and meta.source_format == "dicom":
        from lungseg.dicom_seg import write_dicom_seg

        write_dicom_seg(
            image.path,
            result.labels,
            output_path(out_dir, image, "seg", ".dcm"),
            model_name=str(segmenter.info.model_config.get("name")),
            model_version=segmenter.info.lungseg_version,
            heart=result.heart,
        )
