"""Result images that a client fetches by URL after its upload, kept briefly and bounded.

``POST /v1/segment`` answers with JSON and links to its PNGs rather than the PNGs themselves, so
the web page can show them with plain ``<img>`` tags. The PNGs live in ONE private temporary
folder (:class:`tempfile.TemporaryDirectory`): nothing is written anywhere else, and the whole
folder goes when the server shuts down. Each result expires ``ttl_s`` seconds after it was made
and at most ``max_count`` results are kept (the oldest goes first), so disk use is bounded even
when nobody fetches anything. Ids are random 128-bit tokens: a result cannot be guessed by
another client, and a file path is never built from what a client sent (ids are looked up in a
dict).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Entry:
    folder: Path
    names: frozenset[str]
    expires_at: float


class ResultStore:
    """Named PNGs per result id, in a temporary folder, each result readable for ``ttl_s``.

    Thread-safe: results are stored from inference threads and read from the event loop.

    Args:
        ttl_s: seconds a result stays readable.
        max_count: results kept at most; storing one more drops the oldest.
        parent: where to create the temporary folder (default: the system's temp folder).
        clock: monotonic seconds; tests pass a fake clock to expire results without waiting.
    """

    def __init__(
        self,
        ttl_s: float,
        max_count: int,
        parent: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_count < 1:
            raise ValueError(f"need ttl_s > 0 and max_count >= 1, got {ttl_s} and {max_count}")
        self.ttl_s = ttl_s
        self.max_count = max_count
        self._clock = clock
        self._tmp = tempfile.TemporaryDirectory(prefix="lungseg-serve-", dir=parent)
        self.folder = Path(self._tmp.name)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def put(self, files: Mapping[str, bytes]) -> str:
        """Store ``{name: bytes}`` as one result and return its id."""
        result_id = secrets.token_urlsafe(16)
        folder = self.folder / result_id
        folder.mkdir()
        # Plain writes, not lungseg.atomic: no reader can see a half-written file because the
        # result is registered only after all of them are complete, and a temporary folder
        # needs no fsync (it is deleted at shutdown); the fsyncs cost ~40 ms a result here.
        for name, data in files.items():
            (folder / name).write_bytes(data)
        entry = _Entry(folder, frozenset(files), self._clock() + self.ttl_s)
        with self._lock:
            self._entries[result_id] = entry
            dropped = self._drop_expired()
            while len(self._entries) > self.max_count:
                dropped.append(self._entries.popitem(last=False)[1])
        _remove(dropped)
        return result_id

    def get(self, result_id: str, name: str) -> bytes | None:
        """The bytes of file ``name`` of result ``result_id``; None if unknown or expired."""
        with self._lock:
            dropped = self._drop_expired()
            entry = self._entries.get(result_id)
            data = (entry.folder / name).read_bytes() if entry and name in entry.names else None
        _remove(dropped)
        return data

    def expires_in(self, result_id: str) -> float:
        """Seconds result ``result_id`` stays readable (0 when it is gone)."""
        with self._lock:
            entry = self._entries.get(result_id)
        return max(0.0, entry.expires_at - self._clock()) if entry else 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def close(self) -> None:
        """Delete every result and the temporary folder itself."""
        with self._lock:
            self._entries.clear()
            self._tmp.cleanup()

    def _drop_expired(self) -> list[_Entry]:
        """Unregister expired results (under the lock); the caller deletes their files."""
        now = self._clock()
        expired = [rid for rid, entry in self._entries.items() if entry.expires_at <= now]
        return [self._entries.pop(rid) for rid in expired]


def _remove(entries: list[_Entry]) -> None:
    for entry in entries:
        shutil.rmtree(entry.folder, ignore_errors=True)
