"""A bounded inference pool: a burst of uploads queues, and beyond the queue it is turned away.

Each segmentation holds several arrays of the image's size (the float image and probabilities,
mask, labels, the RGB overlay and the RGBA layers: about 20 bytes per pixel by their dtypes), so
the number of jobs running at once is what bounds the server's memory.
:class:`InferencePool` runs at most ``threads`` jobs at a time on its own threads (all sharing
the one loaded model, read-only, in this one process) and lets at most ``max_waiting`` more wait
for a thread; a request beyond that gets :class:`PoolBusyError` at once (the API answers 503
with Retry-After) instead of piling up until the process runs out of memory.

Admission is counted on the event loop thread only, so it needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_SMOOTHING = 0.2  # weight of the newest job in the running mean of job durations


class PoolBusyError(Exception):
    """Every thread is busy and the queue is full; try again after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int, capacity: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            f"server busy: {capacity} segmentations are running or queued; "
            f"retry in {retry_after_s} s"
        )


class InferencePool:
    """Run blocking jobs on ``threads`` threads with at most ``max_waiting`` more queued.

    Use from async code::

        with pool.admit():           # raises PoolBusyError when full
            result = await pool.run(job, *args)
    """

    def __init__(self, threads: int, max_waiting: int) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, got {max_waiting}")
        self.threads = threads
        self.capacity = threads + max_waiting
        self.admitted = 0
        self._mean_job_s = 1.0  # a first guess for Retry-After until a job has been timed
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="lungseg-segment")

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place in the pool for the ``with`` block, or raise :class:`PoolBusyError`."""
        if self.admitted >= self.capacity:
            raise PoolBusyError(self.retry_after_s(), self.capacity)
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def run(self, job: Callable[..., T], *args: object) -> T:
        """Run ``job(*args)`` on a pool thread; the caller must hold a place (:meth:`admit`)."""
        loop = asyncio.get_running_loop()
        result, seconds = await loop.run_in_executor(self._executor, _timed, job, args)
        self._mean_job_s += _SMOOTHING * (seconds - self._mean_job_s)
        return result

    def retry_after_s(self) -> int:
        """Seconds until the jobs ahead are likely done: a whole number, at least 1."""
        return max(1, math.ceil(self._mean_job_s * self.admitted / self.threads))

    def shutdown(self) -> None:
        """Finish running jobs, drop queued ones, and stop the threads."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _timed(job: Callable[..., T], args: tuple[object, ...]) -> tuple[T, float]:
    """Run ``job`` and time it on the pool thread, so queueing time is not counted."""
    started = time.perf_counter()
    return job(*args), time.perf_counter() - started
