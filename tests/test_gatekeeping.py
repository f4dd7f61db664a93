"""Input gatekeeping (issue 15): what lungseg refuses before segmenting, and what it reads but
notes in ImageMeta.warnings. DICOM found by its marker whatever the preamble holds, Modality and
SOP class refused by name, presentation (MONOCHROME1, Presentation LUT Shape INVERSE) applied
after the VOI LUT, lateral views noted, PNG/TIFF resolutions kept only when physical, and lung
areas in cm2 checked against real chests."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
from dicom_factory import dicom_file_bytes, write_dicom_file, xray_dataset
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

from lungseg.data.io import (
    ACCEPTED_MODALITIES,
    REFUSED_MODALITIES,
    read_grey_levels,
    read_image,
    read_image_bytes,
    read_meta,
)
from lungseg.errors import InvalidInputError
from lungseg.measure import LUNG_AREA_CM2_RANGE, measure_lungs

LATERAL_NOTE = "lateral view (ViewPosition {}): lungseg is trained on frontal films"


def pydicom_file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:  # shipped with pydicom's wheel; absent only from a stripped install
        pytest.skip(f"pydicom's test file {name} is not installed")
    return path


def chest(height: int = 64, width: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A display-ready (MONOCHROME2) 12-bit chest: air darkest, lungs dark, bone bright.

    Returns the pixels and the masks of the lungs and of the bone (spine and ribs)."""
    display = np.full((height, width), 100, np.uint16)  # air outside the body
    body = np.zeros((height, width), bool)
    body[4:-4, 6:-6] = True
    display[body] = 2000  # soft tissue
    lungs = np.zeros((height, width), bool)
    lungs[10:54, 12:28] = lungs[10:54, 36:52] = True
    display[lungs] = 800
    bone = np.zeros((height, width), bool)
    bone[6:58, 30:34] = True  # spine
    bone[20:22, 12:52] = True  # a rib across both lungs
    display[bone] = 3500
    return display, lungs & ~bone, bone


# --- DICOM detected by its marker ---------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_pydicom_files_with_a_tiff_preamble_are_dicom(name):
    path = pydicom_file(name)
    with open(path, "rb") as stream:
        head = stream.read(132)
    assert head[:4] == b"II*\x00" and head[128:132] == b"DICM"  # the case of issue 15
    # Read without the Modality check (as masks are), the pixels are there: DICOM won.
    values = read_grey_levels(path)
    assert values.shape in ((128, 128), (64, 64)) and values.max() > values.min()


@pytest.mark.parametrize(("name", "modality"), [("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")])
def test_pydicom_ct_and_mr_are_refused_naming_the_modality(name, modality):
    path = pydicom_file(name)
    described = REFUSED_MODALITIES[modality]
    expected = f"DICOM Modality {modality} ({described}) is not a chest radiograph"
    for read in (read_image, read_meta):
        with pytest.raises(InvalidInputError, match=re.escape(expected)) as caught:
            read(path)
        assert str(caught.value.path) == path
    with open(path, "rb") as stream:
        data = stream.read()
    with pytest.raises(InvalidInputError, match=re.escape(expected)):
        read_image_bytes(data, name)


# --- Modality and SOP class ---------------------------------------------------------------


@pytest.mark.parametrize(
    "modality", ["CT", "MR", "NM", "PT", "US", "XA", "RF", "MG", "RTIMAGE", "RTDOSE", "SEG"]
)
def test_non_radiograph_modalities_are_refused(tmp_path, modality):
    ds = xray_dataset(chest()[0], Modality=modality)
    path = write_dicom_file(tmp_path / "a.dcm", ds)
    with pytest.raises(InvalidInputError, match=rf"DICOM Modality {modality} \(") as caught:
        read_image(path)
    assert "lungseg segments frontal chest X-rays (Modality CR or DX)" in caught.value.reason


@pytest.mark.parametrize(
    "sop_class",
    [CTImageStorage, UltrasoundImageStorage, DigitalMammographyXRayImageStorageForPresentation],
)
def test_non_radiograph_sop_class_is_refused_even_as_dx(tmp_path, sop_class):
    path = write_dicom_file(tmp_path / "a.dcm", xray_dataset(chest()[0], sop_class=sop_class))
    expected = f"DICOM SOP class {sop_class.name} (Modality DX) is not a chest radiograph"
    with pytest.raises(InvalidInputError, match=re.escape(expected)):
        read_image(path)


@pytest.mark.parametrize(
    ("modality", "sop_class"),
    [
        ("DX", None),  # the factory's Digital X-Ray Image Storage - For Presentation
        ("CR", ComputedRadiographyImageStorage),
        ("DX", SecondaryCaptureImageStorage),
        ("RG", SecondaryCaptureImageStorage),
    ],
)
def test_radiographs_are_accepted_without_notes(tmp_path, modality, sop_class):
    pixels = chest()[0]
    extra = {"sop_class": sop_class} if sop_class else {}
    ds = xray_dataset(pixels, Modality=modality, ViewPosition="PA", **extra)
    image, meta = read_image(write_dicom_file(tmp_path / "a.dcm", ds))
    assert image.shape == pixels.shape and meta.source_format == "dicom"
    assert (meta.modality, meta.view_position, meta.warnings) == (modality, "PA", ())


@pytest.mark.parametrize(
    ("modality", "note"),
    [
        ("OT", "DICOM Modality OT (other): read as a radiograph"),
        (None, "DICOM Modality missing: read as a radiograph"),
        ("XR", "DICOM Modality XR is not a standard code: read as a radiograph"),
    ],
)
def test_unsure_modalities_are_read_with_a_note(tmp_path, modality, note):
    ds = xray_dataset(chest()[0], sop_class=SecondaryCaptureImageStorage)
    if modality is None:
        del ds.Modality
    else:
        ds.Modality = modality
    _, meta = read_image(write_dicom_file(tmp_path / "a.dcm", ds))
    assert meta.warnings == (note,)
    assert meta.modality == (modality or "")


def test_accepted_and_refused_modalities_do_not_overlap():
    assert not set(ACCEPTED_MODALITIES) & set(REFUSED_MODALITIES)
    assert {"CR", "DX"} <= set(ACCEPTED_MODALITIES)


def test_a_mask_stored_as_seg_is_still_read_as_a_mask(tmp_path):
    mask = (chest()[1] * 255).astype(np.uint8)
    ds = xray_dataset(mask, Modality="SEG", sop_class=SecondaryCaptureImageStorage)
    path = write_dicom_file(tmp_path / "mask.dcm", ds)
    np.testing.assert_array_equal(read_grey_levels(path) > 127, chest()[1])
    with pytest.raises(InvalidInputError, match="Modality SEG"):
        read_image(path)


# --- presentation: MONOCHROME1, Presentation LUT Shape INVERSE, after the VOI LUT ----------


PRESENTATIONS = [
    ("MONOCHROME2", None, False),
    ("MONOCHROME2", "IDENTITY", False),
    ("MONOCHROME1", None, True),
    ("MONOCHROME1", "INVERSE", True),  # the DX IOD's pairing: one inversion, not two
    ("MONOCHROME2", "INVERSE", True),
]


@pytest.mark.parametrize(("photometric", "shape", "stored_inverted"), PRESENTATIONS)
def test_every_presentation_shows_bright_bone_and_dark_lungs(
    tmp_path, photometric, shape, stored_inverted
):
    display, lungs, bone = chest()
    stored = (4095 - display).astype(np.uint16) if stored_inverted else display
    extra = {"PresentationLUTShape": shape} if shape else {}
    ds = xray_dataset(stored, photometric=photometric, **extra)
    image, _ = read_image(write_dicom_file(tmp_path / "a.dcm", ds))
    expected = (display - display.min()) / (display.max() - display.min())
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert image[bone].min() == 1.0 and image[lungs].max() < 0.25


@pytest.mark.parametrize(("photometric", "shape", "stored_inverted"), PRESENTATIONS)
def test_window_is_applied_to_stored_values_before_the_inversion(
    tmp_path, photometric, shape, stored_inverted
):
    """The window is stated on stored values; applied after an inversion it would cut the
    wrong end (bone instead of air)."""
    display, lungs, bone = chest()
    stored = (4095 - display).astype(np.uint16) if stored_inverted else display
    # Window over the stored levels of lungs .. bone only: air falls outside and clips to the
    # dark end, bone and lungs keep their contrast.
    low, high = sorted((int(stored[lungs][0]), int(stored[bone][0])))
    extra = {"PresentationLUTShape": shape} if shape else {}
    ds = xray_dataset(
        stored,
        photometric=photometric,
        WindowCenter=(low + high) / 2,
        WindowWidth=high - low,
        **extra,
    )
    image, _ = read_image(write_dicom_file(tmp_path / "a.dcm", ds))
    air = ~np.zeros_like(lungs)
    air[4:-4, 6:-6] = False
    assert image[bone].min() == pytest.approx(1.0)
    assert image[lungs].max() == pytest.approx(0.0, abs=1e-3)  # the window's dark end
    assert image[air].max() == pytest.approx(0.0, abs=1e-3)  # clipped, not made bright
    assert image[lungs].max() < image[bone].min()


# --- lateral and oblique views ------------------------------------------------------------


@pytest.mark.parametrize("view", ["LL", "RL"])
def test_lateral_view_is_read_with_a_warning(tmp_path, view):
    ds = xray_dataset(chest()[0], ViewPosition=view)
    image, meta = read_image(write_dicom_file(tmp_path / "a.dcm", ds))
    assert image.shape == (64, 64)
    assert meta.warnings == (LATERAL_NOTE.format(view),)
    assert meta.view_position == view
    assert read_image_bytes(dicom_file_bytes(ds), "up.dcm")[1].warnings == meta.warnings


def test_oblique_view_is_noted(tmp_path):
    ds = xray_dataset(chest()[0], ViewPosition="RLO")
    _, meta = read_image(write_dicom_file(tmp_path / "a.dcm", ds))
    assert meta.warnings == (
        "oblique view (ViewPosition RLO): lungseg is trained on frontal films",
    )


@pytest.mark.parametrize(
    ("attributes", "warned"),
    [
        ({"SeriesDescription": "CHEST LAT"}, True),
        ({"SeriesDescription": "Thorax lateral"}, True),
        ({"SeriesDescription": "CHEST PA + LAT"}, False),  # says both: not this image's view
        ({"SeriesDescription": "LATERAL", "ViewPosition": "PA"}, False),  # the view is stated
        ({"SeriesDescription": "CHEST PA"}, False),
        ({"SeriesDescription": "LATERALITY R"}, False),
    ],
)
def test_lateral_series_description_without_view_position(tmp_path, attributes, warned):
    ds = xray_dataset(chest()[0], **attributes)
    _, meta = read_image(write_dicom_file(tmp_path / "a.dcm", ds))
    if warned:
        (note,) = meta.warnings
        assert note.startswith("lateral view (SeriesDescription '")
        assert note.endswith("lungseg is trained on frontal films")
    else:
        assert meta.warnings == ()


def test_lateral_coded_view_is_noted(tmp_path):
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "R-10236", "SRT", "left lateral"
    ds = xray_dataset(chest()[0], ViewCodeSequence=Sequence([code]))
    _, meta = read_image(write_dicom_file(tmp_path / "a.dcm", ds))
    assert meta.warnings == (
        "lateral view (ViewCodeSequence 'left lateral'): lungseg is trained on frontal films",
    )


# --- physical size from a PNG/TIFF resolution -----------------------------------------------


def test_png_at_300_dpi_has_no_spacing_and_a_warning(tmp_path):
    pixels = np.full((512, 512), 128, np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png", dpi=(300, 300))
    _, meta = read_image(tmp_path / "a.png")
    assert meta.pixel_spacing_mm is None
    assert meta.warnings == (
        "PNG resolution 300 dpi would make the image 4.33 x 4.33 cm (WxH), not a radiograph's "
        "10-60 cm: pixel spacing ignored, areas in pixels only",
    )


@pytest.mark.parametrize(("dpi", "spacing_mm"), [(100, 0.254), (150, 25.4 / 150)])
def test_png_whose_resolution_gives_a_film_size_keeps_its_spacing(tmp_path, dpi, spacing_mm):
    # 2000 pixels: 50.8 cm at 100 dpi, 33.9 cm at 150 dpi.
    Image.fromarray(np.zeros((2000, 2000), np.uint8)).save(tmp_path / "a.png", dpi=(dpi, dpi))
    meta = read_meta(tmp_path / "a.png")
    np.testing.assert_allclose(meta.pixel_spacing_mm, (spacing_mm, spacing_mm), rtol=1e-3)
    assert meta.warnings == ()


def test_png_at_96_dpi_is_a_screen_default_not_a_spacing(tmp_path):
    # 52.9 cm would be plausible, but 96 dpi is what software writes when it knows nothing.
    Image.fromarray(np.zeros((2000, 2000), np.uint8)).save(tmp_path / "a.png", dpi=(96, 96))
    meta = read_meta(tmp_path / "a.png")
    assert (meta.pixel_spacing_mm, meta.warnings) == (None, ())


def test_tiff_larger_than_any_film_has_no_spacing_and_a_warning(tmp_path):
    # 2 px/cm on 2000 pixels: 10 m wide.
    tifffile.imwrite(
        tmp_path / "a.tif",
        np.zeros((2000, 2000), np.uint8),
        resolution=(2.0, 2.0),
        resolutionunit="CENTIMETER",
    )
    meta = read_meta(tmp_path / "a.tif")
    assert meta.pixel_spacing_mm is None
    (note,) = meta.warnings
    assert note.startswith("TIFF resolution 5.08 dpi would make the image 1e+03 x 1e+03 cm")


# --- lung area in cm2 -----------------------------------------------------------------------


def _two_lungs() -> np.ndarray:
    """Two lung-shaped blocks in a 512x512 film: 2 x 100 x 180 = 36,000 pixels (13.7%)."""
    mask = np.zeros((512, 512), bool)
    mask[150:330, 120:220] = mask[150:330, 290:390] = True
    return mask


def test_lung_area_of_a_real_chest_is_ok():
    result = measure_lungs(_two_lungs(), (0.8, 0.8))  # a 41 cm film at 512 px: 230 cm2
    assert result.area_cm2 == pytest.approx(230.4)
    assert (result.quality, result.reason) == ("ok", "")


@pytest.mark.parametrize(
    ("spacing", "area"),
    [
        ((25.4 / 300, 25.4 / 300), "2.58"),  # the 300-dpi PNG of issue 15, had its dpi been kept
        ((2.0, 2.0), "1.44e+03"),  # a 1 m wide "film"
    ],
)
def test_lung_area_outside_any_chest_is_flagged(spacing, area):
    result = measure_lungs(_two_lungs(), spacing)
    low, high = LUNG_AREA_CM2_RANGE
    assert result.quality == "check"
    assert result.reason == (
        f"lung area {area} cm2, outside any real chest's {low:.0f}-{high:.0f} cm2: "
        "the pixel spacing is probably wrong"
    )


def test_lung_area_without_spacing_is_not_checked_in_cm2():
    result = measure_lungs(_two_lungs())
    assert result.area_cm2 is None and result.quality == "ok"


def test_300_dpi_png_is_measured_in_pixels_and_not_flagged(tmp_path):
    """Issue 15's case end to end: the dpi is dropped, so no wrong cm2 is reported."""
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(tmp_path / "a.png", dpi=(300, 300))
    _, meta = read_image(tmp_path / "a.png")
    result = measure_lungs(_two_lungs(), meta.pixel_spacing_mm)
    assert result.area_cm2 is None and result.area_px == 36000
