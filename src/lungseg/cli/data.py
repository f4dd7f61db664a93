"""``lungseg data check``: decode every pair of a data folder and report what is wrong with it.

Discovery alone (see :mod:`lungseg.data.discovery`) only looks at file names; this command opens
every image and mask, so it finds what names cannot tell: unreadable files, masks whose size
differs from their image's, and masks that are not really binary.

Mask rule: masks are cut at half their maximum when read, so soft grey edges are harmless. A
mask is reported as a problem (exit code 1) when it marks no pixel (``empty_mask``), every pixel
(``full_mask``), or when more than 1% of its pixels are neither 0 nor its maximum
(``non_binary_mask``: a probability map or a photo, not a mask); see
:func:`lungseg.data.masks.mask_problem`. Fewer grey pixels (anti-aliased edges) are listed as
notes (:func:`lungseg.data.masks.mask_note`) and do not change the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lungseg.cli import add_parser

_SHOWN_SIZES = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_parser(subparsers, "data", "inspect image/mask data folders")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = add_parser(
        actions,
        "check",
        "decode every image/mask pair under PATH, print pairs per source and every problem; "
        "exit code 1 when a problem is found",
    )
    check.add_argument(
        "path",
        type=Path,
        metavar="PATH",
        help="data folder (images/+masks/, CXR_png/, ManualMask/, sources as subfolders) "
        "or a CSV manifest with image,mask columns",
    )
    check.add_argument(
        "--split",
        type=Path,
        metavar="FILE",
        help="JSON split (train/val/test id lists) whose ids must all be found",
    )
    check.set_defaults(func=run_check)


@dataclass
class _SourceStats:
    pairs: int = 0
    sizes: Counter = field(default_factory=Counter)
    coverages: list[float] = field(default_factory=list)


def run_check(args: argparse.Namespace) -> int:
    """Check the data under ``args.path`` (and ``args.split``); 1 when problems were found."""
    from tqdm import tqdm

    from lungseg.data.discovery import discover, load_split

    found = discover(args.path)
    split = load_split(args.split) if args.split else None  # fail fast, before decoding
    problems = list(found.problems)
    notes = []
    stats = {source: _SourceStats(len(pairs)) for source, pairs in found.by_source().items()}
    for pair in tqdm(found.pairs, desc="decoding", unit="pair", file=sys.stderr, disable=None):
        _check_pair(pair, stats[pair.source], problems, notes)

    print(f"Data: {found.root}")
    _print_sources(stats)
    if split is not None:
        problems.extend(_check_split(args.split, split, {pair.id for pair in found.pairs}))
    for title, items in (("Notes", notes), ("Problems", problems)):
        if items:
            print(f"\n{title} ({len(items)}):")
            for item in items:
                print(f"  {item}")
    if problems:
        kinds = Counter(problem.kind for problem in problems)
        by_kind = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        print(f"\n{len(problems)} problem(s) found. By kind: {by_kind}.")
    else:
        print("\nNo problems found.")
    return 1 if problems else 0


def _check_pair(pair, stats: _SourceStats, problems: list, notes: list) -> None:
    """Decode one pair, recording its size and mask coverage, or why it is unusable."""
    import numpy as np

    from lungseg.data.discovery import Problem
    from lungseg.data.io import read_image
    from lungseg.data.masks import (
        binarize_mask,
        check_mask_size,
        mask_note,
        mask_problem,
        read_mask_values,
    )
    from lungseg.errors import InvalidInputError, MaskMismatchError

    try:
        _, meta = read_image(pair.image)
    except InvalidInputError as err:
        problems.append(Problem(pair.image, "unreadable", err.reason))
        return
    size = (meta.height, meta.width)
    stats.sizes[f"{meta.width}x{meta.height}"] += 1
    union = np.zeros(size, bool)
    for mask_path in pair.masks:
        try:
            values = read_mask_values(mask_path)
        except InvalidInputError as err:
            problems.append(Problem(mask_path, "unreadable", err.reason))
            return
        try:
            check_mask_size(mask_path, values.shape, pair.image, size)
        except MaskMismatchError as err:
            problems.append(Problem(mask_path, "size_mismatch", err.reason))
            return
        problem = mask_problem(values)
        if problem is not None:
            problems.append(Problem(mask_path, *problem))
        else:
            note = mask_note(values)
            if note is not None:
                notes.append(Problem(mask_path, *note))
        union |= binarize_mask(values)
    stats.coverages.append(float(union.mean()))


def _print_sources(stats: dict[str, _SourceStats]) -> None:
    rows = [("source", "pairs", "image sizes (WxH)", "mean mask coverage")]
    for source, s in stats.items():
        sizes = ", ".join(f"{size} ({n})" for size, n in s.sizes.most_common(_SHOWN_SIZES))
        if len(s.sizes) > _SHOWN_SIZES:
            sizes += f", +{len(s.sizes) - _SHOWN_SIZES} more sizes"
        coverage = f"{100 * sum(s.coverages) / len(s.coverages):.1f}%" if s.coverages else "-"
        rows.append((source, str(s.pairs), sizes or "-", coverage))
    rows.append(("total", str(sum(s.pairs for s in stats.values())), "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3]]
        print("  ".join(cells).rstrip())


def _check_split(path: Path, split: dict[str, list[str]], found_ids: set[str]) -> list:
    """Print the split's sizes; every id it lists that is not in the data is a problem."""
    from lungseg.data.discovery import Problem

    problems = []
    parts = []
    for subset, ids in split.items():
        missing = [pair_id for pair_id in ids if pair_id not in found_ids]
        parts.append(f"{subset} {len(ids)}" + (f" ({len(missing)} missing)" if missing else ""))
        problems += [
            Problem(path, "missing_id", f"{subset} lists {pair_id}, which is not in the data")
            for pair_id in missing
        ]
    listed = {pair_id for ids in split.values() for pair_id in ids}
    outside = len(found_ids - listed)
    print(f"\nSplit {path.name}: " + ", ".join(parts))
    if outside:
        print(f"  {outside} pair(s) of the data are in no subset")
    return problems
