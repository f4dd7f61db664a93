"""Find image/mask pairs on disk, whatever layout a chest X-ray data set ships in.

Discovery only lists folders and reads CSV text; it never decodes an image, so it takes
milliseconds on hundreds of pairs. Checking sizes and mask values is ``lungseg data check``'s job.

Layouts recognised in a folder (the first that matches wins):

1. ``manifest.csv`` with ``image`` and ``mask`` columns, paths relative to the CSV. Several masks
   of one image go in one cell separated by ``;``. An optional ``source`` column names the source
   (default: the CSV's folder name). ``root`` may also be the CSV file itself.
2. ``images/`` + ``masks/`` with matching stems; a mask may also be called ``<stem>_mask`` or
   ``<stem>-mask`` (any image suffix on either side).
3. Kaggle "Chest Xray Masks and Labels": ``CXR_png/`` + ``masks/`` (Shenzhen masks carry
   ``_mask``), handled by the same rule as 2.
4. NLM Montgomery: ``CXR_png/`` + ``ManualMask/leftMask/`` + ``ManualMask/rightMask/``; each
   pair gets both lung masks, merged when read.

In layouts 2-4 an optional ``heart/`` folder beside the masks gives heart masks by the same stem
rule (Wingspan has them); an image without one simply has no heart label. A manifest may have
an optional ``heart`` column.

A folder matching one layout is a single source named after the folder. Otherwise every
subfolder that matches one is a source named after the subfolder (as ``montgomery/`` and
``shenzhen/`` in the shared data), and other subfolders (``splits/``) are ignored.

Pair ids are ``<source>/<stem>``, as split files list them. Nothing is dropped silently: an image
without a mask, a mask without an image, a listed file that does not exist or a repeated id
becomes a :class:`Problem`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lungseg.data.io import is_image_file
from lungseg.errors import InvalidInputError, LungsegError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
IMAGE_DIRS = ("images", "CXR_png")
MASK_DIR_SETS: tuple[tuple[str, ...], ...] = (
    ("masks",),
    ("ManualMask/leftMask", "ManualMask/rightMask"),
)
HEART_DIR = "heart"
MASK_NAME_ENDINGS = ("_mask", "-mask")
SUBSETS = ("train", "val", "test")
_SHOWN_IDS = 5  # ids quoted in an error before "... and N more"


@dataclass(frozen=True)
class Pair:
    """One X-ray and its lung mask file(s).

    Attributes:
        id: ``"<source>/<stem>"``, the name split files use.
        source: the data set it came from (``"montgomery"``, ``"shenzhen"``...).
        image: the X-ray file.
        masks: one mask file, or several (left and right lung) to be merged.
        heart: the heart mask, where the source has one (``None``: no heart label).
    """

    id: str
    source: str
    image: Path
    masks: tuple[Path, ...]
    heart: Path | None = None


@dataclass(frozen=True)
class Problem:
    """Something about a data folder a user should fix or at least know about.

    Attributes:
        path: the file (or folder, or split file) concerned.
        kind: a short machine-readable label: ``unpaired_image``, ``unpaired_mask``,
            ``missing_file``, ``duplicate_id``, ``duplicate_mask``, and from ``lungseg data
            check`` also ``size_mismatch``, ``empty_mask``, ``full_mask``, ``non_binary_mask``,
            ``unreadable``, ``missing_id``.
        message: what is wrong, in words.
    """

    path: Path
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class Discovery:
    """The pairs found under a root and the problems met on the way."""

    root: Path
    pairs: list[Pair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def by_source(self) -> dict[str, list[Pair]]:
        """Pairs grouped by source, sources in the order discovered."""
        groups: dict[str, list[Pair]] = {}
        for pair in self.pairs:
            groups.setdefault(pair.source, []).append(pair)
        return groups


def discover(root: str | Path) -> Discovery:
    """Find every image/mask pair under ``root`` (see the module docstring for layouts).

    Args:
        root: a data folder, a folder of source folders, or a CSV manifest.

    Raises:
        InvalidInputError: ``root`` does not exist, is a file other than a CSV, or a folder
            that has to be listed cannot be (no permission); the message names the folder.
        LungsegError: no known layout was found, or a manifest lacks its columns.
    """
    root = Path(root)
    if not root.exists():
        raise InvalidInputError(root, "data folder not found")
    found = Discovery(root)
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise InvalidInputError(root, "expected a data folder or a CSV manifest")
        _read_manifest(root, root.parent.name, found)
    elif not _discover_source(root, root.name, found):
        with _listing(root) as entries:
            subfolders = sorted(
                Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")
            )
        if not [sub for sub in subfolders if _discover_source(sub, sub.name, found)]:
            raise LungsegError(
                f"{root}: no image/mask pairs found; expected {MANIFEST_NAME}, images/ + masks/, "
                "CXR_png/ + masks/ or CXR_png/ + ManualMask/, here or in its subfolders"
            )
    _drop_duplicate_ids(found)
    log.debug("%s: %d pairs, %d problems", root, len(found.pairs), len(found.problems))
    return found


def load_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split file: a JSON object whose ``train``/``val``/``test`` lists hold pair ids.

    Other keys (``description``...) are ignored. At least one subset must be present. An id
    listed twice, or in two subsets (a leak from training into evaluation), makes the file
    malformed.

    Raises:
        InvalidInputError: the file is missing or not JSON.
        LungsegError: the JSON is not a valid split; the message says what is wrong.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(path, "split file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidInputError(path, f"not a readable JSON split file ({err})") from None
    if not isinstance(data, dict) or not any(key in data for key in SUBSETS):
        raise LungsegError(f"{path}: a split file is a JSON object with train/val/test id lists")
    split: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for subset in SUBSETS:
        if subset not in data:
            continue
        ids = data[subset]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise LungsegError(f"{path}: {subset!r} must be a list of id strings")
        for pair_id in ids:
            if pair_id in seen:
                raise LungsegError(
                    f"{path}: id {pair_id!r} is listed in {seen[pair_id]!r} and {subset!r}"
                )
            seen[pair_id] = subset
        split[subset] = list(ids)
    return split


def select(pairs: Sequence[Pair], split: Mapping[str, Sequence[str]], subset: str) -> list[Pair]:
    """The pairs of one subset of a split, in the split's order.

    Raises:
        LungsegError: the split has no such subset, or lists ids that are not among ``pairs``
            (the message quotes the first few and counts the rest).
    """
    if subset not in split:
        raise LungsegError(f"the split has no subset {subset!r}; it has {sorted(split)}")
    by_id = {pair.id: pair for pair in pairs}
    wanted = split[subset]
    missing = [pair_id for pair_id in wanted if pair_id not in by_id]
    if missing:
        raise LungsegError(
            f"{len(missing)} of the {len(wanted)} ids of {subset!r} are not in the data: "
            + describe_ids(missing)
        )
    return [by_id[pair_id] for pair_id in wanted]


def describe_ids(ids: Sequence[str]) -> str:
    """The first few ids and how many more, for messages that must stay one line."""
    shown = ", ".join(ids[:_SHOWN_IDS])
    more = len(ids) - _SHOWN_IDS
    return f"{shown} ... and {more} more" if more > 0 else shown


def _discover_source(folder: Path, source: str, found: Discovery) -> bool:
    """Add the pairs of ``folder`` if it matches a layout; False when it matches none."""
    if (folder / MANIFEST_NAME).is_file():
        _read_manifest(folder / MANIFEST_NAME, source, found)
        return True
    for image_dir in IMAGE_DIRS:
        if not (folder / image_dir).is_dir():
            continue
        for mask_dirs in MASK_DIR_SETS:
            if all((folder / d).is_dir() for d in mask_dirs):
                first = len(found.pairs)
                _pair_folders(folder / image_dir, [folder / d for d in mask_dirs], source, found)
                if (folder / HEART_DIR).is_dir():
                    _attach_hearts(folder / HEART_DIR, found, first)
                return True
    return False


def _list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted; other files are skipped (see
    :func:`lungseg.data.io.is_image_file`: a suffix-less file is an image when it is DICOM)."""
    images = []
    with _listing(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            path = Path(entry.path)
            if is_image_file(path):
                images.append(path)
            else:
                log.debug("skipping %s: not an image file name", path)
    return sorted(images)


@contextlib.contextmanager
def _listing(folder: Path) -> Iterator[Iterator[os.DirEntry]]:
    """``os.scandir(folder)``, with a folder that cannot be listed reported by name."""
    try:
        entries = os.scandir(folder)
    except OSError as err:
        raise InvalidInputError(folder, f"cannot list the folder ({err.strerror or err})") from None
    with entries:
        yield entries


def _mask_key(path: Path) -> str:
    stem = path.stem
    for ending in MASK_NAME_ENDINGS:
        if stem.endswith(ending):
            return stem[: -len(ending)]
    return stem


def _attach_hearts(heart_dir: Path, found: Discovery, first: int) -> None:
    """Give the pairs found from index ``first`` on their heart mask from ``heart_dir``."""
    hearts = {_mask_key(mask): mask for mask in _list_images(heart_dir)}
    for index in range(first, len(found.pairs)):
        pair = found.pairs[index]
        heart = hearts.get(pair.image.stem)
        if heart is not None:
            found.pairs[index] = dataclasses.replace(pair, heart=heart)


def _pair_folders(
    image_dir: Path, mask_dirs: Sequence[Path], source: str, found: Discovery
) -> None:
    indexes: list[dict[str, Path]] = []
    for mask_dir in mask_dirs:
        index: dict[str, Path] = {}
        for mask in _list_images(mask_dir):
            key = _mask_key(mask)
            if key in index:
                found.problems.append(
                    Problem(
                        mask, "duplicate_mask", f"{index[key].name} already is the mask of {key}"
                    )
                )
            else:
                index[key] = mask
        indexes.append(index)
    matched: set[tuple[int, str]] = set()
    for image in _list_images(image_dir):
        stem = image.stem
        lacking = [mask_dirs[i] for i, index in enumerate(indexes) if stem not in index]
        if lacking:
            where = " or ".join(f"{d.relative_to(image_dir.parent)}/" for d in lacking)
            found.problems.append(
                Problem(
                    image,
                    "unpaired_image",
                    f"no mask in {where} (looked for {stem}, {stem}_mask, {stem}-mask)",
                )
            )
            continue
        matched.update((i, stem) for i in range(len(indexes)))
        masks = tuple(index[stem] for index in indexes)
        found.pairs.append(Pair(f"{source}/{stem}", source, image, masks))
    for i, index in enumerate(indexes):
        for key, mask in index.items():
            if (i, key) not in matched:
                found.problems.append(
                    Problem(mask, "unpaired_mask", f"no image named {key} in {image_dir.name}/")
                )


def _read_manifest(manifest: Path, default_source: str, found: Discovery) -> None:
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            columns = reader.fieldnames or []
            if "image" not in columns or "mask" not in columns:
                raise LungsegError(
                    f"{manifest}: a manifest needs 'image' and 'mask' columns; found {columns}"
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InvalidInputError(manifest, f"not a readable CSV manifest ({err})") from None
    base = manifest.parent
    for line, row in enumerate(rows, start=2):
        where = f"line {line} of {manifest.name}"
        image_cell = (row.get("image") or "").strip()
        if not image_cell:
            found.problems.append(Problem(manifest, "missing_file", f"{where} names no image"))
            continue
        image = base / image_cell
        masks = tuple(base / m.strip() for m in (row.get("mask") or "").split(";") if m.strip())
        heart_cell = (row.get("heart") or "").strip()
        heart = base / heart_cell if heart_cell else None
        absent = [p for p in (image, *masks, heart) if p is not None and not p.is_file()]
        for path in absent:
            found.problems.append(Problem(path, "missing_file", f"listed on {where}, not found"))
        if not masks:
            found.problems.append(Problem(image, "unpaired_image", f"{where} names no mask"))
        if absent or not masks:
            continue
        source = (row.get("source") or "").strip() or default_source
        found.pairs.append(Pair(f"{source}/{image.stem}", source, image, masks, heart))


def _drop_duplicate_ids(found: Discovery) -> None:
    """Keep the first pair of each id; report the others (e.g. ``a.png`` beside ``a.dcm``)."""
    kept: dict[str, Pair] = {}
    for pair in found.pairs:
        if pair.id in kept:
            found.problems.append(
                Problem(
                    pair.image, "duplicate_id", f"id {pair.id} is already {kept[pair.id].image}"
                )
            )
        else:
            kept[pair.id] = pair
    found.pairs = list(kept.values())
