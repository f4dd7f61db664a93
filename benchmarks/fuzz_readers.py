"""Fuzz lungseg's image and DICOM readers with hypothesis: any bytes decode or are refused cleanly.

The contract every reader in :mod:`lungseg.data.io` and :mod:`lungseg.data.masks` keeps,
whatever the bytes:

* it returns a float32 (H, W) array in [0, 1] without NaN or infinity, whose size is the one its
  :class:`~lungseg.data.io.ImageMeta` states (a sane meta: at least ``MIN_SIDE`` a side, within
  ``max_pixels``, a finite positive spacing if any; ``read_meta`` states the same size;
  ``read_mask_values`` and ``read_mask`` return that size too), and ``read_image`` on a file
  agrees with ``read_image_bytes`` on its bytes; or
* it raises :class:`~lungseg.errors.InvalidInputError` (or a subclass) whose one-line message
  names the input, with the same reason for the file and for its bytes.

Anything else is a bug: another exception, a crash (a signal), a hang, NaN or values outside
[0, 1], or a peak memory growth over :data:`BYTES_PER_PIXEL_BUDGET` bytes per allowed pixel.

Inputs come from :func:`fuzz_cases`: well-formed seed files made from one real X-ray (the PNG as
it is in the shared data, and the same X-ray re-encoded as JPEG, 16-bit PNG, TIFF, BMP and
DICOM: uncompressed, deflated, JPEG baseline, RLE, JPEG 2000, and without a meta header), edited
where the decoders look first (PNG IHDR fields with a recomputed CRC, JPEG SOF fields, TIFF IFD
entries, DICOM Rows/Columns/Bits*/PhotometricInterpretation/TransferSyntaxUID/PixelData/LUTs),
then byte flips, truncations, insertions and deletions; plus random bytes behind each format's
magic number. tests/test_fuzz_readers.py runs a short, derandomised version of the same cases.

The campaign runs in worker processes watched by this one, so a crash or a hang is caught and
its input kept: a worker writes each input under ``<out>/work/`` (and what it is in
``current.json``) before reading it, stops itself through :mod:`faulthandler` when one input
takes longer than ``--hang-seconds``, and runs under an address-space limit, so a runaway
allocation is a MemoryError (a bug) rather than a machine out of memory. Each distinct failure
is saved once (its smallest input) under ``<out>/failures/`` with a JSON note; ``--replay FILE``
runs one saved input again::

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/fuzz_readers.py --minutes 5
    .venv/bin/python benchmarks/fuzz_readers.py --replay runs/fuzz/failures/<name>.bin

Exit code 0 when no bug was found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import hashlib
import io
import json
import os
import random
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, SearchStrategy

from lungseg.atomic import atomic_write_bytes, atomic_write_text
from lungseg.data.io import MIN_SIDE, read_image, read_image_bytes, read_meta
from lungseg.data.masks import read_mask, read_mask_values
from lungseg.errors import InvalidInputError, LungsegError

REPO = Path(__file__).resolve().parents[1]
SEED_XRAY = Path("montgomery/images/MCUCXR_0001_0.png")
"""The real X-ray (relative to the data folder) every seed file is made from."""
SEED_SIDE = 96
"""Side of the re-encoded seeds: small enough that mutations often land in a header."""
FUZZ_MAX_PIXELS = 1 << 21
"""``max_pixels`` given to the readers: mutated headers claiming more must be refused."""
BYTES_PER_PIXEL_BUDGET = 96
"""Peak memory a decode may add per allowed pixel: 4 samples as float64, plus a few copies."""
RANDOM = "random"
"""The kind of case that is random bytes behind a magic number rather than an edited seed."""

_SOURCE_FORMATS = {"png", "jpeg", "tiff", "bmp", "dicom"}
_MAGIC = {
    "none": b"",
    "png": b"\x89PNG\r\n\x1a\n",
    "jpeg": b"\xff\xd8\xff",
    "tiff-le": b"II*\x00",
    "tiff-be": b"MM\x00*",
    "bigtiff": b"II+\x00\x08\x00\x00\x00",
    "bmp": b"BM",
    "dicom": bytes(128) + b"DICM",
    "dicom-no-meta": b"\x08\x00",
}

# --- seeds ------------------------------------------------------------------------------------


class SeedFiles(dict[str, bytes]):
    """Seed kind -> file bytes; its repr lists only the kinds (hypothesis prints strategies)."""

    def __repr__(self) -> str:
        return f"SeedFiles({', '.join(self)})"


def build_seeds(data_root: Path) -> SeedFiles:
    """The well-formed files mutations start from, all made from one real X-ray.

    The data set holds only 8-bit PNGs, so every other format is that X-ray re-encoded (at
    :data:`SEED_SIDE` pixels) the way scanners and PACS exports write it.

    Raises:
        FileNotFoundError: the data folder lacks :data:`SEED_XRAY`.
    """
    import tifffile
    from PIL import Image
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        RLELossless,
    )

    real_png = (data_root / SEED_XRAY).read_bytes()
    with Image.open(io.BytesIO(real_png)) as image:
        grey = image.convert("L").resize((SEED_SIDE, SEED_SIDE), Image.Resampling.BILINEAR)
    grey8 = np.asarray(grey)
    grey12 = grey8.astype(np.uint16) * 16  # a 12-bit detector's range

    def pillow(pixels: np.ndarray, fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt, **options)
        return buffer.getvalue()

    tiff16 = io.BytesIO()
    tifffile.imwrite(
        tiff16, grey8.astype(np.uint16) * 257, resolution=(50.0, 50.0), resolutionunit="CENTIMETER"
    )
    seeds = {
        "png-8bit": real_png,
        "png-16bit": pillow(grey8.astype(np.uint16) * 257, "PNG", dpi=(254, 254)),
        "jpeg": pillow(grey8, "JPEG", quality=90),
        "tiff-16bit": tiff16.getvalue(),
        "tiff-lzw": pillow(grey8, "TIFF", compression="tiff_lzw"),  # Pillow's path, not tifffile's
        "bmp": pillow(grey8, "BMP"),
    }

    def dicom(syntax: str | None, pixels: np.ndarray = grey12, **attrs) -> bytes:
        ds = _dicom_dataset(pixels, **attrs)
        if syntax == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
        elif syntax == JPEGBaseline8Bit:
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([pillow(pixels, "JPEG", quality=90)])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = syntax
            ds.LossyImageCompression = "01"
        elif syntax is not None:
            ds.compress(syntax)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    seeds["dicom-explicit"] = dicom(
        None,
        PixelSpacing=[0.143, 0.143],
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=1000,
        WindowWidth=3000,
    )
    seeds["dicom-deflate"] = dicom(DeflatedExplicitVRLittleEndian, ImagerPixelSpacing=[0.2, 0.2])
    seeds["dicom-jpeg-baseline"] = dicom(JPEGBaseline8Bit, grey8)
    seeds["dicom-rle"] = dicom(RLELossless, photometric="MONOCHROME1")
    seeds["dicom-j2k"] = dicom(JPEG2000Lossless)
    seeds["dicom-no-meta"] = _dicom_without_meta(_dicom_dataset(grey12))
    return SeedFiles(seeds)


def _dicom_dataset(pixels: np.ndarray, photometric: str = "MONOCHROME2", **attrs):
    """A digital X-ray DICOM dataset holding ``pixels`` uncompressed (12 bits stored if 16-bit)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        DigitalXRayImageStorageForPresentation,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, photometric, 12 if pixels.dtype == np.uint16 else 8)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def _dicom_without_meta(ds) -> bytes:
    """An ACR-NEMA-era file: implicit VR little endian, no preamble, no meta header."""
    import pydicom

    del ds.file_meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


# --- cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzCase:
    """One input for the readers and how it was made (enough to make it again from the seeds).

    Attributes:
        kind: the seed it was made from, or :data:`RANDOM`.
        mutations: what was done to the seed, in order, in words.
        data: the bytes the readers get.
    """

    kind: str
    mutations: tuple[str, ...]
    data: bytes

    @property
    def file_name(self) -> str:
        """A name with the seed format's usual suffix (the readers sniff content, not names)."""
        suffix = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "bmp": ".bmp", "dicom": ".dcm"}
        return "fuzz-input" + suffix.get(self.kind.split("-")[0], ".bin")

    def __repr__(self) -> str:
        return f"FuzzCase({self.kind!r}, {self.mutations!r}, {len(self.data)} bytes)"

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        """What hypothesis prints for a failing case: the recipe, not up to 100 KB of bytes."""
        printer.text(repr(self))


def fuzz_cases(seeds: Mapping[str, bytes]) -> SearchStrategy[FuzzCase]:
    """Cases made from ``seeds`` (see :func:`build_seeds`): header edits, byte edits, random."""
    return _fuzz_case(SeedFiles(seeds))


@st.composite
def _fuzz_case(draw: DrawFn, seeds: SeedFiles) -> FuzzCase:
    kind = draw(st.sampled_from([*sorted(seeds), RANDOM]))
    if kind == RANDOM:
        magic = draw(st.sampled_from(sorted(_MAGIC)))
        body = draw(st.binary(max_size=2048))
        return FuzzCase(kind, (f"{magic} magic + {len(body)} random bytes",), _MAGIC[magic] + body)
    data, notes = seeds[kind], []
    source_format = kind.split("-")[0]
    header_edit = _HEADER_EDITS.get(source_format)
    if header_edit is not None and draw(st.booleans()):
        data = header_edit(draw, data, notes)
    for _ in range(draw(st.integers(0, 4))):
        data = _byte_edit(draw, data, notes)
    if source_format == "png" and draw(st.booleans()):
        data = _png_fix_crcs(data)  # so the decoder gets past the CRC check to the edited bytes
        notes.append("every chunk CRC recomputed")
    return FuzzCase(kind, tuple(notes), data)


_U16 = st.one_of(
    st.sampled_from([0, 1, 2, 3, 8, 15, 16, 17, 255, 256, 1448, 32767, 32768, 65535]),
    st.integers(0, 0xFFFF),
)
_U32 = st.one_of(
    st.sampled_from([0, 1, 15, 16, 17, 96, 512, 1448, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1]),
    st.integers(0, 0xFFFFFFFF),
)


def _position(draw: DrawFn, size: int) -> int:
    """An offset in ``size`` bytes, half of the time in bytes 8-511: past the magic numbers,
    which sniffing already turns away cheaply, and where the headers are."""
    header = st.integers(min(8, size - 1), min(size, 512) - 1)
    return draw(st.one_of(header, st.integers(0, size - 1)))


def _byte_edit(draw: DrawFn, data: bytes, notes: list[str]) -> bytes:
    if not data:
        inserted = draw(st.binary(min_size=1, max_size=16))
        notes.append(f"{len(inserted)} bytes written into an empty file")
        return inserted
    operation = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "integer"]))
    at = _position(draw, len(data))
    if operation == "flip":
        bit = draw(st.integers(0, 7))
        notes.append(f"bit {bit} of byte {at} flipped")
        return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1 :]
    if operation == "set":
        value = draw(st.one_of(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]), st.integers(0, 255)))
        notes.append(f"byte {at} set to {value:#04x}")
        return data[:at] + bytes([value]) + data[at + 1 :]
    if operation == "truncate":
        notes.append(f"truncated to {at} bytes")
        return data[:at]
    if operation == "insert":
        inserted = draw(st.one_of(st.binary(min_size=1, max_size=16), st.just(data[at : at + 64])))
        notes.append(f"{len(inserted)} bytes inserted at {at}")
        return data[:at] + inserted + data[at:]
    if operation == "delete":
        length = draw(st.integers(1, 64))
        notes.append(f"{length} bytes deleted at {at}")
        return data[:at] + data[at + length :]
    value, fmt = draw(st.one_of(st.tuples(_U16, st.just("<H")), st.tuples(_U32, st.just("<I"))))
    notes.append(f"{struct.calcsize(fmt) * 8}-bit {value} written at {at}")
    return data[:at] + struct.pack(fmt, value) + data[at + struct.calcsize(fmt) :]


# PNG: IHDR fields, pHYs, whole chunks; CRCs recomputed so the decoder reads the edited bytes.

_PNG_SIGNATURE = _MAGIC["png"]
_IHDR_FIELDS = {  # name: (offset in the IHDR body, struct format, values)
    "width": (0, ">I", _U32),
    "height": (4, ">I", _U32),
    "bit depth": (8, ">B", st.sampled_from([0, 1, 2, 3, 4, 8, 16, 32, 255])),
    "colour type": (9, ">B", st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 255])),
    "compression": (10, ">B", st.sampled_from([0, 1, 255])),
    "filter": (11, ">B", st.sampled_from([0, 1, 255])),
    "interlace": (12, ">B", st.sampled_from([0, 1, 2, 255])),
}


def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, total length) of each complete chunk after the signature."""
    chunks, offset = [], len(_PNG_SIGNATURE)
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        if offset + 12 + length > len(data):
            break
        chunks.append((offset, 12 + length))
        offset += 12 + length
    return chunks


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_fix_crcs(data: bytes) -> bytes:
    fixed = bytearray(data)
    for offset, length in _png_chunks(data):
        crc = zlib.crc32(data[offset + 4 : offset + length - 4])
        struct.pack_into(">I", fixed, offset + length - 4, crc)
    return bytes(fixed)


def _png_header_edit(draw: DrawFn, data: bytes, notes: list[str]) -> bytes:
    chunks = _png_chunks(data)
    edit = draw(st.sampled_from(["ihdr", "ihdr", "phys", "drop chunk", "repeat chunk"]))
    if edit == "ihdr":
        name = draw(st.sampled_from(sorted(_IHDR_FIELDS)))
        offset, fmt, values = _IHDR_FIELDS[name]
        value = draw(values)
        edited = bytearray(data)
        struct.pack_into(fmt, edited, len(_PNG_SIGNATURE) + 8 + offset, value)
        notes.append(f"IHDR {name} set to {value}")
        return _png_fix_crcs(bytes(edited))
    if edit == "phys":  # pixels per unit: the resolution behind pixel_spacing_mm
        x, y, unit = draw(_U32), draw(_U32), draw(st.sampled_from([0, 1, 2, 255]))
        notes.append(f"pHYs {x}x{y} unit {unit} inserted")
        after_ihdr = len(_PNG_SIGNATURE) + 25
        return (
            data[:after_ihdr]
            + _png_chunk(b"pHYs", struct.pack(">IIB", x, y, unit))
            + data[after_ihdr:]
        )
    index = draw(st.integers(0, len(chunks) - 1))
    offset, length = chunks[index]
    chunk_type = data[offset + 4 : offset + 8].decode("latin-1")
    if edit == "drop chunk":
        notes.append(f"chunk {index} ({chunk_type}) dropped")
        return data[:offset] + data[offset + length :]
    notes.append(f"chunk {index} ({chunk_type}) repeated")
    return data[: offset + length] + data[offset : offset + length] + data[offset + length :]


# JPEG: the frame header (SOF): process, precision, size, components.

_SOF_MARKERS = [m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC)]
_SOF_FIELDS = {  # name: (offset from the marker, struct format, values)
    "process": (1, ">B", st.sampled_from(_SOF_MARKERS)),
    "precision": (4, ">B", st.sampled_from([0, 1, 2, 8, 12, 16, 255])),
    "height": (5, ">H", _U16),
    "width": (7, ">H", _U16),
    "components": (9, ">B", st.sampled_from([0, 1, 2, 3, 4, 255])),
    "sampling": (11, ">B", st.sampled_from([0x00, 0x11, 0x22, 0x41, 0xFF])),
}


def _jpeg_frame_header(data: bytes) -> int | None:
    """Offset of the SOF marker, found by walking the segments before the scan."""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker in _SOF_MARKERS:
            return offset
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        (length,) = struct.unpack_from(">H", data, offset + 2)
        offset += 2 + length
    return None


def _jpeg_header_edit(draw: DrawFn, data: bytes, notes: list[str]) -> bytes:
    sof = _jpeg_frame_header(data)
    if sof is None:
        return data
    name = draw(st.sampled_from(sorted(_SOF_FIELDS)))
    offset, fmt, values = _SOF_FIELDS[name]
    value = draw(values)
    edited = bytearray(data)
    struct.pack_into(fmt, edited, sof + offset, value)
    notes.append(f"SOF {name} set to {value}")
    return bytes(edited)


# TIFF: one field (type, count or value) of one entry of the first IFD.

_TIFF_TAG_NAMES = {
    256: "ImageWidth",
    257: "ImageLength",
    258: "BitsPerSample",
    259: "Compression",
    262: "Photometric",
    273: "StripOffsets",
    277: "SamplesPerPixel",
    278: "RowsPerStrip",
    279: "StripByteCounts",
    282: "XResolution",
    283: "YResolution",
    284: "PlanarConfig",
    296: "ResolutionUnit",
    317: "Predictor",
    339: "SampleFormat",
}


def tiff_entries(data: bytes) -> dict[int, tuple[int, int]]:
    """Tag -> (offset of its 12-byte entry, field type) in the first IFD of a classic
    little-endian TIFF (what tifffile and Pillow write on x86)."""
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    entries = {}
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, field_type = struct.unpack_from("<HH", data, entry)
        entries[tag] = (entry, field_type)
    return entries


def tiff_set_entry(data: bytes, tag: int, what: str, value: int) -> bytes:
    """Set the ``"type"``, ``"count"`` or ``"value"`` of a first-IFD entry to ``value``; a
    value is written as the entry's own type says (SHORT: 2 bytes, else 4: a LONG or an
    offset to values stored elsewhere)."""
    entry, field_type = tiff_entries(data)[tag]
    offset, fmt = {"type": (2, "<H"), "count": (4, "<I")}.get(
        what, (8, "<H" if field_type == 3 else "<I")
    )
    edited = bytearray(data)
    struct.pack_into(fmt, edited, entry + offset, value)
    return bytes(edited)


def _tiff_header_edit(draw: DrawFn, data: bytes, notes: list[str]) -> bytes:
    entries = tiff_entries(data)
    tag = draw(st.sampled_from(sorted(entries)))
    what = draw(st.sampled_from(["value", "value", "count", "type"]))
    if what == "type":
        value = draw(st.integers(0, 20))
    elif what == "count" or entries[tag][1] != 3:
        value = draw(_U32)
    else:
        value = draw(_U16)
    notes.append(f"IFD {_TIFF_TAG_NAMES.get(tag, tag)} {what} set to {value}")
    return tiff_set_entry(data, tag, what, value)


# DICOM: image attributes written as raw values (pydicom would refuse invalid ones), pixel
# data cut or grown, LUTs added, and the transfer syntax patched in the meta header.

_DS_NUMBERS = ["0", "1", "-1", "0.5", "4096", "1e-30", "1e30", "1e308", "-1e308"]
_DS = st.sampled_from([*_DS_NUMBERS, "nan", "inf", "-inf", "", "abc", "1\\2"])  # valid, invalid
_PHOTOMETRIC = [
    "MONOCHROME1",
    "MONOCHROME2",
    "MONOCHROME3",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_RCT",
    "HSV",
]
_BITS = st.one_of(st.sampled_from([0, 1, 8, 12, 16, 24, 32, 64]), _U16)
_DICOM_FIELDS: dict[str, tuple[str, SearchStrategy]] = {
    "Rows": ("US", _U16),
    "Columns": ("US", _U16),
    "BitsAllocated": ("US", _BITS),
    "BitsStored": ("US", _BITS),
    "HighBit": ("US", _BITS),
    "PixelRepresentation": ("US", st.sampled_from([0, 1, 2])),
    "SamplesPerPixel": ("US", st.sampled_from([0, 1, 2, 3, 4, 65535])),
    "PlanarConfiguration": ("US", st.sampled_from([0, 1, 2])),
    "PhotometricInterpretation": ("CS", st.sampled_from(["", *_PHOTOMETRIC, "PALETTE COLOR"])),
    "NumberOfFrames": ("IS", st.sampled_from(["0", "1", "2", "-1", "1000000", "abc", ""])),
    "RescaleSlope": ("DS", _DS),
    "RescaleIntercept": ("DS", _DS),
    "WindowCenter": ("DS", _DS),
    "WindowWidth": ("DS", _DS),
    "VOILUTFunction": ("CS", st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "BOGUS"])),
    "PixelSpacing": ("DS", st.tuples(_DS, _DS).map("\\".join)),
    "ImagerPixelSpacing": ("DS", _DS),
}
_DICOM_DELETABLE = [
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "SamplesPerPixel",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "PixelData",
]
_DICOM_SYNTAXES = [
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.100",  # MPEG2 video
    "1.2.3.4",  # private
    "",
]


def _dicom_header_edit(draw: DrawFn, data: bytes, notes: list[str]) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    edits = ["set", "set", "set", "delete", "pixel data", "LUT"]
    if "TransferSyntaxUID" in ds.file_meta:
        edits.append("transfer syntax")
    syntax = None
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(edits))
        if edit == "set":
            keyword = draw(st.sampled_from(sorted(_DICOM_FIELDS)))
            vr, values = _DICOM_FIELDS[keyword]
            value = draw(values)
            set_raw_element(ds, keyword, vr, value)
            notes.append(f"{keyword} set to {value!r}")
        elif edit == "delete":
            keyword = draw(st.sampled_from(_DICOM_DELETABLE))
            if keyword in ds:
                del ds[keyword]
            notes.append(f"{keyword} deleted")
        elif edit == "pixel data" and "PixelData" in ds:
            ds.PixelData = _pixel_data_edit(draw, ds.PixelData, notes)
        elif edit == "LUT":
            _add_lut(draw, ds, notes)
        elif edit == "transfer syntax":
            syntax = draw(st.sampled_from(_DICOM_SYNTAXES))
            notes.append(f"TransferSyntaxUID set to {syntax!r}")
    original_syntax = ds.file_meta.get("TransferSyntaxUID")
    if original_syntax is not None and original_syntax.is_encapsulated:
        # pydicom refuses to write edited fragments under a compressed syntax: write them as
        # native, then patch the syntax back
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        syntax = original_syntax if syntax is None else syntax
    written = dicom_bytes(ds)
    return written if syntax is None else patch_transfer_syntax(written, syntax)


def dicom_bytes(ds) -> bytes:
    """``ds`` as a file, invalid values and all, in the encoding it was read with (or, for a
    new dataset, its transfer syntax's)."""
    import pydicom

    implicit_vr, little_endian = ds.original_encoding
    buffer = io.BytesIO()
    with _pydicom_lenient():
        pydicom.dcmwrite(buffer, ds, implicit_vr=implicit_vr, little_endian=little_endian)
    return buffer.getvalue()


def set_raw_element(ds, keyword: str, vr: str, value: int | str) -> None:
    """Store ``value`` as the element's raw bytes, valid or not, as a careless writer would."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    if vr == "US":
        raw = struct.pack("<H", value)
    else:
        raw = value.encode("ascii")
        raw += b" " * (len(raw) % 2)
    tag = Tag(tag_for_keyword(keyword))
    implicit_vr, _ = ds.original_encoding
    ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, implicit_vr, True)


def _pixel_data_edit(draw: DrawFn, pixel_data: bytes, notes: list[str]) -> bytes:
    how = draw(st.sampled_from(["truncate", "extend", "randomise", "empty"]))
    if how == "truncate":
        keep = draw(st.integers(0, max(len(pixel_data) - 1, 0)))
        notes.append(f"PixelData truncated to {keep} bytes")
        return pixel_data[:keep]
    if how == "extend":
        extra = draw(st.integers(1, 4 * len(pixel_data) + 1))
        notes.append(f"PixelData extended by {extra} zero bytes")
        return pixel_data + bytes(extra)
    if how == "randomise":
        noise = random.Random(draw(st.integers(0, 2**32 - 1))).randbytes(len(pixel_data))
        notes.append("PixelData replaced by random bytes of the same length")
        return noise
    notes.append("PixelData emptied")
    return b""


def _add_lut(draw: DrawFn, ds, notes: list[str]) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    entries, first, bits = draw(_U16), draw(_U16), draw(st.sampled_from([0, 1, 8, 16, 17, 255]))
    data_length = draw(st.integers(0, 256))
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [entries, first, bits])  # US, not pydicom's guess of SS
    item.add_new(
        "LUTData", "OW", bytes(range(256)) * (data_length // 256) + bytes(data_length % 256)
    )
    which = draw(st.sampled_from(["VOILUTSequence", "ModalityLUTSequence"]))
    if which == "ModalityLUTSequence":
        item.ModalityLUTType = "HU"
    setattr(ds, which, Sequence([item]))
    notes.append(f"{which} added: descriptor {entries}/{first}/{bits}, {data_length} data bytes")


def patch_transfer_syntax(data: bytes, syntax: str) -> bytes:
    """Rewrite the TransferSyntaxUID in the (explicit little endian) meta header, fixing the
    meta group length: pydicom refuses to write native pixel data under a compressed syntax."""
    element = data.find(b"\x02\x00\x10\x00UI")
    group_length = data.find(b"\x02\x00\x00\x00UL\x04\x00")
    (old_length,) = struct.unpack_from("<H", data, element + 6)
    value = syntax.encode("ascii") + b"\x00" * (len(syntax) % 2)
    patched = bytearray(
        data[: element + 6]
        + struct.pack("<H", len(value))
        + value
        + data[element + 8 + old_length :]
    )
    if group_length >= 0:
        (meta_length,) = struct.unpack_from("<I", patched, group_length + 8)
        struct.pack_into("<I", patched, group_length + 8, meta_length + len(value) - old_length)
    return bytes(patched)


@contextlib.contextmanager
def _pydicom_lenient():
    """Let pydicom write invalid values, restoring its settings after (tests share them)."""
    from pydicom import config

    settings_ = config.settings
    saved = settings_.reading_validation_mode, settings_.writing_validation_mode
    settings_.reading_validation_mode = settings_.writing_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings_.reading_validation_mode, settings_.writing_validation_mode = saved


_HEADER_EDITS: dict[str, Callable[[DrawFn, bytes, list[str]], bytes]] = {
    "png": _png_header_edit,
    "jpeg": _jpeg_header_edit,
    "tiff": _tiff_header_edit,
    "dicom": _dicom_header_edit,
}

# --- the contract -----------------------------------------------------------------------------


class ContractViolation(AssertionError):
    """A reader broke the contract: raised a foreign exception or returned a wrong result.

    Attributes:
        reader: the reader's name, e.g. ``"read_image_bytes"``.
        problem: what was wrong, in words.
    """

    def __init__(self, reader: str, problem: str) -> None:
        self.reader = reader
        self.problem = problem
        super().__init__(f"{reader}: {problem}")


@dataclass(frozen=True)
class Outcome:
    """How the readers took one input: decoded, or refused with ``reason``."""

    decoded: bool
    reason: str | None = None


def check_readers(data: bytes, name: str, folder: Path, *, max_pixels: int) -> Outcome:
    """Feed ``data`` to every reader (as bytes, and as the file ``folder/name``) and check the
    contract of this module's docstring.

    Raises:
        ContractViolation: a reader raised something but InvalidInputError naming ``name`` (the
            original exception is the ``__cause__``), or returned a wrong result.
    """
    path = folder / name
    path.write_bytes(data)
    from_bytes = _call(
        "read_image_bytes", name, read_image_bytes, data, name, max_pixels=max_pixels
    )
    from_file = _call("read_image", name, read_image, path, max_pixels=max_pixels)
    header = _call("read_meta", name, read_meta, path, max_pixels=max_pixels)
    decoded = not isinstance(from_file, InvalidInputError)
    if decoded != (not isinstance(from_bytes, InvalidInputError)):
        raise ContractViolation("read_image", f"file gives {from_file!r}, bytes {from_bytes!r}")
    if not decoded:
        if from_file.reason != from_bytes.reason:
            raise ContractViolation(
                "read_image", f"file refused for {from_file.reason!r}, bytes {from_bytes.reason!r}"
            )
        if isinstance(header, InvalidInputError):
            return Outcome(False, from_file.reason)
    else:
        image, meta = from_file
        _check_image("read_image", image, meta, max_pixels)
        _check_image("read_image_bytes", *from_bytes, max_pixels)
        if not np.array_equal(image, from_bytes[0]) or meta != _with_path(from_bytes[1], path):
            raise ContractViolation("read_image", "file and bytes decode differently")
        if isinstance(header, InvalidInputError) or _size(header) != _size(meta):
            raise ContractViolation("read_meta", f"states {header}, read_image {meta}")
    _check_meta("read_meta", header, max_pixels)
    # The header is fine and within the limit, so the mask readers decode the same pixels.
    size = (header.height, header.width)
    values = _call("read_mask_values", name, read_mask_values, path)
    if isinstance(values, InvalidInputError):
        if decoded:
            raise ContractViolation(
                "read_mask_values", f"refuses what read_image decodes: {values}"
            )
        return Outcome(False, from_file.reason)
    if not decoded:
        raise ContractViolation("read_mask_values", f"decodes what read_image refuses: {from_file}")
    _check_array("read_mask_values", values, np.float32, size)
    if not np.isfinite(values).all():
        raise ContractViolation("read_mask_values", "values hold NaN or infinity")
    mask = _call("read_mask", name, read_mask, path, image_path=path)
    if isinstance(mask, InvalidInputError):
        raise ContractViolation("read_mask", f"refuses what read_mask_values decodes: {mask}")
    _check_array("read_mask", mask, np.bool_, size)
    return Outcome(True)


def _call(reader: str, name: str, function: Callable, *args, **kwargs):
    """The reader's result, or the InvalidInputError it raised; anything else is a violation."""
    try:
        return function(*args, **kwargs)
    except InvalidInputError as err:
        message = str(err)
        if name not in message or "\n" in message:
            raise ContractViolation(  # noqa: B904 (the error is the finding, not its cause)
                reader, f"message does not name {name} on one line: {message!r}"
            )
        return err
    except LungsegError as err:
        raise ContractViolation(
            reader, f"raised {type(err).__name__}, not InvalidInputError"
        ) from err
    except Exception as err:
        raise ContractViolation(reader, f"raised {type(err).__name__}: {err}") from err


def _size(meta) -> tuple[int, int, str]:
    """What read_meta must state as read_image does. Not the bit depth: a TIFF that tifffile
    reads the header of but Pillow decodes has the header's depth, and Pillow's after decoding."""
    return meta.height, meta.width, meta.source_format


def _with_path(meta, path: Path):
    return replace(meta, path=str(path))


def _check_meta(reader: str, meta, max_pixels: int) -> None:
    if not (meta.height >= MIN_SIDE and meta.width >= MIN_SIDE):
        raise ContractViolation(reader, f"accepts a {meta.width}x{meta.height} image")
    if meta.height * meta.width > max_pixels:
        raise ContractViolation(reader, f"accepts {meta.height * meta.width} pixels > {max_pixels}")
    if meta.source_format not in _SOURCE_FORMATS or meta.bit_depth < 1:
        raise ContractViolation(
            reader, f"states format {meta.source_format}, {meta.bit_depth} bits"
        )
    spacing = meta.pixel_spacing_mm
    if spacing is not None and not (len(spacing) == 2 and all(0 < mm < np.inf for mm in spacing)):
        raise ContractViolation(reader, f"states pixel spacing {spacing}")


def _check_array(reader: str, array, dtype, size: tuple[int, int]) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != size:
        got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array)
        raise ContractViolation(reader, f"returns {got}, not {np.dtype(dtype)} {size}")


def _check_image(reader: str, image, meta, max_pixels: int) -> None:
    _check_meta(reader, meta, max_pixels)
    _check_array(reader, image, np.float32, (meta.height, meta.width))
    if not np.isfinite(image).all():
        raise ContractViolation(reader, "image holds NaN or infinity")
    if image.min() < 0.0 or image.max() > 1.0:
        raise ContractViolation(reader, f"image spans [{image.min()}, {image.max()}], not [0, 1]")


# --- the campaign -----------------------------------------------------------------------------


@dataclass
class Tally:
    """What workers saw, per case kind; saved as JSON so the supervisor can add workers up."""

    examples: Counter = field(default_factory=Counter)
    decoded: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)
    bugs: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)  # refusal reasons, digits as N
    bug_counts: Counter = field(default_factory=Counter)  # per failure signature
    slowest: tuple[float, str, list[str]] = (0.0, "", [])  # seconds, kind, mutations
    peak_growth_mib: float = 0.0

    def add(self, other: Tally) -> None:
        for name in ("examples", "decoded", "refused", "bugs", "reasons", "bug_counts"):
            getattr(self, name).update(getattr(other, name))
        self.slowest = max(self.slowest, other.slowest, key=lambda entry: entry[0])
        self.peak_growth_mib = max(self.peak_growth_mib, other.peak_growth_mib)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Tally:
        raw = json.loads(text)
        counters = {k: Counter(v) for k, v in raw.items() if isinstance(v, dict)}
        return cls(
            **counters, slowest=tuple(raw["slowest"]), peak_growth_mib=raw["peak_growth_mib"]
        )


def _failure_signature(violation: ContractViolation) -> str:
    """What makes two failures the same bug: the reader and where the foreign exception came
    from, or the reader and the problem with its numbers blanked."""
    cause = violation.__cause__
    if cause is None:
        problem = re.sub(r"<[^<>]*>", "<...>", violation.problem)  # object reprs, addresses
        problem = re.sub(r"0x[0-9a-f]+|[-+]?\d+(\.\d*)?(e[-+]?\d+)?|nan|inf", "N", problem)
        return f"{violation.reader}: {problem[:120]}"
    frame = traceback.extract_tb(cause.__traceback__)[-1]
    return (
        f"{violation.reader}: {type(cause).__name__} at {Path(frame.filename).name}:{frame.lineno}"
    )


def _save_failure(out: Path, signature: str, case: FuzzCase, details: str) -> None:
    """Keep the smallest input seen for ``signature`` under ``out/failures`` with a JSON note."""
    stem = re.sub(r"[^a-z0-9]+", "-", signature.split(":")[0].lower()).strip("-")
    stem = f"{stem}-{hashlib.sha1(signature.encode()).hexdigest()[:10]}"
    folder = out / "failures"
    note_path = folder / f"{stem}.json"
    if note_path.exists() and json.loads(note_path.read_text())["size"] <= len(case.data):
        return
    atomic_write_bytes(folder / f"{stem}.bin", case.data)
    note = {
        "signature": signature,
        "details": details,
        "kind": case.kind,
        "mutations": list(case.mutations),
        "size": len(case.data),
        "input": f"{stem}.bin",
        "replay": f"python benchmarks/fuzz_readers.py --replay {folder / stem}.bin",
    }
    atomic_write_text(note_path, json.dumps(note, indent=1) + "\n")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _limit_address_space(headroom_gib: float) -> None:
    """Turn a runaway allocation into a MemoryError instead of a machine out of memory."""
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = size + int(headroom_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _run_worker(args: argparse.Namespace) -> int:
    """Fuzz until the deadline, in batches of hypothesis examples; save the tally as it goes."""
    warnings.simplefilter("ignore")  # the decoders warn about the broken files they are fed
    work = args.out / "work"
    seeds = build_seeds(args.data)
    for kind, data in seeds.items():  # a seed that does not decode would fuzz nothing useful
        if not check_readers(data, f"seed-{kind}", work, max_pixels=args.max_pixels).decoded:
            raise SystemExit(f"seed {kind} does not decode")
    _limit_address_space(args.address_space_gib)
    fatal_log = open(work / f"fatal-{args.worker_index}.log", "w")  # noqa: SIM115 (kept open)
    faulthandler.enable(fatal_log)
    tally, tally_path = Tally(), work / f"tally-{args.worker_index}.json"
    baseline_mib = _peak_rss_mib()
    budget_mib = args.max_pixels * BYTES_PER_PIXEL_BUDGET / 2**20
    last_save = time.monotonic()

    def run_case(case: FuzzCase) -> None:
        nonlocal last_save, baseline_mib
        if time.time() >= args.deadline or tally.examples.total() >= args.max_examples:
            return
        case_note = json.dumps([case.file_name, case.kind, case.mutations])
        atomic_write_text(work / "current.json", case_note)  # whole even if killed mid-write
        faulthandler.dump_traceback_later(args.hang_seconds, exit=True, file=fatal_log)
        start = time.perf_counter()
        try:
            outcome = check_readers(case.data, case.file_name, work, max_pixels=args.max_pixels)
        except ContractViolation as violation:
            outcome = None
            signature = _failure_signature(violation)
            tally.bug_counts[signature] += 1
            _save_failure(args.out, signature, case, "".join(traceback.format_exception(violation)))
        finally:
            faulthandler.cancel_dump_traceback_later()
        seconds = time.perf_counter() - start
        growth_mib = _peak_rss_mib() - baseline_mib
        if growth_mib > budget_mib and outcome is not None:
            outcome = None
            signature = f"memory: peak RSS grew by more than {budget_mib:.0f} MiB"
            tally.bug_counts[signature] += 1
            _save_failure(args.out, signature, case, f"peak RSS grew by {growth_mib:.0f} MiB")
            baseline_mib += growth_mib  # later inputs are judged against the new peak
        tally.peak_growth_mib = max(tally.peak_growth_mib, growth_mib)
        tally.examples[case.kind] += 1
        if outcome is None:
            tally.bugs[case.kind] += 1
        elif outcome.decoded:
            tally.decoded[case.kind] += 1
        else:
            tally.refused[case.kind] += 1
            tally.reasons[re.sub(r"\d+", "N", outcome.reason)[:100]] += 1
        if seconds > tally.slowest[0]:
            tally.slowest = (seconds, case.kind, list(case.mutations))
        if time.monotonic() - last_save > 2.0:
            atomic_write_text(tally_path, tally.to_json())
            last_save = time.monotonic()

    batches = random.Random(args.seed)
    while time.time() < args.deadline and tally.examples.total() < args.max_examples:
        run_batch = settings(
            max_examples=200,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(hypothesis_seed(batches.getrandbits(64))(given(fuzz_cases(seeds))(run_case)))
        run_batch()
    atomic_write_text(tally_path, tally.to_json())
    return 0


def _record_worker_death(out: Path, returncode: int, index: int) -> str:
    """Save the input a worker died on as a crash or hang failure; return its signature."""
    work = out / "work"
    file_name, kind, mutations = json.loads((work / "current.json").read_text())
    log = (work / f"fatal-{index}.log").read_text(errors="replace")
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', log)
    where = f"{Path(frames[0][0]).name}:{frames[0][1]} in {frames[0][2]}" if frames else "unknown"
    if returncode < 0:
        signature = f"crash: signal {-returncode} at {where}"
    elif "Timeout" in log:
        signature = f"hang: over the time limit at {where}"
    else:
        signature = f"worker exit {returncode} at {where}"
    case = FuzzCase(kind, tuple(mutations), (work / file_name).read_bytes())
    _save_failure(out, signature, case, log)
    return signature


def _run_campaign(args: argparse.Namespace) -> int:
    """Run workers one after another until the time or example budget is spent; summarise."""
    for folder in ("work", "failures"):  # this tool's own folders: a new campaign starts clean
        shutil.rmtree(args.out / folder, ignore_errors=True)
        (args.out / folder).mkdir(parents=True)
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    start = time.time()
    deadline = start + args.minutes * 60
    total, index = Tally(), 0
    while time.time() < deadline - 1 and total.examples.total() < args.max_examples:
        options = {
            "--data": args.data,
            "--out": args.out,
            "--max-pixels": args.max_pixels,
            "--hang-seconds": args.hang_seconds,
            "--address-space-gib": args.address_space_gib,
            "--seed": seed + index,
            "--max-examples": args.max_examples - total.examples.total(),
            "--worker-index": index,
            "--deadline": repr(deadline),
        }
        command = [sys.executable, __file__, *(str(x) for item in options.items() for x in item)]
        (args.out / "work" / "current.json").unlink(missing_ok=True)
        with open(args.out / "work" / f"worker-{index}.log", "w") as log:
            worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                returncode = worker.wait(timeout=deadline - time.time() + 3 * args.hang_seconds)
            except subprocess.TimeoutExpired:  # faulthandler did not stop it: kill it here
                worker.kill()
                returncode = worker.wait()
        tally_path = args.out / "work" / f"tally-{index}.json"
        tally = Tally.from_json(tally_path.read_text()) if tally_path.exists() else Tally()
        if returncode != 0:
            if not (args.out / "work" / "current.json").exists():
                print((args.out / "work" / f"worker-{index}.log").read_text(), file=sys.stderr)
                raise SystemExit(
                    f"worker {index} failed before its first input (exit {returncode})"
                )
            kind = json.loads((args.out / "work" / "current.json").read_text())[1]
            tally.bug_counts[_record_worker_death(args.out, returncode, index)] += 1
            tally.examples[kind] += 1
            tally.bugs[kind] += 1
        total.add(tally)
        index += 1
    summary = _summarise(total, args, seed=seed, seconds=time.time() - start, workers=index)
    print(summary)
    atomic_write_text(args.out / "summary.txt", summary + "\n")
    return 1 if total.bugs.total() else 0


def _summarise(
    tally: Tally, args: argparse.Namespace, *, seed: int, seconds: float, workers: int
) -> str:
    examples = tally.examples.total()
    lines = [
        f"lungseg reader fuzzing: {examples} inputs in {seconds / 60:.1f} min "
        f"({examples / max(seconds, 1e-9):.0f}/s), seed {seed}, {workers} worker(s), "
        f"max_pixels {args.max_pixels:,}",
        "",
        f"{'kind':<22}{'inputs':>8}{'decoded':>9}{'refused':>9}{'bugs':>6}",
    ]
    for kind in sorted(tally.examples):
        lines.append(
            f"{kind:<22}{tally.examples[kind]:>8}{tally.decoded[kind]:>9}"
            f"{tally.refused[kind]:>9}{tally.bugs[kind]:>6}"
        )
    lines.append(
        f"{'total':<22}{examples:>8}{tally.decoded.total():>9}"
        f"{tally.refused.total():>9}{tally.bugs.total():>6}"
    )
    lines += ["", "most frequent refusal reasons (file name omitted, digits as N):"]
    lines += [f"{count:>8}  {reason}" for reason, count in tally.reasons.most_common(12)]
    budget_mib = args.max_pixels * BYTES_PER_PIXEL_BUDGET / 2**20
    seconds_slowest, kind, mutations = tally.slowest
    lines += [
        "",
        f"peak memory growth over the seeds' baseline: {tally.peak_growth_mib:.0f} MiB "
        f"(budget {budget_mib:.0f} MiB)",
        f"slowest input: {seconds_slowest:.2f} s for all readers ({kind}: {'; '.join(mutations)})"
        if kind
        else "slowest input: none ran to the end",
        "",
    ]
    if not tally.bug_counts:
        lines.append("bugs: none")
    else:
        lines.append(
            f"bugs ({len(tally.bug_counts)} distinct; smallest input of each under "
            f"{args.out / 'failures'}):"
        )
        lines += [f"{count:>8}  {signature}" for signature, count in tally.bug_counts.most_common()]
    return "\n".join(lines)


def _replay(paths: list[Path], max_pixels: int, address_space_gib: float) -> int:
    """Run saved inputs through the readers again, under the workers' address-space limit;
    print each outcome or the violation."""
    _limit_address_space(address_space_gib)
    failed = 0
    for path in paths:
        with tempfile.TemporaryDirectory() as folder:
            try:
                outcome = check_readers(
                    path.read_bytes(), path.name, Path(folder), max_pixels=max_pixels
                )
            except ContractViolation:
                traceback.print_exc()
                failed += 1
                continue
        print(f"{path}: {'decoded' if outcome.decoded else 'refused: ' + str(outcome.reason)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Fuzz lungseg's image and DICOM readers with hypothesis for a bounded time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    default_data = Path(os.environ.get("LUNGSEG_DATA") or REPO.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=default_data, help="the shared X-ray folder")
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to fuzz")
    parser.add_argument(
        "--max-examples", type=int, default=1_000_000, help="at most this many inputs"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "runs" / "fuzz", help="summary and failures"
    )
    parser.add_argument("--seed", type=int, default=None, help="campaign seed (default: random)")
    parser.add_argument(
        "--max-pixels", type=int, default=FUZZ_MAX_PIXELS, help="readers' max_pixels"
    )
    parser.add_argument("--hang-seconds", type=float, default=20.0, help="one input's time limit")
    parser.add_argument(
        "--address-space-gib",
        type=float,
        default=3.0,
        help="a worker's address space beyond its start, in GiB",
    )
    parser.add_argument("--replay", type=Path, nargs="+", help="run these saved inputs and stop")
    parser.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replay:
        return _replay(args.replay, args.max_pixels, args.address_space_gib)
    if args.worker_index is not None:
        return _run_worker(args)
    return _run_campaign(args)


if __name__ == "__main__":
    sys.exit(main())
