"""Write lungseg's left/right lungs (and heart) as a DICOM Segmentation (SEG) of their source.

A clinical pipeline that sends a DICOM radiograph wants the answer back as DICOM, in the same
study, pointing at the exact image it describes, so a PACS or viewer can overlay it. highdicom
builds that object: a BINARY SEG whose header is copied from the source (patient, study) and
whose Referenced Series/Instance sequences name the source's SOP Instance UID.

Decisions, so callers know what they get:

* Segments are coded as DICOM recommends (CID 7150/7151/244, SNOMED CT): category "Anatomical
  Structure", type "Lung", with a "Right" or "Left" laterality modifier
  (Segmented Property Type Modifier Code Sequence). pydicom's code dictionary has no
  pre-coordinated "Right lung"/"Left lung" codes, because the standard expresses laterality
  with the modifier.
* A heart mask (from weights with a heart channel) adds a segment after the lungs: category
  "Anatomical Structure", type "Heart" (SNOMED CT 80891009), no laterality; it is written
  whenever a heart mask is given, empty or not, since the heart overlaps the lungs in
  projection and a BINARY SEG allows overlapping segments.
* Only the lungs present in the labels become segments, numbered from 1 in the order right,
  left (highdicom requires consecutive numbers): a mask with only a left lung gives one
  segment, number 1, "Left lung". Readers should go by label or code, not by number.
* An all-background mask still gives a SEG, describing both lungs with empty frames: the
  algorithm ran and found no lung, and a pipeline should receive that result rather than a
  missing object or an error that blames a valid source file.
* Source attributes: the Type 1 identifiers a SEG must copy or reference (StudyInstanceUID,
  SeriesInstanceUID, SOPInstanceUID, SOPClassUID) are required; without them the SEG could not
  join the source's study, so the file is refused. The Type 2 patient/study attributes highdicom
  copies (PatientID, PatientName, PatientBirthDate, PatientSex, AccessionNumber, StudyID,
  StudyDate, StudyTime) are often missing in real exports; the standard allows them to be empty
  ("unknown"), so a missing one is written empty in the SEG. Nothing is invented, and the
  source file is never modified.
* Multi-frame sources are refused: lungseg segments single-frame radiographs, and a label
  array for one frame cannot be tied to the right frame of many.
* A source without a patient frame of reference (every ordinary DX/CR radiograph) gets a SEG
  tied to it pixel for pixel through the reference alone, with no Pixel Measures: spacing has
  no frame to live in there (DICOM PS3.3 A.51.5), and highdicom 0.28 would otherwise write a
  Pixel Measures item without Slice Thickness that its own ``segread`` refuses. The source's
  PixelSpacing still describes the SEG's pixels, which match the source's one for one.
* A header highdicom still cannot turn into a SEG (e.g. an invalid date, or a frame of
  reference with incomplete geometry) is refused with highdicom's reason.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lungseg import __version__
from lungseg.atomic import atomic_write_bytes
from lungseg.data.io import read_meta
from lungseg.errors import InvalidInputError

if TYPE_CHECKING:  # highdicom and pydicom load on first use: importing this module stays cheap
    from highdicom import AlgorithmIdentificationSequence
    from highdicom.seg import Segmentation, SegmentDescription
    from pydicom import Dataset
    from pydicom.sr.coding import Code

__all__ = ["write_dicom_seg"]

log = logging.getLogger(__name__)

RIGHT_LUNG = 1
"""Label value of the patient's right lung (on the image's left in a PA view)."""
LEFT_LUNG = 2
"""Label value of the patient's left lung."""

SERIES_NUMBER = 99
"""The SEG series' number: high, so viewers that sort by series number list it after the
acquired images; lungseg cannot know which numbers the study already uses."""

_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_EMPTY_WHEN_MISSING = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)
_SIDES = ((RIGHT_LUNG, "Right lung", "Right"), (LEFT_LUNG, "Left lung", "Left"))


def write_dicom_seg(
    source: str | Path,
    labels: np.ndarray,
    out: str | Path,
    *,
    model_name: str,
    model_version: str,
    heart: np.ndarray | None = None,
) -> Path:
    """Write a BINARY DICOM SEG of ``labels`` that references the DICOM image ``source``.

    Args:
        source: the DICOM radiograph the labels were computed from.
        labels: integer (H, W) array at the source's Rows x Columns: 0 background,
            1 the patient's right lung, 2 the patient's left lung.
        out: where to write the SEG (written atomically; parent folders are created).
        model_name: the lungseg model, recorded as algorithm name ``"lungseg <model_name>"``.
        model_version: the model's version, recorded as the algorithm version.
        heart: bool (H, W) heart mask at the same size, written as one more segment.

    Returns:
        ``out`` as a Path.

    Raises:
        InvalidInputError: ``source`` is missing, not DICOM, has no pixel data, is multi-frame,
            lacks a UID the SEG must reference, has a header highdicom rejects, or is not the
            size of ``labels``; the message names the file. Nothing is written then.
        ValueError: ``labels`` is not a 2-D integer array of values 0, 1 and 2 (a caller bug,
            not a bad file).
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    source = Path(source)
    labels = _checked_labels(labels)
    header = _read_source_header(source)
    rows, columns = int(header.Rows), int(header.Columns)
    if labels.shape != (rows, columns):
        raise InvalidInputError(
            source,
            f"labels are {labels.shape[1]}x{labels.shape[0]} (WxH) but the DICOM image is "
            f"{columns}x{rows}; pass labels at the image's original resolution",
        )

    if heart is not None and np.shape(heart) != labels.shape:
        raise ValueError(f"heart mask {np.shape(heart)} and labels {labels.shape} differ")
    sides = [side for side in _SIDES if (labels == side[0]).any()] or list(_SIDES)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"lungseg {model_name}",
        family=codes.cid7162.ArtificialIntelligence,
        version=model_version,
    )
    segments = [(labels == value, label, codes.cid7151.Lung, lat) for value, label, lat in sides]
    if heart is not None:
        segments.append((np.asarray(heart, dtype=bool), "Heart", codes.cid7151.Heart, None))
    descriptions = [
        _segment_description(number, label, structure, laterality, algorithm)
        for number, (_, label, structure, laterality) in enumerate(segments, start=1)
    ]
    # Stacked-segments layout (frames, H, W, segments): segment i + 1 is pixel_array[..., i].
    masks = np.stack([mask for mask, _, _, _ in segments], axis=-1)[np.newaxis]
    try:
        seg = _build_segmentation(header, masks, descriptions, model_name, model_version)
    except (AttributeError, ValueError) as err:  # what highdicom raises on a header it rejects
        raise InvalidInputError(
            source, f"cannot build a DICOM SEG from this DICOM header: {err}"
        ) from None
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, seg, enforce_file_format=True)
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    log.debug("%s: wrote DICOM SEG %s (%d segments)", source, out, len(descriptions))
    return out


def _build_segmentation(
    header: Dataset,
    masks: np.ndarray,
    descriptions: list[SegmentDescription],
    model_name: str,
    model_version: str,
) -> Segmentation:
    """highdicom's BINARY SEG of ``masks`` (1, H, W, segments) for the one image ``header``."""
    import highdicom as hd

    return hd.seg.Segmentation(
        source_images=[header],
        pixel_array=masks.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lungseg",
        manufacturer_model_name=f"lungseg {model_name}",
        software_versions=__version__,
        # Software has no serial number; the model version identifies which "device" it was.
        device_serial_number=model_version,
        content_label="LUNGS",
        content_description=f"Lung segmentation by lungseg {model_name} {model_version}",
        series_description=f"lungseg lungs ({model_name})",
        # An empty mask keeps its (empty) frames: highdicom cannot omit every frame.
        omit_empty_frames=bool(masks.any()),
    )


def _checked_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D (H, W) array, got shape {labels.shape}")
    if labels.dtype.kind not in "uib":
        raise ValueError(f"labels must hold integers 0, 1, 2, got dtype {labels.dtype}")
    unexpected = np.setdiff1d(np.unique(labels), (0, RIGHT_LUNG, LEFT_LUNG))
    if unexpected.size:
        raise ValueError(
            f"labels may only be 0 (background), {RIGHT_LUNG} (right lung) and {LEFT_LUNG} "
            f"(left lung), found {unexpected.tolist()}"
        )
    return labels


def _read_source_header(source: Path) -> Dataset:
    """The source's header (no pixel data), checked for what a SEG needs from it.

    :func:`lungseg.data.io.read_meta` runs first so a missing, empty, non-image or pixel-less
    file fails with the same message the reader gives everywhere else.
    """
    import pydicom
    from highdicom.spatial import get_image_coordinate_system

    meta = read_meta(source)
    if meta.source_format != "dicom":
        raise InvalidInputError(
            source,
            f"is a {meta.source_format.upper()} image, not DICOM; a DICOM SEG can only "
            "reference a DICOM image",
        )
    # read_meta has seen DICOM content, so force only lets preamble-less files through.
    header = pydicom.dcmread(source, stop_before_pixels=True, force=True)
    frames = int(header.get("NumberOfFrames") or 1)
    if frames > 1:
        raise InvalidInputError(
            source, f"multi-frame DICOM ({frames} frames); only single-frame images are supported"
        )
    missing = [keyword for keyword in _REQUIRED_UIDS if not header.get(keyword)]
    if missing:
        raise InvalidInputError(
            source,
            f"DICOM file lacks {', '.join(missing)}, which a DICOM SEG must copy or reference",
        )
    for keyword in _EMPTY_WHEN_MISSING:
        if keyword not in header:
            setattr(header, keyword, "")
    if get_image_coordinate_system(header) is None and "PixelSpacing" in header:
        del header.PixelSpacing  # no frame of reference: see the module docstring
    return header


def _segment_description(
    number: int,
    label: str,
    structure: Code,
    laterality: str | None,
    algorithm: AlgorithmIdentificationSequence,
) -> SegmentDescription:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=codes.cid7150.AnatomicalStructure,
        segmented_property_type=structure,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    if laterality is None:
        return description
    description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
        hd.sr.CodedConcept.from_code(getattr(codes.cid244, laterality))
    ]
    return description
