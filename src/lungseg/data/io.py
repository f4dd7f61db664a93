"""Read any chest X-ray file, or image held in memory, into one float32 grey array in [0, 1].

Hospitals hand over PNG, JPEG, TIFF (8/16-bit or float), BMP and DICOM. Everything downstream
(training, inference, the web service) wants the same thing: a 2-D float32 image in [0, 1] plus
the facts about where it came from (:class:`ImageMeta`). This module is the only place that
knows about file formats, so a bad file fails here with an :class:`InvalidInputError` that names
the file and the reason, never with a raw Pillow, tifffile or pydicom exception. It also decides
which files of a folder are images (:func:`is_image_file`), and turns arrays, tensors and PIL
images into the same grey [0, 1] array by the same rules (:func:`as_grey_image`). Masks are
read with these decoders by :mod:`lungseg.data.masks`, which holds the rules for masks.

Rules, in the order they are applied:

* The format is sniffed from the content, not the name (an upload's name can lie).
* The pixel count in the header is checked against ``max_pixels`` *before* decoding, so a
  decompression bomb costs nothing. Pillow's own guard (``PIL.Image.MAX_IMAGE_PIXELS``) is left
  in place as a second line of defence; only its warning is silenced because our check, which
  the caller can tune per call, has already run.
* Images smaller than :data:`MIN_SIDE` pixels on a side are rejected: they are thumbnails or
  placeholders, not radiographs.
* Colour (RGB, RGBA, palette) becomes grey by ITU-R 601 luminance; alpha is ignored.
* Integers are divided by their bit depth's maximum (16-bit by 65535), so exposure differences
  between files survive; float TIFFs already in [0, 1] are kept, other floats are min-max scaled.
* A file with the ``DICM`` marker at byte 128 is DICOM, whatever its 128-byte preamble holds
  (pydicom's own ``CT_small.dcm`` has a preamble that begins with a TIFF header).
* DICOM must hold a projection radiograph: a Modality or SOP class of another kind (CT, MR,
  NM, PT, US, XA/RF, MG, RT objects, SEG...) is refused with the modality named
  (:data:`ACCEPTED_MODALITIES`, :func:`_dicom_kind_problem`); a lateral or oblique view, a
  missing, ``OT`` or non-standard Modality is read but noted in :attr:`ImageMeta.warnings`.
* DICOM gets the Modality LUT (rescale slope/intercept), then the VOI LUT or window when the
  file has one, then the presentation: MONOCHROME1 or ``PresentationLUTShape`` INVERSE is
  inverted (once, when both say so: the DX IOD pairs MONOCHROME1 with INVERSE), so bones are
  bright as in MONOCHROME2; then min-max scaling. ``PixelSpacing`` (or
  ``ImagerPixelSpacing``) becomes :attr:`ImageMeta.pixel_spacing_mm`.
* A PNG/TIFF resolution becomes a pixel spacing only when the image it describes is the size
  of a radiograph (:data:`PLAUSIBLE_FILM_CM` on each side); a stated but implausible one (a
  PNG saved at 300 dpi) is dropped with a note in :attr:`ImageMeta.warnings`.
"""

from __future__ import annotations

import io
import logging
import math
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lungseg.errors import (
    ImageTooLargeError,
    InvalidInputError,
    LungsegError,
    UnsupportedFormatError,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image (height x width) read by default: a 10k x 10k detector image still fits."""

MIN_SIDE = 16
"""Smallest accepted height or width in pixels."""

ACCEPTED_IMAGES = (
    "a file path, or one grey image (H, W) or (1, H, W), RGB (H, W, 3) or RGBA (H, W, 4), "
    "as a numpy array, a torch tensor or a PIL image"
)
"""What :func:`as_grey_image` (and so :class:`lungseg.Segmenter`) takes, for messages."""

IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".dcm",
    ".dicom",
)
"""File name endings treated as images when listing folders; DICOM without a suffix is also
recognised by content (see :func:`looks_like_dicom`)."""

_LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"
# Resolutions software writes by default (screen 72/96 dpi, Pillow's 1 dpi for TIFF): they say
# nothing physical and are dropped without a note.
_DEFAULT_DPI = (1.0, 72.0, 96.0)
# Radiograph pixels measure 0.05-0.2 mm at the detector and up to a few mm once downsampled;
# a TIFF/PNG resolution outside this range (Pillow writes 1 dpi by default) is not physical.
_PLAUSIBLE_SPACING_MM = (0.01, 5.0)

PLAUSIBLE_FILM_CM = (10.0, 60.0)
"""Physical height and width (cm) a PNG/TIFF resolution may give the image before it is taken
as a pixel spacing. Chest films are 35x43 cm (14x17 in) or 43x43 cm for adults; the smallest
cassette is 18x24 cm and a cropped neonatal chest is about 10 cm across; 60 cm leaves room for
a large adult's film. A 512-pixel PNG saved at 300 dpi would be 4.3 cm wide: not a radiograph."""

ACCEPTED_MODALITIES: tuple[str, ...] = ("CR", "DX", "DR", "RG", "OT")
"""DICOM Modality values read as a chest radiograph: computed and digital radiography (``DR`` is
not a DICOM code but some vendors write it), radiographic film (``RG``), and ``OT`` (other:
scanned films, secondary captures), which is read with a note in :attr:`ImageMeta.warnings`, as
is a missing Modality. The values of :data:`REFUSED_MODALITIES` are refused; any other
(non-standard) value is read with a note."""

REFUSED_MODALITIES: dict[str, str] = {
    "CT": "computed tomography",
    "MR": "magnetic resonance",
    "NM": "nuclear medicine",
    "PT": "positron emission tomography",
    "US": "ultrasound",
    "IVUS": "intravascular ultrasound",
    "XA": "X-ray angiography",
    "RF": "radiofluoroscopy",
    "MG": "mammography",
    "IO": "intra-oral radiography",
    "PX": "panoramic dental radiography",
    "DG": "diaphanography",
    "BMD": "bone densitometry",
    "BI": "biomagnetic imaging",
    "TG": "thermography",
    "RTIMAGE": "radiotherapy image",
    "RTDOSE": "radiotherapy dose",
    "RTSTRUCT": "radiotherapy structure set",
    "RTPLAN": "radiotherapy plan",
    "RTRECORD": "radiotherapy treatment record",
    "RTSEGANN": "radiotherapy segment annotation",
    "SEG": "segmentation",
    "SR": "structured report",
    "KO": "key object selection",
    "PR": "presentation state",
    "REG": "registration",
    "RWV": "real world value map",
    "FID": "fiducials",
    "DOC": "document",
    "ECG": "electrocardiography",
    "HD": "haemodynamic waveform",
    "EPS": "cardiac electrophysiology",
    "ES": "endoscopy",
    "XC": "external-camera photography",
    "GM": "general microscopy",
    "SM": "slide microscopy",
    "OP": "ophthalmic photography",
    "OPT": "ophthalmic tomography",
    "OCT": "optical coherence tomography",
    "IVOCT": "intravascular optical coherence tomography",
    "LS": "laser surface scan",
    "M3D": "3-D model",
    "OSS": "optical surface scan",
    "AU": "audio",
}
"""DICOM Modality values that are not a projection chest radiograph, with what they are."""

# Image SOP classes that can hold a chest film; any other storage SOP class pydicom knows (CT,
# MR, US, mammography, angiography, RT...) is refused even when its Modality says DX.
_ACCEPTED_SOP_CLASSES = frozenset(
    {
        "ComputedRadiographyImageStorage",
        "HardcopyGrayscaleImageStorage",  # retired: a printed film
        "DigitalXRayImageStorageForPresentation",
        "DigitalXRayImageStorageForProcessing",
        "SecondaryCaptureImageStorage",
        "MultiFrameSingleBitSecondaryCaptureImageStorage",
        "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
        "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
        "MultiFrameTrueColorSecondaryCaptureImageStorage",
    }
)
_VIEWS = {"LL": "lateral", "RL": "lateral", "LLO": "oblique", "RLO": "oblique"}
NOT_FRONTAL = "lungseg is trained on frontal films"
"""Ends the warning of a lateral or oblique film (:attr:`ImageMeta.warnings`): such a mask is
flagged "check"."""
_LATERAL_WORDS = re.compile(r"\bLAT(ERAL)?\b", re.IGNORECASE)
_FRONTAL_WORDS = re.compile(r"\b(PA|AP|FRONTAL|POSTERO-?ANTERIOR|ANTERO-?POSTERIOR)\b", re.I)


@dataclass(frozen=True)
class ImageMeta:
    """What is known about an image file besides its pixels.

    Attributes:
        path: the file (or upload name) the image came from.
        height: rows of the original image.
        width: columns of the original image.
        bit_depth: bits per sample as stored (8, 16, 12 for many DICOMs, 32 for float).
        pixel_spacing_mm: (row, column) spacing in millimetres when the file states a physical
            one (DICOM PixelSpacing/ImagerPixelSpacing; a TIFF/PNG resolution in real units
            that is not a 1/72/96 dpi software default, gives 0.01-5 mm pixels and an image
            of :data:`PLAUSIBLE_FILM_CM` on each side); else ``None``.
        source_format: ``"png"``, ``"jpeg"``, ``"tiff"``, ``"bmp"`` or ``"dicom"``.
        warnings: what the caller should show beside the result, in words: a lateral or oblique
            DICOM view, a missing/``OT``/non-standard Modality, a PNG/TIFF resolution dropped as
            implausible for a radiograph. Empty when there is nothing to say.
        modality: DICOM Modality as stated (``"DX"``, ``"CR"``...; ``""`` when the attribute is
            missing or empty); None for other formats.
        view_position: DICOM ViewPosition as stated (``"PA"``, ``"AP"``, ``"LL"``...; ``""``
            when missing); None for other formats.
    """

    path: str
    height: int
    width: int
    bit_depth: int
    pixel_spacing_mm: tuple[float, float] | None
    source_format: str
    warnings: tuple[str, ...] = ()
    modality: str | None = None
    view_position: str | None = None


@dataclass
class _Grey:
    """A decoded image before scaling: grey levels as stored and the value that means white.

    ``full_scale`` is ``None`` when the file has no fixed white level (DICOM after its LUTs,
    signed integers, floats outside [0, 1]); the image is then min-max scaled.
    """

    meta: ImageMeta
    values: np.ndarray | None = None  # float32 (H, W); None when only the header was read
    full_scale: float | None = None


def read_image(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, ImageMeta]:
    """Read an X-ray file of any supported format.

    Args:
        path: a PNG, JPEG, TIFF, BMP or DICOM file (the format is found from the content).
        max_pixels: refuse images with more pixels than this, before decoding them.

    Returns:
        The image as float32 (H, W) in [0, 1], and its :class:`ImageMeta`.

    Raises:
        InvalidInputError: the file is missing, empty, truncated, not an image, too small or
            too large, or a DICOM object that is not a chest radiograph (CT, MR, US...,
            see :data:`REFUSED_MODALITIES`); the message names the file and the reason.
    """
    path = Path(path)
    with _open_file(path) as stream:
        grey = _decode(stream, str(path), max_pixels=max_pixels)
    return _to_unit_range(grey), grey.meta


def read_image_bytes(
    data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, ImageMeta]:
    """Read an uploaded X-ray held in memory, exactly as :func:`read_image` reads a file.

    Args:
        data: the file's bytes.
        name: the upload's name, used only in messages and :attr:`ImageMeta.path` (the format
            is sniffed from ``data``).
        max_pixels: refuse images with more pixels than this, before decoding them.

    Raises:
        InvalidInputError: as :func:`read_image`.
    """
    if not data:
        raise InvalidInputError(name, "file is empty (0 bytes)")
    grey = _decode(io.BytesIO(data), name, max_pixels=max_pixels)
    return _to_unit_range(grey), grey.meta


def read_meta(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageMeta:
    """Read only an image's header: size, bit depth, spacing; no pixel is decoded.

    Cheap enough to call for every file of a data set, e.g. to check a mask's size against
    its image without decoding the image.

    Raises:
        InvalidInputError: as :func:`read_image`, except that truncated pixel data goes unseen.
    """
    path = Path(path)
    with _open_file(path) as stream:
        return _decode(stream, str(path), max_pixels=max_pixels, pixels=False).meta


def read_grey_levels(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image's grey levels as stored: float32 (H, W), not rescaled to [0, 1].

    Colour becomes grey and DICOM gets its LUTs as in :func:`read_image`, but no white level
    is applied; masks are read this way (see :func:`lungseg.data.masks.read_mask_values`), so
    the DICOM Modality is not checked (a mask may be stored as ``SEG`` or ``OT``).

    Raises:
        InvalidInputError: as :func:`read_image`, except for the Modality check.
    """
    path = Path(path)
    with _open_file(path) as stream:
        return _decode(stream, str(path), max_pixels=max_pixels, radiograph=False).values


def is_image_file(path: str | Path) -> bool:
    """Whether a file met while listing a folder is an image to read.

    Its name ends in one of :data:`IMAGE_SUFFIXES` (any case), or it has no suffix and its
    first bytes say DICOM (:func:`looks_like_dicom`); a suffix-less file that cannot be opened
    is not an image. Only the name and, without a suffix, 132 bytes are looked at.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    if suffix:
        return False
    try:
        with path.open("rb") as stream:
            return looks_like_dicom(stream.read(132))
    except OSError:
        return False


def as_grey_image(image: object) -> np.ndarray:
    """An X-ray held in memory as float32 (H, W) in [0, 1], by the rules files are read with.

    Accepted: a numpy array or a torch tensor (detached, copied to the CPU) of shape (H, W),
    (1, H, W), (H, W, 1), grey + alpha (H, W, 2), RGB (H, W, 3) or RGBA (H, W, 4); a PIL image
    of any mode. Then, as in :func:`read_image`:

    * Colour becomes grey by ITU-R 601 luminance, alpha is ignored; a PIL image is converted
      by its mode exactly as a decoded file of that mode is.
    * Unsigned integers are divided by their type's maximum (uint8 by 255, uint16 by 65535,
      as a 16-bit file; uint32 by 2**32 - 1); bool is {0, 1}.
    * Signed integers have no white level (as signed TIFFs and 32-bit PIL images): min-max
      scaled.
    * Floats already in [0, 1] are kept; other finite floats are min-max scaled; NaN or
      infinity anywhere is refused, as in a float TIFF.
    * At least :data:`MIN_SIDE` pixels a side. A constant image becomes all zeros when it has
      no white level.

    Raises:
        LungsegError: any other type or shape (1-D, 4-D, colour-first (3, H, W)), pixels that
            are not numbers, NaN or infinite values, or a side under :data:`MIN_SIDE` pixels;
            the message says what is accepted.
    """
    if _is_pil_image(image):
        return _pil_grey(image)
    if isinstance(image, np.ndarray):
        array = image
    elif _is_tensor(image):
        array = _tensor_array(image)
    else:
        hint = ""
        if isinstance(image, (bytes, bytearray, memoryview)):
            hint = " (for a file's bytes use lungseg.data.io.read_image_bytes)"
        elif isinstance(image, (list, tuple)):
            hint = " (for a nested list use np.asarray; for several images predict_many)"
        raise LungsegError(
            f"an input of type {type(image).__name__} is not an image{hint}; "
            f"expected {ACCEPTED_IMAGES}"
        )
    if array.dtype.kind not in "buif":
        raise LungsegError(
            f"an array of {array.dtype} pixels is not an image: pixels must be bool, integer or "
            f"float numbers; expected {ACCEPTED_IMAGES}"
        )
    values = _grey_plane(array)
    height, width = values.shape
    if height < MIN_SIDE or width < MIN_SIDE:
        raise LungsegError(
            f"image is {width}x{height} pixels (WxH); at least {MIN_SIDE} pixels a side needed"
        )
    kind = array.dtype.kind
    if kind == "f":
        values = values.astype(np.float32, copy=False)
        if not np.isfinite(values).all():
            raise LungsegError(
                "float image contains NaN or infinite values; expected finite floats "
                "(in [0, 1] they are kept, other ranges are min-max scaled)"
            )
        full_scale = 1.0 if values.min() >= 0.0 and values.max() <= 1.0 else None
    elif kind == "b":
        full_scale = 1.0
    elif kind == "u":
        full_scale = float(2 ** (8 * array.dtype.itemsize) - 1)
    else:  # signed integers: no white level
        full_scale = None
    return _scale(values.astype(np.float32, copy=False), full_scale)


def looks_like_dicom(head: bytes) -> bool:
    """Whether a file's first 132 bytes say DICOM: the ``DICM`` tag after the 128-byte preamble,
    or (for old preamble-less files) a first element in group 0002 or 0008, little endian."""
    return head[128:132] == b"DICM" or head[:2] in (b"\x02\x00", b"\x08\x00")


def _open_file(path: Path) -> BinaryIO:
    """Open ``path`` for reading, turning every way it can fail into an InvalidInputError."""
    if path.is_dir():
        raise InvalidInputError(path, "is a directory, not an image file")
    try:
        if path.stat().st_size == 0:
            raise InvalidInputError(path, "file is empty (0 bytes)")
        return path.open("rb")
    except FileNotFoundError:
        raise InvalidInputError(path, "file not found") from None
    except OSError as err:
        raise InvalidInputError(path, f"cannot open file ({err.strerror or err})") from None


def _sniff(head: bytes) -> str | None:
    if head[128:132] == b"DICM":  # before the others: a DICOM preamble may hold any header
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    if looks_like_dicom(head):
        return "dicom"
    return None


def _decode(
    stream: BinaryIO, name: str, *, max_pixels: int, pixels: bool = True, radiograph: bool = True
) -> _Grey:
    """Sniff the format and decode (or, with ``pixels=False``, only read the header).

    ``radiograph=False`` skips the DICOM Modality/SOP class check (for masks)."""
    head = stream.read(132)
    stream.seek(0)
    source_format = _sniff(head)
    if source_format is None:
        raise UnsupportedFormatError(
            name, "not a supported image (expected PNG, JPEG, TIFF, BMP or DICOM content)"
        )
    if source_format == "dicom":
        return _decode_dicom(
            stream, name, max_pixels=max_pixels, pixels=pixels, radiograph=radiograph
        )
    if source_format == "tiff":
        try:
            return _decode_tifffile(stream, name, max_pixels=max_pixels, pixels=pixels)
        except _NotForTifffile as why:
            log.debug("%s: tifffile cannot read it (%s); trying Pillow", name, why)
            stream.seek(0)
    return _decode_pillow(stream, name, source_format, max_pixels=max_pixels, pixels=pixels)


def _check_size(name: str, height: int, width: int, max_pixels: int) -> None:
    if height < MIN_SIDE or width < MIN_SIDE:
        raise InvalidInputError(
            name,
            f"image is {width}x{height} pixels (WxH); at least {MIN_SIDE} pixels a side needed",
        )
    if height * width > max_pixels:
        raise ImageTooLargeError(
            name,
            f"image is {width}x{height} = {height * width:,} pixels, over the limit of "
            f"{max_pixels:,} (a decompression-bomb guard; raise max_pixels if the file is genuine)",
        )


def _to_unit_range(grey: _Grey) -> np.ndarray:
    return _scale(grey.values, grey.full_scale)


def _scale(values: np.ndarray, full_scale: float | None) -> np.ndarray:
    """Grey levels to [0, 1]: divided by the white level, else min-max scaled."""
    if full_scale is not None:
        return np.clip(values / np.float32(full_scale), 0.0, 1.0, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


_STREAM_REPR = re.compile(r"\s*<_io\.\w+[^>]*>")  # Pillow: "... <_io.BytesIO object at 0x..>"


def _why(err: Exception) -> str:
    """A third-party exception as one line (some decoders report several lines), without the
    repr of the stream it read: an address or a temporary path says nothing to the user, and
    would make the same bytes fail differently as a file and as an upload."""
    return " ".join(_STREAM_REPR.sub("", str(err)).split()) or type(err).__name__


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float32) @ _LUMINANCE


def _float_full_scale(values: np.ndarray, name: str) -> float | None:
    if not np.isfinite(values).all():
        raise InvalidInputError(name, "float image contains NaN or infinite values")
    return 1.0 if values.min() >= 0.0 and values.max() <= 1.0 else None


def _spacing_from_dpi(
    dpi_x: float, dpi_y: float, height: int, width: int, source_format: str
) -> tuple[tuple[float, float] | None, tuple[str, ...]]:
    """(row, col) mm spacing from a resolution, and the warnings about it.

    None without a note when the resolution is absent, not positive or a software default
    (:data:`_DEFAULT_DPI`); None with a note when it would make the image smaller or larger
    than a radiograph (:data:`PLAUSIBLE_FILM_CM`) or its pixels implausible.
    """
    if not (0 < dpi_x < math.inf and 0 < dpi_y < math.inf):  # NaN fails too
        return None, ()
    if any(abs(dpi_x - d) < 0.5 and abs(dpi_y - d) < 0.5 for d in _DEFAULT_DPI):
        return None, ()
    spacing = (25.4 / dpi_y, 25.4 / dpi_x)
    width_cm, height_cm = width * spacing[1] / 10, height * spacing[0] / 10
    low_mm, high_mm = _PLAUSIBLE_SPACING_MM
    low_cm, high_cm = PLAUSIBLE_FILM_CM
    if all(low_mm <= mm <= high_mm for mm in spacing) and all(
        low_cm <= cm <= high_cm for cm in (width_cm, height_cm)
    ):
        return spacing, ()
    stated = f"{dpi_x:.4g} dpi" if abs(dpi_x - dpi_y) < 0.5 else f"{dpi_x:.4g}x{dpi_y:.4g} dpi"
    return None, (
        f"{source_format.upper()} resolution {stated} would make the image {width_cm:.3g} x "
        f"{height_cm:.3g} cm (WxH), not a radiograph's {low_cm:.0f}-{high_cm:.0f} cm: "
        "pixel spacing ignored, areas in pixels only",
    )


# --- images in memory: arrays, tensors, PIL images -------------------------------------------


def _is_pil_image(obj: object) -> bool:
    image_module = sys.modules.get("PIL.Image")  # never imported here for a non-PIL input
    return image_module is not None and isinstance(obj, image_module.Image)


def _is_tensor(obj: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _tensor_array(tensor) -> np.ndarray:
    """A torch tensor as a numpy array of the same shape and, where numpy has it, dtype."""
    torch = sys.modules["torch"]
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype not in (
        torch.float16,
        torch.float32,
        torch.float64,
    ):
        tensor = tensor.float()  # bfloat16, float8: numpy has no such type
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as err:  # a dtype numpy lacks (quantised...)
        raise LungsegError(
            f"a tensor of {tensor.dtype} pixels is not an image ({err}); expected {ACCEPTED_IMAGES}"
        ) from None


def _grey_plane(array: np.ndarray) -> np.ndarray:
    """An accepted array shape -> its (H, W) grey plane (colour by luminance); else raise."""
    shape = tuple(array.shape)
    if array.ndim == 2:
        return array
    if array.ndim == 3 and shape[0] == 1:  # (1, H, W), as a one-channel tensor
        return array[0]
    if array.ndim == 3 and shape[-1] in (1, 2):  # grey, grey + alpha
        return array[..., 0]
    if array.ndim == 3 and shape[-1] in (3, 4):  # RGB, RGBA: alpha is ignored, as in files
        return _luminance(array)
    if array.ndim == 3 and shape[0] in (2, 3, 4):
        raise LungsegError(
            f"image of shape {shape} looks colour-first (C, H, W); give colour channels last, "
            f"e.g. np.moveaxis(image, 0, -1); expected {ACCEPTED_IMAGES}"
        )
    hint = " (one image at a time: predict_many segments several)" if array.ndim > 3 else ""
    raise LungsegError(
        f"a {array.ndim}-D array of shape {shape} is not one image{hint}; "
        f"expected {ACCEPTED_IMAGES}"
    )


def _pil_grey(image) -> np.ndarray:
    """A PIL image in memory -> [0, 1] grey, mode by mode as a decoded file of that mode."""
    width, height = image.size
    if height < MIN_SIDE or width < MIN_SIDE:
        raise LungsegError(
            f"image is {width}x{height} pixels (WxH); at least {MIN_SIDE} pixels a side needed"
        )
    try:
        image.load()
        values, full_scale = _pillow_grey(image, "PIL image")
    except InvalidInputError as err:  # a float image with NaN: no file to name
        raise LungsegError(f"PIL image: {err.reason}; expected finite floats") from None
    except Exception as err:  # a lazily opened file that turns out truncated...
        raise LungsegError(f"cannot read the PIL image ({_why(err)})") from None
    return _scale(values, full_scale)


# --- Pillow: PNG, JPEG, BMP, and TIFFs that tifffile cannot decode ----------------------------


def _decode_pillow(
    stream: BinaryIO, name: str, source_format: str, *, max_pixels: int, pixels: bool
) -> _Grey:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream, formats=[source_format.upper()])
        except Image.DecompressionBombError as err:
            raise ImageTooLargeError(
                name, f"image is too large to decode safely ({_why(err)})"
            ) from None
        except Exception as err:  # Pillow signals a bad header with many exception types
            raise InvalidInputError(
                name, f"not a readable {source_format.upper()} file ({_why(err)})"
            ) from None
        with image:
            _check_size(name, image.height, image.width, max_pixels)
            spacing, notes = None, ()
            if source_format in ("png", "tiff") and "dpi" in image.info:
                dpi_x, dpi_y = (float(v) for v in image.info["dpi"])
                spacing, notes = _spacing_from_dpi(
                    dpi_x, dpi_y, image.height, image.width, source_format
                )
            bit_depth = _PILLOW_BIT_DEPTH.get(image.mode, 8)
            meta = ImageMeta(
                name, image.height, image.width, bit_depth, spacing, source_format, notes
            )
            if not pixels:
                return _Grey(meta)
            try:
                image.load()
                values, full_scale = _pillow_grey(image, name)
            except InvalidInputError:
                raise
            except Exception as err:  # truncated/corrupt data surfaces as OSError, SyntaxError...
                raise InvalidInputError(
                    name, f"truncated or corrupt {source_format.upper()} data ({_why(err)})"
                ) from None
    return _Grey(meta, values, full_scale)


_PILLOW_BIT_DEPTH = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


def _pillow_grey(image, name: str) -> tuple[np.ndarray, float | None]:
    """Grey levels and white level of a loaded Pillow image, by mode."""
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.float32), 1.0
    if mode in ("L", "LA"):
        return np.asarray(image.getchannel(0), dtype=np.float32), 255.0
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.float32), 65535.0
    if mode == "I":  # 32-bit integers: no meaningful white level
        return np.asarray(image).astype(np.float32), None
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        return values, _float_full_scale(values, name)
    return _luminance(np.asarray(image.convert("RGB"))), 255.0


# --- tifffile: 8/16/32-bit and float TIFF, grey or RGB ----------------------------------------


class _NotForTifffile(Exception):
    """tifffile cannot decode this TIFF (palette, CMYK, a codec needing imagecodecs...)."""


def _decode_tifffile(stream: BinaryIO, name: str, *, max_pixels: int, pixels: bool) -> _Grey:
    import tifffile

    try:
        tif = tifffile.TiffFile(stream)
    except Exception as err:  # TiffFileError, struct.error, ValueError on a broken header
        raise InvalidInputError(name, f"not a readable TIFF file ({_why(err)})") from None
    with tif:
        if not tif.pages:
            raise InvalidInputError(name, "TIFF file holds no image")
        page = tif.pages.first
        try:  # a tag of the wrong type or count reads as a tuple or bytes
            height, width = int(page.imagelength), int(page.imagewidth)
            photometric, bit_depth = int(page.photometric), int(page.bitspersample)
            separate_planes = int(page.planarconfig) == 2
        except (TypeError, ValueError) as err:
            raise _NotForTifffile(f"invalid header field ({_why(err)})") from None
        _check_size(name, height, width, max_pixels)
        if photometric not in (0, 1, 2) or bit_depth < 1:  # MINISWHITE, MINISBLACK, RGB
            raise _NotForTifffile(f"photometric {photometric}, {bit_depth} bits per sample")
        spacing, notes = _tiff_spacing(page, height, width)
        meta = ImageMeta(name, height, width, bit_depth, spacing, "tiff", notes)
        if not pixels:
            return _Grey(meta)
        try:
            array = page.asarray()
        except Exception as err:  # most often a compression that needs imagecodecs
            raise _NotForTifffile(str(err)) from None
    kind = array.dtype.kind
    if array.ndim == 3 and separate_planes:  # (S, H, W)
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3:  # colour or grey + alpha
        values = _luminance(array) if array.shape[-1] >= 3 else array[..., 0].astype(np.float32)
    else:
        values = array.astype(np.float32)
    if values.shape != (height, width):  # e.g. 65535 bits per sample decode to an empty array
        raise _NotForTifffile(f"decoded {values.shape[::-1]} pixels for a {width}x{height} header")
    if kind == "f":
        full_scale = _float_full_scale(values, name)
    elif kind in "ub":
        full_scale = float(2**bit_depth - 1)
    else:  # signed integers: no white level
        full_scale = None
    if photometric == 0:  # MINISWHITE: 0 is white
        top = full_scale if full_scale is not None else values.max() + values.min()
        values = top - values
    return _Grey(meta, values, full_scale)


def _tiff_spacing(
    page, height: int, width: int
) -> tuple[tuple[float, float] | None, tuple[str, ...]]:
    tags = page.tags
    unit = tags.get("ResolutionUnit")
    x_res, y_res = tags.get("XResolution"), tags.get("YResolution")
    if unit is None or x_res is None or y_res is None:
        return None, ()
    try:
        per_inch = {2: 1.0, 3: 2.54}.get(int(unit.value))  # INCH, CENTIMETER; NONE is no unit
        (xn, xd), (yn, yd) = x_res.value, y_res.value
    except (TypeError, ValueError):  # a tag of the wrong type or count: no usable resolution
        return None, ()
    if per_inch is None or not xd or not yd:
        return None, ()
    return _spacing_from_dpi(xn / xd * per_inch, yn / yd * per_inch, height, width, "tiff")


# --- pydicom: DICOM ---------------------------------------------------------------------------


def _decode_dicom(
    stream: BinaryIO, name: str, *, max_pixels: int, pixels: bool, radiograph: bool = True
) -> _Grey:
    import pydicom
    from pydicom.uid import UID

    head = stream.read(132)
    stream.seek(0)
    if not isinstance(stream, io.BytesIO):
        # pydicom reads an element's stated length in one call, and a file object allocates
        # that much first: a corrupt length would cost up to 4 GiB. From memory, a read
        # cannot exceed the file.
        stream = io.BytesIO(stream.read())
    try:
        ds = pydicom.dcmread(stream, force=head[128:132] != b"DICM")
    except Exception as err:  # InvalidDicomError, EOFError, struct errors on truncation
        raise InvalidInputError(name, f"not a readable DICOM file ({_why(err)})") from None
    if "TransferSyntaxUID" not in ds.file_meta:  # old files without a meta header
        _assume_uncompressed(ds)
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        kind = _dicom_get(ds, "SOPClassUID")
        name_of = kind.name if isinstance(kind, UID) and kind.is_valid else "unknown SOP class"
        raise UnsupportedFormatError(name, f"DICOM file has no pixel data ({name_of})")
    height, width = _dicom_int(ds, "Rows"), _dicom_int(ds, "Columns")
    if height is None or width is None:
        raise InvalidInputError(name, "DICOM file lacks valid Rows/Columns")
    modality, view = _dicom_text(ds, "Modality").upper(), _dicom_text(ds, "ViewPosition").upper()
    if radiograph:
        problem = _dicom_kind_problem(ds, modality)
        if problem:
            raise InvalidInputError(name, problem)
    _check_size(name, height, width, max_pixels)
    bit_depth = _dicom_int(ds, "BitsStored") or _dicom_int(ds, "BitsAllocated") or 16
    meta = ImageMeta(
        name,
        height,
        width,
        bit_depth,
        _dicom_spacing(ds),
        "dicom",
        _dicom_notes(ds, modality, view) if radiograph else (),
        modality,
        view,
    )
    if not pixels:
        return _Grey(meta)
    return _Grey(meta, _dicom_grey(ds, name))


def _dicom_grey(ds, name: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    try:
        array = pixel_array(ds, index=0)
    except Exception as err:  # no decoder for the transfer syntax, corrupt fragments...
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        described = f"{syntax.name} ({syntax})" if syntax else "unknown"  # None or empty
        # No decoder at all for the syntax: a format we do not read. Else the data is corrupt.
        error = UnsupportedFormatError if not _has_decoder(syntax) else InvalidInputError
        raise error(
            name, f"cannot decode DICOM pixel data, transfer syntax {described}: {_why(err)}"
        ) from None
    if (_dicom_int(ds, "SamplesPerPixel") or 1) > 1:  # colour; pydicom already converted YBR to RGB
        return _luminance(array)
    try:
        values = apply_modality_lut(array, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            values = apply_voi_lut(values, ds)
    except Exception as err:  # malformed LUT or window attributes
        raise InvalidInputError(name, f"invalid DICOM LUT or window ({_why(err)})") from None
    values = np.asarray(values, dtype=np.float32)
    # Presentation, after the VOI LUT: MONOCHROME1 (high values are dark) and a Presentation
    # LUT Shape INVERSE each mean "invert for display". The DX IOD requires INVERSE with
    # MONOCHROME1 (PS3.3 C.8.11.6.1): both state the same inversion, applied once, so every
    # file ends up as MONOCHROME2 shows it (bones bright, lungs dark).
    inverse = _dicom_text(ds, "PresentationLUTShape").upper() == "INVERSE"
    if _dicom_text(ds, "PhotometricInterpretation").upper() == "MONOCHROME1" or inverse:
        values = values.max() + values.min() - values
    return values


def _dicom_text(ds, keyword: str) -> str:
    """A text attribute stripped, ``""`` when absent, empty, unreadable or not one string."""
    value = _dicom_get(ds, keyword)
    return value.strip() if isinstance(value, str) else ""


def _dicom_kind_problem(ds, modality: str) -> str | None:
    """Why a DICOM object is not a chest radiograph, naming its Modality; None if it is."""
    from pydicom.uid import UID

    wanted = "lungseg segments frontal chest X-rays (Modality CR or DX)"
    if modality in REFUSED_MODALITIES:
        return (
            f"DICOM Modality {modality} ({REFUSED_MODALITIES[modality]}) is not a chest "
            f"radiograph; {wanted}"
        )
    sop_class = _dicom_get(ds, "SOPClassUID") or _dicom_get(
        getattr(ds, "file_meta", {}), "MediaStorageSOPClassUID"
    )
    if isinstance(sop_class, str) and sop_class:
        uid = UID(sop_class)
        keyword = uid.keyword  # "" for a UID pydicom does not know (private classes)
        if "Storage" in keyword and keyword not in _ACCEPTED_SOP_CLASSES:
            stated = f"Modality {modality}" if modality else "no Modality"
            return f"DICOM SOP class {uid.name} ({stated}) is not a chest radiograph; {wanted}"
    return None


def _dicom_notes(ds, modality: str, view: str) -> tuple[str, ...]:
    """Warnings about a DICOM radiograph that is read: an unusual Modality, a non-frontal view."""
    notes = []
    if not modality:
        notes.append("DICOM Modality missing: read as a radiograph")
    elif modality == "OT":
        notes.append("DICOM Modality OT (other): read as a radiograph")
    elif modality not in ACCEPTED_MODALITIES:
        notes.append(f"DICOM Modality {modality} is not a standard code: read as a radiograph")
    if view in _VIEWS:
        notes.append(f"{_VIEWS[view]} view (ViewPosition {view}): {NOT_FRONTAL}")
    elif not view:  # no ViewPosition: the coded view or the series description may say
        for source, text in _dicom_view_texts(ds):
            if _LATERAL_WORDS.search(text) and not _FRONTAL_WORDS.search(text):
                notes.append(f"lateral view ({source} '{text}'): {NOT_FRONTAL}")
                break
    return tuple(notes)


def _dicom_view_texts(ds) -> list[tuple[str, str]]:
    """The free texts that describe this image's view: the coded view's meaning, the series
    description (a study description covers every film of a PA + lateral study: not used)."""
    texts = []
    views = _dicom_get(ds, "ViewCodeSequence")
    try:
        meaning = _dicom_text(views[0], "CodeMeaning") if views else ""
    except (TypeError, IndexError, KeyError):
        meaning = ""
    if meaning:
        texts.append(("ViewCodeSequence", meaning))
    description = _dicom_text(ds, "SeriesDescription")
    if description:
        texts.append(("SeriesDescription", description))
    return texts


def _dicom_get(ds, keyword: str):
    """An attribute's value, or None when absent or unreadable: pydicom converts a value only
    when it is read, so a malformed element (an unknown VR, a bad number) raises only then."""
    try:
        return ds.get(keyword)
    except Exception:
        return None


def _dicom_int(ds, keyword: str) -> int | None:
    """An integer attribute, or None when absent, unreadable or not one number."""
    try:
        return int(_dicom_get(ds, keyword))
    except (TypeError, ValueError):  # None, a list (wrong VM), text
        return None


def _has_decoder(syntax) -> bool:
    """Whether pydicom has a usable decoder for a transfer syntax (unknown counts as yes: a
    file that does not say its syntax is judged corrupt, not unsupported)."""
    from pydicom.pixels import get_decoder

    if not syntax:  # None or empty
        return True
    try:
        return get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):  # no decoder implemented for this UID
        return False


def _assume_uncompressed(ds) -> None:
    """Give a meta-less DICOM the uncompressed transfer syntax it was read with: before the
    meta header existed (ACR-NEMA, early DICOM) pixel data was never compressed."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    implicit_vr, little_endian = ds.original_encoding
    if implicit_vr:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian
    ds.file_meta.TransferSyntaxUID = syntax


def _dicom_spacing(ds) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _dicom_get(ds, keyword)
        if value is None:
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if 0 < row < math.inf and 0 < col < math.inf:  # NaN fails both
            return (row, col)
    return None
