"""Atomic file writes: a reader (or a crash) never sees half a file.

Every output lungseg writes goes through :func:`atomic_write`: the data goes to a temporary file
in the same folder, is flushed and fsync'ed, then renamed over the target (``os.replace`` is
atomic on POSIX and Windows), and the folder is fsync'ed so the rename survives a power cut.

A process killed mid-write (SIGKILL, the OOM killer, a power cut) cannot delete its temporary
file; :func:`remove_stale_temporaries` does, when the next run starts in the same folder.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_SUFFIX = ".tmp"
# What mkstemp(prefix=".NAME.", suffix=_SUFFIX) makes: 8 characters of its random alphabet.
_TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(_SUFFIX))


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, durable: bool = True) -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` only if the ``with`` block succeeds.

    With ``durable=False`` the write stays atomic but skips both fsyncs: for files whose loss in
    a power cut costs nothing (a record that a rerun rewrites anyway), since an fsync can cost
    milliseconds and some runs write thousands of such files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str, *, durable: bool = True) -> None:
    with atomic_write(path, "w", durable=durable) as handle:
        handle.write(text)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writes killed mid-way left in ``folder`` (not below it).

    Only names :func:`atomic_write` makes (``.NAME.XXXXXXXX.tmp``) are touched. Call it where no
    other process can be writing into ``folder`` at the same time (a run folder at the start of
    its run), or that process would lose the file it is about to rename.

    Returns:
        The files removed, so the caller can say what it cleaned up.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(f".*{_SUFFIX}"):
        if _TEMPORARY_NAME.fullmatch(path.name) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


@functools.cache
def _umask() -> int:
    # Reading the umask means setting it; do it once, not on every write from every thread.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / filesystem
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
