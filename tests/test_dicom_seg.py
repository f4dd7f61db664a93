"""lungseg.dicom_seg: a real X-ray stored as DICOM, its manual mask split into right and left
lungs, written as a DICOM SEG and read back with highdicom; and every way a source is refused."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_factory import write_dicom_file, xray_dataset
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage, generate_uid

from lungseg import __version__
from lungseg.data.io import read_image
from lungseg.data.masks import read_mask
from lungseg.dicom_seg import LEFT_LUNG, RIGHT_LUNG, write_dicom_seg
from lungseg.errors import InvalidInputError

pytestmark = pytest.mark.data

STEM = "montgomery/{}/MCUCXR_0001_0.png"
# Montgomery detectors have 0.0875 mm pixels; the 4892x4020 (HxW) originals became 512x512.
SPACING_MM = [round(4892 * 0.0875 / 512, 4), round(4020 * 0.0875 / 512, 4)]
MODEL = {"model_name": "msag_unet_cpu", "model_version": "0.1.0+test"}


def write_xray_dicom(
    path: Path, image: np.ndarray, *, omit: tuple[str, ...] = (), frames: int = 1
) -> Path:
    """Store a [0, 1] X-ray as a 12-bit DX DICOM with the attributes a hospital export carries,
    minus the keywords in ``omit``."""
    pixels = np.round(image * 4095).astype(np.uint16)
    ds = xray_dataset(np.stack([pixels] * frames) if frames > 1 else pixels)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "MCU-0001"
    ds.PatientName = "Montgomery^Case0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "M"
    ds.StudyDate, ds.StudyTime = "20240115", "093000"
    ds.AccessionNumber, ds.StudyID = "A1234567", "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    ds.Manufacturer = "Test Detector Co"
    ds.PixelSpacing = ds.ImagerPixelSpacing = SPACING_MM
    for keyword in omit:
        delattr(ds, keyword)
    return write_dicom_file(path, ds)


def labels_by_midline(mask: np.ndarray) -> np.ndarray:
    """Right/left lung labels from a merged mask: in a PA view the patient's right lung is on
    the image's left half."""
    labels = np.zeros(mask.shape, np.uint8)
    half = mask.shape[1] // 2
    labels[:, :half][mask[:, :half]] = RIGHT_LUNG
    labels[:, half:][mask[:, half:]] = LEFT_LUNG
    return labels


@pytest.fixture(scope="module")
def xray(data_root: Path) -> np.ndarray:
    image, _ = read_image(data_root / STEM.format("images"))
    return image


@pytest.fixture(scope="module")
def labels(data_root: Path) -> np.ndarray:
    labels = labels_by_midline(read_mask(data_root / STEM.format("masks")))
    assert (labels == RIGHT_LUNG).sum() > 10_000 and (labels == LEFT_LUNG).sum() > 10_000
    return labels


@pytest.fixture
def source(tmp_path: Path, xray: np.ndarray) -> Path:
    return write_xray_dicom(tmp_path / "chest.dcm", xray)


def read_back(out: Path, source: Path) -> tuple[hd.seg.Segmentation, np.ndarray]:
    """The SEG and its pixels as one label image (segment number per pixel, 0 elsewhere)."""
    seg = hd.seg.segread(out)
    uid = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([uid], combine_segments=True)
    assert pixels.shape[0] == 1
    return seg, pixels[0]


def laterality(seg: hd.seg.Segmentation, number: int) -> str:
    segment_type = seg.get_segment_description(number).SegmentedPropertyTypeCodeSequence[0]
    return segment_type.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning


def test_seg_of_a_real_xray_round_trips(tmp_path, source, labels):
    out = tmp_path / "out" / "chest_seg.dcm"
    assert write_dicom_seg(source, labels, out, **MODEL) == out
    assert sorted(p.name for p in out.parent.iterdir()) == ["chest_seg.dcm"]  # no temp file

    seg, pixels = read_back(out, source)
    assert seg.get_segment_numbers() == [1, 2]
    for number, label, side in ((1, "Right lung", "Right"), (2, "Left lung", "Left")):
        description = seg.get_segment_description(number)
        assert description.segment_label == label
        assert description.segmented_property_category == codes.SCT.AnatomicalStructure
        assert description.segmented_property_type == codes.SCT.Lung
        assert laterality(seg, number) == side
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm = description.algorithm_identification[0]
        assert algorithm.AlgorithmName == "lungseg msag_unet_cpu"
        assert algorithm.AlgorithmVersion == "0.1.0+test"
    np.testing.assert_array_equal(pixels, labels)  # segment numbers equal the label values here

    src = pydicom.dcmread(source, stop_before_pixels=True)
    assert seg.get_source_image_uids() == [
        (src.StudyInstanceUID, src.SeriesInstanceUID, src.SOPInstanceUID)
    ]
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == src.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == (src.SOPInstanceUID)

    written = pydicom.dcmread(out)  # a valid DICOM file, preamble and meta header included
    assert out.read_bytes()[128:132] == b"DICM"
    assert written.SOPClassUID == SegmentationStorage and written.Modality == "SEG"
    assert written.SegmentationType == "BINARY"
    assert (written.Rows, written.Columns) == labels.shape
    assert written.StudyInstanceUID == src.StudyInstanceUID  # same study, new series
    assert written.SeriesInstanceUID != src.SeriesInstanceUID
    assert written.SOPInstanceUID not in (src.SOPInstanceUID, written.SeriesInstanceUID)
    assert (written.PatientID, written.PatientName) == (src.PatientID, src.PatientName)
    assert (written.AccessionNumber, written.StudyDate) == ("A1234567", "20240115")
    assert written.Manufacturer == "lungseg"
    assert written.ManufacturerModelName == "lungseg msag_unet_cpu"
    assert written.SoftwareVersions == __version__


def test_only_the_lungs_present_become_segments(tmp_path, source, labels):
    left_only = np.where(labels == LEFT_LUNG, labels, 0).astype(np.uint8)
    out = write_dicom_seg(source, left_only, tmp_path / "left_seg.dcm", **MODEL)

    seg, pixels = read_back(out, source)
    assert seg.get_segment_numbers() == [1]
    assert seg.get_segment_description(1).segment_label == "Left lung"
    assert laterality(seg, 1) == "Left"
    np.testing.assert_array_equal(pixels, left_only == LEFT_LUNG)


def test_an_empty_mask_gives_both_segments_with_empty_frames(tmp_path, source, labels):
    out = write_dicom_seg(source, np.zeros_like(labels), tmp_path / "empty_seg.dcm", **MODEL)

    seg, pixels = read_back(out, source)
    assert [seg.get_segment_description(n).segment_label for n in (1, 2)] == [
        "Right lung",
        "Left lung",
    ]
    assert pixels.shape == labels.shape and not pixels.any()


def test_missing_patient_and_study_details_are_written_empty(tmp_path, xray, labels):
    omit = ("PatientID", "PatientName", "PatientSex", "AccessionNumber", "StudyDate", "StudyID")
    source = write_xray_dicom(tmp_path / "anonymised.dcm", xray, omit=omit)
    before = source.read_bytes()

    out = write_dicom_seg(source, labels, tmp_path / "anonymised_seg.dcm", **MODEL)

    written = pydicom.dcmread(out)
    assert all(written[keyword].value in ("", None) for keyword in omit)
    np.testing.assert_array_equal(read_back(out, source)[1], labels)
    assert source.read_bytes() == before  # only the in-memory header copy was filled


def _text_file(path: Path) -> Path:
    path.write_text("not a DICOM file, whatever its name says\n" * 10)
    return path


# Each case makes the bad source from (scratch folder, data root, X-ray pixels).
BAD_SOURCES = [
    pytest.param(lambda tmp, root, xray: root / STEM.format("images"), "not DICOM", id="png"),
    pytest.param(
        lambda tmp, root, xray: _text_file(tmp / "notes.dcm"), "not a supported image", id="text"
    ),
    pytest.param(lambda tmp, root, xray: tmp / "absent.dcm", "file not found", id="missing"),
    pytest.param(
        lambda tmp, root, xray: write_xray_dicom(tmp / "bad.dcm", xray, omit=("PixelData",)),
        "no pixel data",
        id="no pixel data",
    ),
    pytest.param(
        lambda tmp, root, xray: write_xray_dicom(tmp / "bad.dcm", xray, omit=("StudyInstanceUID",)),
        "lacks StudyInstanceUID",
        id="no study uid",
    ),
    pytest.param(
        lambda tmp, root, xray: write_xray_dicom(tmp / "bad.dcm", xray, frames=2),
        "multi-frame",
        id="multi-frame",
    ),
]


@pytest.mark.parametrize(("make_source", "reason"), BAD_SOURCES)
def test_unusable_sources_are_refused_naming_the_file(
    make_source, reason, tmp_path, data_root, xray, labels
):
    bad = make_source(tmp_path, data_root, xray)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    with pytest.raises(InvalidInputError) as raised:
        write_dicom_seg(bad, labels, out_dir / "seg.dcm", **MODEL)

    assert raised.value.path == bad and str(bad) in str(raised.value)
    assert reason in raised.value.reason
    assert list(out_dir.iterdir()) == []


def test_labels_of_another_size_are_refused(tmp_path, source, labels):
    out = tmp_path / "seg.dcm"
    with pytest.raises(InvalidInputError, match=r"labels are 511x512 \(WxH\).*512x512") as raised:
        write_dicom_seg(source, labels[:, :-1], out, **MODEL)
    assert raised.value.path == source
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chest.dcm"]


@pytest.mark.parametrize(
    ("make_labels", "message"),
    [
        (lambda lab: np.where(lab == LEFT_LUNG, 3, lab).astype(np.uint8), r"found \[3\]"),
        (lambda lab: lab.astype(np.float32), "dtype float32"),
        (lambda lab: lab[np.newaxis], "2-D"),
    ],
    ids=["value 3", "float", "3-D"],
)
def test_labels_that_are_not_a_lung_label_image_are_a_caller_error(
    make_labels, message, tmp_path, source, labels
):
    with pytest.raises(ValueError, match=message):
        write_dicom_seg(source, make_labels(labels), tmp_path / "seg.dcm", **MODEL)
    assert not (tmp_path / "seg.dcm").exists()
