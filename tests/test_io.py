"""lungseg.data.io and lungseg.data.masks: every supported format, mask rules, which files are
images, and every kind of bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from dicom_factory import write_dicom_file, xray_dataset
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, JPEG2000Lossless, RLELossless, SecondaryCaptureImageStorage

from lungseg.data.io import (
    IMAGE_SUFFIXES,
    as_grey_image,
    is_image_file,
    read_grey_levels,
    read_image,
    read_image_bytes,
    read_meta,
)
from lungseg.data.masks import (
    MASK_PROBLEMS,
    NON_BINARY_LIMIT,
    check_mask_size,
    mask_note,
    mask_problem,
    read_mask,
    read_mask_values,
    read_masks,
)
from lungseg.errors import InvalidInputError, LungsegError, MaskMismatchError

RNG = np.random.default_rng(0)


def gradient_u8(h: int = 32, w: int = 40) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


def secondary_capture(pixels: np.ndarray, **attributes) -> pydicom.Dataset:
    """An X-ray stored as Secondary Capture, not DX: the readers take any image SOP class."""
    return xray_dataset(pixels, sop_class=SecondaryCaptureImageStorage, **attributes)


# --- formats ----------------------------------------------------------------------------------


def test_png_8bit_exact(tmp_path):
    pixels = gradient_u8()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image, meta = read_image(tmp_path / "a.png")
    assert image.dtype == np.float32 and image.shape == (32, 40)
    np.testing.assert_array_equal(image, pixels.astype(np.float32) / np.float32(255))
    assert (meta.height, meta.width, meta.bit_depth, meta.source_format) == (32, 40, 8, "png")
    assert meta.pixel_spacing_mm is None


def test_png_16bit_exact(tmp_path):
    pixels = np.zeros((20, 20), np.uint16)
    pixels[0, :3] = [1000, 40000, 65535]
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image, meta = read_image(tmp_path / "a.png")
    assert meta.bit_depth == 16
    np.testing.assert_allclose(image[0, :4], [1000 / 65535, 40000 / 65535, 1.0, 0.0], rtol=1e-6)


def test_jpeg(tmp_path):
    pixels = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    image, meta = read_image(tmp_path / "a.jpg")
    assert meta.source_format == "jpeg" and image.shape == (48, 64)
    np.testing.assert_allclose(image, pixels / 255, atol=0.03)


RGB_PATCHES = np.zeros((16, 48, 3), np.uint8)
RGB_PATCHES[:, :16, 0] = 255  # red
RGB_PATCHES[:, 16:32, 1] = 255  # green
RGB_PATCHES[:, 32:, 2] = 255  # blue
LUMINANCE = [0.299, 0.587, 0.114]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_colour_becomes_luminance(tmp_path, mode):
    rgb = Image.fromarray(RGB_PATCHES)
    if mode == "RGBA":
        converted = rgb.convert("RGBA")
        converted.putalpha(0)  # alpha must be ignored, not composited
    else:
        converted = rgb.convert(mode) if mode == "RGB" else rgb.quantize(colors=3)
    converted.save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as written:
        assert written.mode == mode
    image, _ = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(image[0, [0, 16, 32]], LUMINANCE, atol=1e-6)


def test_tiff_16bit(tmp_path):
    pixels = np.array([[0, 32768, 65535] * 6] * 17, np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", pixels)
    image, meta = read_image(tmp_path / "a.tif")
    assert (meta.source_format, meta.bit_depth) == ("tiff", 16)
    np.testing.assert_allclose(image[0, :3], [0.0, 32768 / 65535, 1.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("low", "high", "expected_first_row"),
    [
        (0.2, 0.6, [0.2, 0.4, 0.6]),  # already in [0, 1]: kept as is
        (-1000.0, 3000.0, [0.0, 0.5, 1.0]),  # outside: min-max scaled
    ],
)
def test_tiff_float(tmp_path, low, high, expected_first_row):
    pixels = np.tile(np.array([low, (low + high) / 2, high], np.float32), (16, 6))
    tifffile.imwrite(tmp_path / "a.tiff", pixels)
    image, meta = read_image(tmp_path / "a.tiff")
    assert meta.bit_depth == 32
    np.testing.assert_allclose(image[0, :3], expected_first_row, rtol=1e-6)


def test_tiff_lzw_falls_back_to_pillow(tmp_path):
    pixels = gradient_u8()
    Image.fromarray(pixels).save(tmp_path / "a.tif", compression="tiff_lzw")
    image, _ = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(image, pixels / np.float32(255))


def test_tiff_min_is_white_is_inverted(tmp_path):
    pixels = gradient_u8()
    tifffile.imwrite(tmp_path / "a.tif", pixels, photometric="miniswhite")
    image, _ = read_image(tmp_path / "a.tif")
    np.testing.assert_allclose(image, 1 - pixels / 255, atol=1e-6)


def test_palette_tiff_falls_back_to_pillow(tmp_path):
    rgb = Image.fromarray(RGB_PATCHES)
    rgb.quantize(colors=3).save(tmp_path / "a.tif")
    image, meta = read_image(tmp_path / "a.tif")
    np.testing.assert_allclose(image[0, [0, 16, 32]], LUMINANCE, atol=1e-6)
    assert meta.pixel_spacing_mm is None


def test_bmp(tmp_path):
    pixels = gradient_u8()
    Image.fromarray(pixels).save(tmp_path / "a.bmp")
    image, meta = read_image(tmp_path / "a.bmp")
    assert meta.source_format == "bmp"
    np.testing.assert_array_equal(image, pixels / np.float32(255))


@pytest.mark.parametrize(
    ("unit", "resolution", "expected"),
    [
        ("CENTIMETER", (10.0, 5.0), (2.0, 1.0)),  # 10 px/cm across, 5 px/cm down: 30 x 40 cm
        ("INCH", (25.4, 25.4), (1.0, 1.0)),
        ("INCH", (72.0, 72.0), None),  # a screen default says nothing physical
        ("INCH", (1.0, 1.0), None),  # Pillow's default: 25.4 mm pixels are not an X-ray's
        ("NONE", (10.0, 10.0), None),
    ],
)
def test_tiff_resolution_to_spacing(tmp_path, unit, resolution, expected):
    pixels = gradient_u8(200, 300)  # HxW
    tifffile.imwrite(tmp_path / "a.tif", pixels, resolution=resolution, resolutionunit=unit)
    meta = read_meta(tmp_path / "a.tif")
    assert meta.warnings == ()  # a default or a missing unit is silently no spacing
    if expected is None:
        assert meta.pixel_spacing_mm is None
    else:
        np.testing.assert_allclose(meta.pixel_spacing_mm, expected, rtol=1e-3)


@pytest.mark.parametrize(("dpi", "expected"), [(254, 0.1), (96, None)])
def test_png_resolution_to_spacing(tmp_path, dpi, expected):
    # 3000 pixels at 254 dpi: 30 cm, a radiograph's size; 96 dpi is a screen default.
    Image.fromarray(gradient_u8(3000, 3000)).save(tmp_path / "a.png", dpi=(dpi, dpi))
    meta = read_meta(tmp_path / "a.png")
    assert meta.warnings == ()
    if expected is None:
        assert meta.pixel_spacing_mm is None
    else:
        np.testing.assert_allclose(meta.pixel_spacing_mm, (expected, expected), rtol=1e-3)


def test_resolution_too_fine_for_the_image_is_dropped_with_a_note(tmp_path):
    # 254 dpi on 32x40 pixels: a 4 x 3.2 mm image, no radiograph.
    Image.fromarray(gradient_u8()).save(tmp_path / "a.png", dpi=(254, 254))
    tifffile.imwrite(
        tmp_path / "a.tif", gradient_u8(), resolution=(10.0, 5.0), resolutionunit="CENTIMETER"
    )
    for name, stated in (("a.png", "PNG resolution 254 dpi"), ("a.tif", "TIFF resolution")):
        meta = read_meta(tmp_path / name)
        assert meta.pixel_spacing_mm is None
        (note,) = meta.warnings
        assert note.startswith(stated) and "pixel spacing ignored" in note


# --- DICOM ------------------------------------------------------------------------------------


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = (np.arange(32 * 32).reshape(32, 32) * 4).astype(np.uint16)  # 0 .. 4092
    path = write_dicom_file(
        tmp_path / "a.dcm", secondary_capture(pixels, photometric="MONOCHROME1")
    )
    image, meta = read_image(path)
    assert meta.source_format == "dicom" and meta.bit_depth == 12
    np.testing.assert_allclose(image, 1.0 - pixels / pixels.max(), atol=1e-6)
    assert image[0, 0] == 1.0 and image[-1, -1] == 0.0


def test_dicom_rescale_then_window(tmp_path):
    # raw 12 -> -1000 HU (below window), 532 -> 40 HU (window centre - 0.5), 1512 -> 2000 HU.
    pixels = np.full((16, 16), 532, np.uint16)
    pixels[0, 0], pixels[0, 1] = 12, 1512
    ds = secondary_capture(
        pixels, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40.5, WindowWidth=401
    )
    path = write_dicom_file(tmp_path / "a.dcm", ds)
    image, _ = read_image(path)
    # DICOM's linear window: ((x - (c - 0.5)) / (w - 1) + 0.5), clipped; then min-max.
    np.testing.assert_allclose([image[0, 0], image[0, 1], image[5, 5]], [0.0, 1.0, 0.5], atol=1e-6)


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"PixelSpacing": [0.143, 0.139]}, (0.143, 0.139)),
        ({"ImagerPixelSpacing": [0.2, 0.2]}, (0.2, 0.2)),
        ({"PixelSpacing": [0.15, 0.15], "ImagerPixelSpacing": [0.2, 0.2]}, (0.15, 0.15)),
        ({}, None),
    ],
)
def test_dicom_spacing(tmp_path, attrs, expected):
    ds = secondary_capture(np.zeros((16, 16), np.uint16), **attrs)
    path = write_dicom_file(tmp_path / "a.dcm", ds)
    assert read_image(path)[1].pixel_spacing_mm == expected


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_dicom_compressed(tmp_path, syntax):
    pixels = (np.arange(32 * 32).reshape(32, 32) * 3).astype(np.uint16)
    ds = secondary_capture(pixels)
    ds.compress(syntax)
    path = write_dicom_file(tmp_path / "a.dcm", ds)
    image, _ = read_image(path)
    np.testing.assert_allclose(image, pixels / pixels.max(), atol=1e-6)


def test_dicom_without_suffix_found_by_content(tmp_path):
    path = write_dicom_file(
        tmp_path / "IM000001", secondary_capture(np.full((16, 16), 7, np.uint16))
    )
    assert read_image(path)[1].source_format == "dicom"


@pytest.mark.parametrize("implicit_vr", [True, False])
def test_dicom_without_meta_header(tmp_path, implicit_vr):
    # ACR-NEMA era files: no preamble, no DICM, no transfer syntax; pixels uncompressed
    pixels = (np.arange(16 * 16).reshape(16, 16) * 9).astype(np.uint16)
    ds = secondary_capture(pixels)
    del ds.file_meta
    pydicom.dcmwrite(tmp_path / "old", ds, implicit_vr=implicit_vr, little_endian=True)
    assert b"DICM" not in (tmp_path / "old").read_bytes()[:132]  # really no preamble or DICM
    image, meta = read_image(tmp_path / "old")
    assert meta.source_format == "dicom"
    np.testing.assert_allclose(image, pixels / pixels.max(), atol=1e-6)


def test_bytes_are_sniffed_not_named(tmp_path):
    pixels = gradient_u8()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    from_file, _ = read_image(tmp_path / "a.png")
    from_bytes, meta = read_image_bytes((tmp_path / "a.png").read_bytes(), "upload.dcm")
    np.testing.assert_array_equal(from_file, from_bytes)
    assert (meta.path, meta.source_format) == ("upload.dcm", "png")


def test_suffixes_cover_every_format():
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"} == set(
        IMAGE_SUFFIXES
    )


# --- masks ------------------------------------------------------------------------------------

EXPECTED_MASK = np.zeros((20, 20), bool)
EXPECTED_MASK[5:15, 3:12] = True


def anti_aliased_mask() -> np.ndarray:
    stored = np.where(EXPECTED_MASK, 255, 0).astype(np.uint8)
    stored[4, 3:12] = 100  # grey rim just outside the lung: below half the max
    stored[5, 3:12] = 200  # grey rim just inside: above it
    return stored


@pytest.mark.parametrize(
    "stored",
    [
        EXPECTED_MASK.astype(np.uint8),  # {0, 1}
        EXPECTED_MASK.astype(np.uint8) * 255,  # {0, 255}
        anti_aliased_mask(),
    ],
    ids=["0-1", "0-255", "anti-aliased"],
)
def test_mask_levels(tmp_path, stored):
    Image.fromarray(stored).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, EXPECTED_MASK)


def test_empty_mask_is_valid(tmp_path):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "m.png")
    assert not read_mask(tmp_path / "m.png").any()


def test_mask_size_mismatch_names_both_files(tmp_path):
    Image.fromarray(gradient_u8(32, 40)).save(tmp_path / "image.png")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "mask.png")
    with pytest.raises(MaskMismatchError) as caught:
        read_mask(tmp_path / "mask.png", image_path=tmp_path / "image.png")
    message = str(caught.value)
    assert "mask.png" in message and "image.png" in message
    assert "40x30" in message and "40x32" in message
    with pytest.raises(MaskMismatchError):
        read_mask(tmp_path / "mask.png", image_size=(32, 40))
    assert read_mask(tmp_path / "mask.png", image_size=(30, 40)).shape == (30, 40)


def test_masks_union(tmp_path):
    left, right = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
    left[:, :5], right[:, 15:] = 255, 1
    Image.fromarray(left).save(tmp_path / "l.png")
    Image.fromarray(right).save(tmp_path / "r.png")
    union = read_masks([tmp_path / "l.png", tmp_path / "r.png"], image_size=(20, 20))
    assert union.sum() == 20 * 10 and union[:, :5].all() and union[:, 15:].all()


def test_masks_union_checks_every_size_against_the_first(tmp_path):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "l.png")
    Image.fromarray(np.zeros((20, 22), np.uint8)).save(tmp_path / "r.png")
    with pytest.raises(
        MaskMismatchError, match=r"r\.png: mask is 22x20 \(WxH\) but its image .*l\.png is 20x20"
    ):
        read_masks([tmp_path / "l.png", tmp_path / "r.png"])
    with pytest.raises(LungsegError, match="no mask file given"):
        read_masks([])


def _soft_mask(grey_pixels: int) -> np.ndarray:
    stored = EXPECTED_MASK.astype(np.uint8) * 255
    stored.flat[:grey_pixels] = 128
    return stored


@pytest.mark.parametrize(
    ("stored", "problem", "note"),
    [
        (EXPECTED_MASK.astype(np.uint8) * 255, None, None),
        (
            _soft_mask(2),
            None,
            ("grey_edges", "0.50% of pixels are neither 0 nor 255; cut at 127.5"),
        ),
        (
            np.zeros((20, 20), np.uint8),
            ("empty_mask", "mask is empty: no pixel is marked as lung"),
            None,
        ),
        (
            np.full((20, 20), 255, np.uint8),
            ("full_mask", "mask marks every pixel as lung (an all-white image?)"),
            None,
        ),
        (
            _soft_mask(40),
            ("non_binary_mask", "10.00% of pixels are neither 0 nor 255: not a mask?"),
            None,
        ),
    ],
    ids=["binary", "grey-edges", "empty", "full", "non-binary"],
)
def test_mask_rules(tmp_path, stored, problem, note):
    Image.fromarray(stored).save(tmp_path / "m.png")
    values = read_mask_values(tmp_path / "m.png")
    np.testing.assert_array_equal(values, stored.astype(np.float32))  # as stored, not rescaled
    assert mask_problem(values) == problem
    if problem is None:
        assert mask_note(values) == note
    # read_mask refuses exactly the kinds it is told to, with mask_problem's message
    for kinds in ((), MASK_PROBLEMS, ("non_binary_mask",)):
        if problem is not None and problem[0] in kinds:
            with pytest.raises(InvalidInputError) as caught:
                read_mask(tmp_path / "m.png", refuse=kinds)
            assert caught.value.reason == problem[1] and caught.value.path == tmp_path / "m.png"
        else:
            assert read_mask(tmp_path / "m.png", refuse=kinds).dtype == bool


def test_non_binary_limit_is_one_percent():
    assert NON_BINARY_LIMIT == 0.01
    values = np.zeros((100, 100), np.float32)
    values[:50] = 255
    values.flat[:100] = 128  # exactly 1%: still soft edges
    assert mask_problem(values) is None and mask_note(values)[0] == "grey_edges"
    values.flat[100] = 128
    assert mask_problem(values)[0] == "non_binary_mask"


def test_check_mask_size():
    check_mask_size("m.png", (30, 40), "i.png", (30, 40))
    with pytest.raises(MaskMismatchError) as caught:
        check_mask_size("m.png", (30, 40), "i.png", (32, 40))
    assert str(caught.value) == "m.png: mask is 40x30 (WxH) but its image i.png is 40x32"


def test_read_grey_levels_keeps_stored_levels(tmp_path):
    pixels = (np.arange(32 * 40).reshape(32, 40) * 50).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_grey_levels(tmp_path / "a.png"), pixels.astype(np.float32))
    image, _ = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(image, pixels / 65535, atol=1e-7)


# --- which files are images ------------------------------------------------------------------


def test_is_image_file(tmp_path):
    write_dicom_file(tmp_path / "IM0001", xray_dataset(gradient_u8()))
    (tmp_path / "README").write_text("not DICOM")
    (tmp_path / "notes.txt").write_text("text")
    (tmp_path / "scan.DCM").write_bytes(b"")  # the name decides when there is a suffix
    Image.fromarray(gradient_u8()).save(tmp_path / "x.PNG")
    taken = {p.name for p in tmp_path.iterdir() if is_image_file(p)}
    assert taken == {"IM0001", "scan.DCM", "x.PNG"}
    assert not is_image_file(tmp_path / "missing")  # no suffix, cannot be opened
    assert is_image_file(str(tmp_path / "missing.tif"))  # a name with an image suffix


# --- images in memory: the same rules as files -----------------------------------------------


def _gradient(dtype, top: float) -> np.ndarray:
    return (np.linspace(0, top, 32 * 40).reshape(32, 40)).astype(dtype)


@pytest.mark.parametrize(
    "array",
    [
        _gradient(np.uint8, 255),
        _gradient(np.uint16, 4000),  # 12-bit data in 16 bits stays dark, as in a 16-bit file
        _gradient(np.uint16, 65535),
        _gradient(np.float32, 1.0),
        _gradient(np.float32, 3000.0),  # outside [0, 1]: min-max
        _gradient(np.int16, 3000) - 1000,  # signed: min-max
        np.stack([_gradient(np.uint8, 255), _gradient(np.uint8, 90), _gradient(np.uint8, 7)], -1),
        np.dstack([_gradient(np.uint8, 255)] * 3 + [np.zeros((32, 40), np.uint8)]),  # RGBA
        np.stack([_gradient(np.uint16, 65535)] * 3, -1),  # 16-bit RGB
    ],
    ids=["u8", "u16-12bit", "u16", "f32-unit", "f32-wide", "i16", "rgb", "rgba", "rgb16"],
)
def test_array_is_scaled_as_the_same_pixels_in_a_tiff(tmp_path, array):
    tifffile.imwrite(tmp_path / "a.tif", array, photometric="rgb" if array.ndim == 3 else None)
    from_file, _ = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(as_grey_image(array), from_file)


@pytest.mark.parametrize(
    "pixels",
    [
        _gradient(np.uint8, 255),
        _gradient(np.uint16, 65535),
        np.stack([_gradient(np.uint8, 255), _gradient(np.uint8, 90), _gradient(np.uint8, 7)], -1),
        np.dstack([_gradient(np.uint8, 200)] * 2),  # grey + alpha
    ],
    ids=["L", "I;16", "RGB", "LA"],
)
def test_pil_image_is_read_as_the_same_png(tmp_path, pixels):
    image = Image.fromarray(pixels)
    for mode in (image.mode, "P"):  # and as a palette image, converted as a palette PNG is
        converted = image if mode == image.mode else image.convert(mode)
        converted.save(tmp_path / f"{mode}.png")
        from_file, _ = read_image(tmp_path / f"{mode}.png")
        np.testing.assert_array_equal(as_grey_image(converted), from_file)


def test_grey_array_shapes_and_types_agree():
    grey = _gradient(np.uint8, 255)
    expected = grey.astype(np.float32) / 255
    for same in (
        grey[None],
        grey[..., None],
        np.dstack([grey, grey]),
        grey / 255.0,
        grey.astype(np.float16) / 255,
    ):
        np.testing.assert_allclose(as_grey_image(same), expected, atol=5e-4)
    assert as_grey_image(grey).dtype == np.float32
    np.testing.assert_array_equal(as_grey_image(grey > 100), (grey > 100).astype(np.float32))
    assert not as_grey_image(np.full((20, 20), 7, np.int32)).any()  # constant, no white level


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        (np.zeros(400, np.float32), "1-D array of shape (400,)"),
        (np.zeros((1, 1, 32, 32), np.float32), "4-D array of shape (1, 1, 32, 32)"),
        (np.zeros((3, 32, 40), np.uint8), "looks colour-first (C, H, W)"),
        (np.zeros((32, 40, 5), np.uint8), "3-D array of shape (32, 40, 5)"),
        (np.full((32, 40), np.nan, np.float32), "NaN or infinite"),
        (np.where(_gradient(np.float32, 1.0) > 0.5, np.inf, 0.0), "NaN or infinite"),
        (np.zeros((15, 40), np.uint8), "image is 40x15 pixels (WxH); at least 16"),
        (np.zeros((32, 40), np.complex64), "complex64 pixels"),
        (np.array([["a"] * 20] * 20), "pixels must be bool, integer or float"),
        (b"\x89PNG", "read_image_bytes"),
        ([[0.5] * 20] * 20, "np.asarray"),
        (None, "type NoneType"),
    ],
    ids=[
        "1d",
        "4d",
        "chw",
        "5-channels",
        "nan",
        "inf",
        "small",
        "complex",
        "str",
        "bytes",
        "list",
        "none",
    ],
)
def test_refused_arrays_say_what_is_expected(obj, says):
    with pytest.raises(LungsegError) as caught:
        as_grey_image(obj)
    message = str(caught.value)
    assert says in message
    assert "(H, W)" in message or "finite" in message or "at least 16" in message


# --- bad input --------------------------------------------------------------------------------


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, (256, 256), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _dicom_without_pixels(path: Path) -> None:
    ds = secondary_capture(np.zeros((16, 16), np.uint16))
    del ds.PixelData
    write_dicom_file(path, ds)


def _dicom_unknown_syntax(path: Path) -> None:
    ds = secondary_capture(np.zeros((16, 16), np.uint16))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML  # video: no decoder exists for an X-ray
    ds.PixelData = encapsulate([b"\x00" * 64])
    write_dicom_file(path, ds)


NOISE = RNG.integers(0, 255, (64, 64), dtype=np.uint8)
BAD_INPUTS = {
    "missing": (None, "not found"),
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "truncated-png": (lambda p: p.write_bytes(_png_bytes(NOISE)[:600]), "truncated"),
    "truncated-jpeg": (lambda p: p.write_bytes(_jpeg_bytes()[:3000]), "truncated"),
    "text-as-png": (lambda p: p.write_text("hello, not an image\n" * 20), "not a supported"),
    "one-pixel": (lambda p: p.write_bytes(_png_bytes(np.zeros((1, 1), np.uint8))), "1x1"),
    "thin": (lambda p: p.write_bytes(_png_bytes(np.zeros((200, 15), np.uint8))), "15x200"),
    "directory": (lambda p: p.mkdir(), "directory"),
    "dicom-no-pixels": (_dicom_without_pixels, "no pixel data"),
    "dicom-unknown-syntax": (_dicom_unknown_syntax, "transfer syntax"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_and_reason(tmp_path, case):
    make, reason = BAD_INPUTS[case]
    path = tmp_path / f"bad-{case}.png"
    if make is not None:
        make(path)
    with pytest.raises(InvalidInputError) as caught:
        read_image(path)
    message = str(caught.value)
    assert path.name in message and reason in message
    assert "\n" not in message


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (5000, 4000)).save(path)  # 20 MP of zeros: a few KB on disk
    assert path.stat().st_size < 100_000
    with pytest.raises(InvalidInputError, match="bomb.png.*20,000,000 pixels.*limit"):
        read_image(path, max_pixels=10_000_000)
    with pytest.raises(InvalidInputError, match="upload.png"):
        read_image_bytes(path.read_bytes(), "upload.png", max_pixels=10_000_000)


def test_bad_bytes_named_by_upload_name():
    with pytest.raises(InvalidInputError, match="scan.png.*empty"):
        read_image_bytes(b"", "scan.png")
    with pytest.raises(InvalidInputError, match="scan.png.*not a supported"):
        read_image_bytes(b"GIF89a" + bytes(200), "scan.png")
