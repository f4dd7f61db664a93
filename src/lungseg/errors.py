"""The package's exceptions.

Every problem a user can cause (a bad file, a bad folder, a bad option) is raised as a
:class:`LungsegError` subclass whose message names the file and the reason, so the CLI can print
one clear line and exit with code 1 instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class LungsegError(Exception):
    """Base class of every error lungseg raises on purpose."""


class InvalidInputError(LungsegError):
    """A file that cannot be used: missing, empty, truncated, not an image, too small or too big.

    Attributes:
        path: the offending file.
        reason: what is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedFormatError(InvalidInputError):
    """Content lungseg cannot read as an image at all, whatever the file's name says.

    Not PNG/JPEG/TIFF/BMP/DICOM content, a DICOM object without pixel data (a report, a
    structured document), or DICOM pixels in a transfer syntax no installed decoder handles.
    The web service answers it with 415 (Unsupported Media Type).
    """


class ImageTooLargeError(InvalidInputError):
    """An image whose header states more pixels than the limit; refused before decoding.

    The web service answers it with 413 (Content Too Large).
    """


class MaskMismatchError(InvalidInputError):
    """A mask whose size differs from its image's; the message names both files and sizes."""

    def __init__(
        self,
        mask_path: str | Path,
        mask_size: tuple[int, int],
        image_path: str | Path,
        image_size: tuple[int, int],
    ) -> None:
        mh, mw = mask_size
        ih, iw = image_size
        super().__init__(
            mask_path,
            f"mask is {mw}x{mh} (WxH) but its image {image_path} is {iw}x{ih}",
        )
        self.image_path = Path(image_path)
