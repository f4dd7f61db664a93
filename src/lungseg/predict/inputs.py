"""What ``lungseg predict`` was asked to segment: files, folders (recursively) and globs.

Every input becomes an :class:`InputImage` with the output name that mirrors it: a file given
directly keeps its stem, a file found in a folder keeps its path relative to that folder. Two
inputs that would write the same outputs are refused before any work starts, so nothing is
silently overwritten. The list keeps the inputs' order (a folder's files sorted by path), the
same in every process, which is what makes the split between ranks of a distributed run
deterministic and the table's rows follow what the user asked for.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lungseg.data.io import is_image_file
from lungseg.errors import InvalidInputError


@dataclass(frozen=True)
class InputImage:
    """One image to segment and the name (relative, without suffix) its outputs take."""

    path: Path
    name: str


def collect_inputs(inputs: Sequence[str | Path], exclude: Path | None = None) -> list[InputImage]:
    """Expand ``inputs`` into the images to segment, in input order.

    Inputs keep the order they were given in; a folder or a glob contributes its files sorted
    by path, so the table's rows (and each torchrun rank's share) are the same on every run.

    Args:
        inputs: files (any name: a file named explicitly is always taken), folders (searched
            recursively for image suffixes and suffix-less DICOM) and glob patterns.
        exclude: a folder whose contents are never inputs (the output folder, so a rerun into a
            folder inside the input tree does not segment its own overlays).

    Raises:
        InvalidInputError: an input that does not exist or matches nothing, or two inputs that
            would write outputs with the same name.
    """
    exclude = exclude.resolve() if exclude is not None else None
    found: dict[Path, InputImage] = {}
    for raw in inputs:
        for image in _expand(Path(raw)):
            resolved = image.path.resolve()
            if exclude is not None and resolved.is_relative_to(exclude):
                continue
            found.setdefault(resolved, image)
    by_name: dict[str, InputImage] = {}
    for image in found.values():
        clash = by_name.get(image.name.lower())
        if clash is not None:
            raise InvalidInputError(
                image.path,
                f"its outputs would be named {image.name!r}, like those of {clash.path}; "
                "segment them in separate runs or rename one",
            )
        by_name[image.name.lower()] = image
    return list(by_name.values())


def _expand(raw: Path) -> list[InputImage]:
    if raw.is_dir():
        return [InputImage(path, _name(path.relative_to(raw))) for path in _walk(raw)]
    if raw.is_file():
        return [InputImage(raw, raw.stem)]
    if glob.has_magic(str(raw)):
        matches = sorted(Path(p) for p in glob.glob(str(raw), recursive=True))
        images = [InputImage(p, p.stem) for p in matches if p.is_file() and is_image_file(p)]
        images += [image for p in matches if p.is_dir() for image in _expand(p)]
        if not images:
            raise InvalidInputError(raw, "the pattern matches no image file")
        return images
    raise InvalidInputError(raw, "no such file or folder")


def _walk(folder: Path) -> list[Path]:
    """Image files under ``folder`` at any depth; hidden files and folders are skipped."""
    images = []
    for root, dirs, files in os.walk(folder, onerror=_raise_walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        images += [
            Path(root, f) for f in files if not f.startswith(".") and is_image_file(Path(root, f))
        ]
    return sorted(images)


def _raise_walk_error(err: OSError) -> None:
    raise InvalidInputError(err.filename or "?", f"cannot list the folder ({err.strerror})")


def _name(relative: Path) -> str:
    return relative.with_suffix("").as_posix() if relative.suffix else relative.as_posix()
