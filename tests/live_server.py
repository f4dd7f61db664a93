"""``lungseg serve`` as a real process on a free loopback port, for the tests that need one.

The server is the real CLI (``python -m lungseg serve``) in a subprocess, with its own TMPDIR so
a test can see what it leaves behind. It inherits this process's CPU affinity (run pytest under
``taskset`` and the server is pinned too) and runs with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 120  # importing torch and loading the model on a busy core


@dataclass
class LiveServer:
    url: str
    host: str
    port: int
    tmpdir: Path
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(server: LiveServer, path: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since start or :func:`reset_peak_memory`), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def reset_peak_memory(pid: int) -> None:
    """Set a process's ``VmHWM`` back to its current RSS (Linux: ``clear_refs`` value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@contextlib.contextmanager
def live_server(tmpdir: Path, *options: str) -> Iterator[LiveServer]:
    """Run ``lungseg serve OPTIONS`` on a free port until the block ends, then stop it (SIGINT).

    Yields once ``/healthz`` answers 200. The server's output goes to ``server.log`` beside
    ``tmpdir`` (its TMPDIR); a test may stop the server itself, e.g. to check the shutdown.
    """
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lungseg", "serve", "--port", str(port), *options]
    log_path = tmpdir.parent / f"{tmpdir.name}-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = LiveServer(
            f"http://127.0.0.1:{port}", "127.0.0.1", port, tmpdir, process, log_path
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                assert process.poll() is None, f"server exited: {server.log()}"
                assert time.monotonic() < deadline, f"server not up in time: {server.log()}"
                try:
                    if get_json(server, "/healthz")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            yield server
        finally:
            process.send_signal(signal.SIGINT)  # like Ctrl+C; a no-op once it has exited
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
