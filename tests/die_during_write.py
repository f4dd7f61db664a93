"""Run the lungseg CLI and SIGKILL it in the middle of one atomic write (a crash-safety helper).

Usage: ``python die_during_write.py PATTERN N lungseg-arguments...``

The N-th write through :func:`lungseg.atomic.atomic_write` whose target's file name matches the
glob ``PATTERN`` puts half of its bytes into its temporary file, forces them to disk and kills
its own process with SIGKILL: the state the OOM killer or a power cut leaves, which no
``finally`` or ``except`` can tidy up. Production code is not modified, only wrapped from here.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import lungseg.atomic
from lungseg.cli import main


class _HalfThenDie:
    """A file handle whose first write stores half the data, then kills the process."""

    def __init__(self, handle: IO) -> None:
        self._handle = handle

    def write(self, data: bytes | str) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        os.fsync(self._handle.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable: the process was killed")


def install(pattern: str, nth: int) -> None:
    real_atomic_write = lungseg.atomic.atomic_write
    matched = 0

    @contextlib.contextmanager
    def atomic_write_that_dies(path: str | Path, mode: str = "wb", **options: Any) -> Iterator[IO]:
        nonlocal matched
        dies = False
        if fnmatch.fnmatch(Path(path).name, pattern):
            matched += 1
            dies = matched == nth
        with real_atomic_write(path, mode, **options) as handle:
            yield _HalfThenDie(handle) if dies else handle

    # atomic_write_bytes/_text look atomic_write up in lungseg.atomic at call time.
    lungseg.atomic.atomic_write = atomic_write_that_dies


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    sys.exit(main(sys.argv[3:]))
