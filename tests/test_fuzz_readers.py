"""The readers keep their contract on any bytes: a short, fixed run of the reader fuzzer.

Every input either decodes to a float32 image in [0, 1] of the size its meta states, or raises
InvalidInputError naming the input; anything else fails with hypothesis's smallest failing case.
The cases, the seeds and the contract check come from benchmarks/fuzz_readers.py, whose
campaign runs for minutes and also catches crashes and hangs (benchmarks/README.md). Below the
fuzz run, each input the fuzzer once broke a reader with is kept as a regression test.
"""

from __future__ import annotations

import io
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from dicom_factory import dicom_file_bytes, xray_dataset
from hypothesis import HealthCheck, given, settings
from pydicom.uid import SecondaryCaptureImageStorage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fuzz_readers  # noqa: E402  (the benchmark module holds the cases and the contract)
from fuzz_readers import (  # noqa: E402
    FUZZ_MAX_PIXELS,
    ContractViolation,
    build_seeds,
    check_readers,
    dicom_bytes,
    fuzz_cases,
    patch_transfer_syntax,
    set_raw_element,
    tiff_set_entry,
)

from lungseg.data.io import read_image, read_meta  # noqa: E402

FUZZ_EXAMPLES = 300
"""Enough for every seed kind and edit family to come up (10-15 s on one core)."""


@pytest.fixture(scope="module")
def seeds(data_root):
    return build_seeds(data_root)


@pytest.mark.data
def test_every_seed_decodes(seeds, tmp_path):
    # Mutations must start from valid files, or they would test little beyond format sniffing.
    for kind, data in seeds.items():
        outcome = check_readers(data, f"{kind}.bin", tmp_path, max_pixels=FUZZ_MAX_PIXELS)
        assert outcome.decoded, kind


@pytest.mark.data
@pytest.mark.filterwarnings("ignore")  # the decoders warn about the broken files they are fed
def test_readers_keep_their_contract_on_mutated_files(seeds, tmp_path):
    decoded: list[bool] = []

    @settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=fuzz_cases(seeds))
    def readers_keep_their_contract(case):
        outcome = check_readers(case.data, case.file_name, tmp_path, max_pixels=FUZZ_MAX_PIXELS)
        decoded.append(outcome.decoded)

    readers_keep_their_contract()
    # Cases that all decode, or all fail, would mean the edits miss the decoders.
    assert 0 < sum(decoded) < len(decoded)


def _raise_value_error(*args, **kwargs):
    raise ValueError("a decoder's own error")


def _nan_image(path, **kwargs):
    meta = read_meta(path)
    return np.full((meta.height, meta.width), np.nan, np.float32), meta


@pytest.mark.parametrize(
    ("reader", "broken", "problem"),
    [
        ("read_image_bytes", _raise_value_error, "read_image_bytes: raised ValueError"),
        ("read_mask_values", _raise_value_error, "read_mask_values: raised ValueError"),
        ("read_image", _nan_image, "read_image: image holds NaN"),
    ],
)
def test_contract_check_catches_a_broken_reader(tmp_path, monkeypatch, reader, broken, problem):
    # The check itself must be able to fail: a foreign exception or a NaN image is reported.
    monkeypatch.setattr(fuzz_readers, reader, broken)
    with pytest.raises(ContractViolation, match=problem):
        check_readers(_tiff(), "x.tif", tmp_path, max_pixels=FUZZ_MAX_PIXELS)


# --- inputs that once broke a reader ----------------------------------------------------------


def _tiff() -> bytes:
    buffer = io.BytesIO()
    pixels = (np.arange(32 * 40).reshape(32, 40) * 50).astype(np.uint16)
    tifffile.imwrite(buffer, pixels, resolution=(50.0, 50.0), resolutionunit="CENTIMETER")
    return buffer.getvalue()


def _dicom() -> pydicom.Dataset:
    """A small DICOM as read from a file (preamble, meta header, encoding known), to edit."""
    pixels = (np.arange(32 * 40).reshape(32, 40) * 3).astype(np.uint16)
    ds = xray_dataset(pixels, sop_class=SecondaryCaptureImageStorage)
    return pydicom.dcmread(io.BytesIO(dicom_file_bytes(ds)))


def _dicom_with(keyword: str, vr: str, value: str):
    ds = _dicom()
    set_raw_element(ds, keyword, vr, value)
    return dicom_bytes(ds)


def _dicom_without_pixels_and_garbage_sop_class() -> bytes:
    ds = _dicom()
    del ds.PixelData
    set_raw_element(ds, "SOPClassUID", "UI", "1.2\n\x01garbage")
    return dicom_bytes(ds)


def _dicom_with_unknown_vr() -> bytes:
    # One flipped bit turns BitsStored's VR "US" into "UQ": pydicom raises only when it is read.
    return dicom_bytes(_dicom()).replace(b"\x28\x00\x01\x01US", b"\x28\x00\x01\x01UQ")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DECODES = None
REFUSED = ""  # refused, for whichever reason the decoder gives
FOUND_BY_FUZZING = {
    # Pillow's message named its stream: an address for bytes, the path for a file.
    "png-unidentified": (lambda: PNG_SIGNATURE + bytes(8), "cannot identify image file"),
    # tifffile reads a tag of the wrong type as a tuple or bytes: TypeError, ValueError.
    "tiff-width-as-rational": (lambda: tiff_set_entry(_tiff(), 256, "type", 5), REFUSED),
    "tiff-width-count-17": (lambda: tiff_set_entry(_tiff(), 256, "count", 17), REFUSED),
    "tiff-photometric-15": (lambda: tiff_set_entry(_tiff(), 262, "value", 15), REFUSED),
    "tiff-resolution-as-short": (lambda: tiff_set_entry(_tiff(), 282, "type", 3), DECODES),
    # 65535 bits per sample decoded to an empty array; 0 bits was stated by read_meta.
    "tiff-65535-bits": (lambda: tiff_set_entry(_tiff(), 258, "value", 65535), REFUSED),
    "tiff-0-bits": (lambda: tiff_set_entry(_tiff(), 258, "value", 0), REFUSED),
    # An infinite spacing was stated as the pixel spacing.
    "dicom-spacing-inf": (lambda: _dicom_with("PixelSpacing", "DS", "inf\\0.2"), DECODES),
    # An empty transfer syntax crashed the error message (str has no .name).
    "dicom-empty-syntax": (lambda: patch_transfer_syntax(dicom_bytes(_dicom()), ""), "unknown"),
    "dicom-garbage-sop-class": (_dicom_without_pixels_and_garbage_sop_class, "unknown SOP class"),
    # pydicom raised NotImplementedError for an unknown VR outside every try.
    "dicom-unknown-vr": (_dicom_with_unknown_vr, "Unknown Value Representation 'UQ'"),
}


@pytest.mark.parametrize("case", list(FOUND_BY_FUZZING))
@pytest.mark.filterwarnings("ignore")  # the decoders warn about the broken files they are fed
def test_input_found_by_fuzzing(tmp_path, case):
    make, expected = FOUND_BY_FUZZING[case]
    outcome = check_readers(make(), f"{case}.bin", tmp_path, max_pixels=FUZZ_MAX_PIXELS)
    if expected is DECODES:
        assert outcome.decoded
    else:
        assert not outcome.decoded and expected in outcome.reason


def test_dicom_file_with_a_huge_element_length_costs_no_memory(tmp_path):
    # A file object allocates what pydicom asks to read: a corrupt 4 GiB pixel data length in a
    # small file became a 4 GiB allocation (a MemoryError under an address-space limit).
    data = bytearray(dicom_bytes(_dicom()))
    pixel_data = data.find(b"\xe0\x7f\x10\x00OW")
    struct.pack_into("<I", data, pixel_data + 8, 0xFFFF_FFF0)
    path = tmp_path / "huge-length.dcm"
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        read_image(path)  # pydicom reads the pixel data there is: the image decodes
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20
