"""The X-ray DICOM files the tests feed lungseg, built in one place.

Tests build a dataset with ``xray_dataset``, edit it where the case needs (drop the pixel data,
add a hospital's attributes, declare another transfer syntax), then store it with
``dicom_file_bytes`` or ``write_dicom_file``. ``benchmarks/fuzz_readers.py`` keeps its own copy:
a standalone tool does not import from ``tests/``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid


def xray_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    sop_class: str = DigitalXRayImageStorageForPresentation,
    **attributes: object,
) -> Dataset:
    """A DX dataset holding ``pixels`` uncompressed (explicit VR little endian), with file meta.

    Args:
        pixels: (H, W) or (frames, H, W) grey values, uint8 or uint16.
        photometric: ``MONOCHROME1`` stores an inverted image (white is 0).
        sop_class: the readers take any image SOP class; a test that wants another one than a
            digital X-ray for presentation (e.g. Secondary Capture) names it.
        **attributes: keywords set on the dataset after the pixels, so they may add to or
            override what the pixels set (e.g. ``PixelSpacing``, ``RescaleSlope``).
    """
    bits_stored = 12 if pixels.dtype == np.uint16 else 8  # a detector's raw 12 bits in uint16
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, photometric, bits_stored)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def dicom_file_bytes(ds: Dataset) -> bytes:
    """``ds`` as the bytes of a DICOM file, as a scanner's export stores it.

    ``enforce_file_format`` writes the 128-byte preamble, "DICM" and a complete meta header
    (media storage SOP class and instance filled in from the dataset). Without it pydicom 3
    writes a new dataset's meta elements bare, which ``dcmread`` refuses without ``force``.
    """
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dicom_file(path: Path, ds: Dataset) -> Path:
    """Store ``ds`` at ``path`` as a DICOM file (see ``dicom_file_bytes``); returns the path."""
    path.write_bytes(dicom_file_bytes(ds))
    return path
