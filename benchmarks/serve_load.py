"""Load test of ``lungseg serve`` on loopback: throughput, latency, errors and peak server memory.

    taskset -c 0 .venv/bin/python benchmarks/serve_load.py --data ../shared/data \\
        --clients 4 --requests 40

Starts the real server (``python -m lungseg serve``, a subprocess that inherits this process's
CPU affinity, so ``taskset`` pins both), sends one warm-up request, then ``--requests`` uploads
of real X-rays from the paper split's test subset from ``--clients`` concurrent asyncio clients
(httpx), each client sending its next upload as soon as its last one is answered. Reports
requests/s, p50/p95/max latency as the client sees it, every non-200 answer as an error (there
must be none: the exit code is 1 otherwise), the server's own mean time per stage, and the
server's peak resident memory (VmHWM from /proc, so Linux only) against its memory when idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from lungseg.atomic import atomic_write_text
from lungseg.data.discovery import discover, load_split, select


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mib(pid: int, field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process, in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def start_server(port: int, args: argparse.Namespace) -> subprocess.Popen:
    command = [sys.executable, "-m", "lungseg", "serve", "--port", str(port)]
    command += ["--workers", str(args.workers), "--queue", str(args.queue)]
    if args.weights:
        command += ["--weights", str(args.weights)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {server.stderr.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("server did not answer /healthz within 120 s")


async def run_clients(
    url: str, uploads: list[tuple[str, bytes]], clients: int, requests: int
) -> tuple[list[float], Counter, list[dict[str, float]], float]:
    """Send ``requests`` uploads from ``clients`` concurrent clients; latencies in ms."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    timings: list[dict[str, float]] = []
    next_index = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < requests:
            name, data = uploads[next_index % len(uploads)]
            next_index += 1
            started = time.perf_counter()
            try:
                response = await http.post(url, files={"file": (name, data)})
            except httpx.HTTPError as err:
                statuses[type(err).__name__] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[response.status_code] += 1
            if response.status_code == 200:
                timings.append(response.json()["timing_ms"])

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        await http.post(url, files={"file": uploads[0]})  # warm-up, not counted
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    return latencies, statuses, timings, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--images", type=int, default=20, help="distinct X-rays, cycled")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers")
    parser.add_argument("--queue", type=int, default=8, help="the server's --queue")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the server")
    parser.add_argument("--weights", type=Path, help="served weights (default: shipped model)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()

    pairs = select(
        discover(args.data).pairs, load_split(args.data / "splits/paper_433.json"), "test"
    )
    uploads = [(pair.image.name, pair.image.read_bytes()) for pair in pairs[: args.images]]
    port = free_port()
    server = start_server(port, args)
    try:
        idle_mib = memory_mib(server.pid, "VmRSS")
        latencies, statuses, timings, wall = asyncio.run(
            run_clients(f"http://127.0.0.1:{port}/v1/segment", uploads, args.clients, args.requests)
        )
        peak_mib = memory_mib(server.pid, "VmHWM")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)

    errors = sum(count for status, count in statuses.items() if status != 200)
    ms = np.asarray(latencies)
    stages = {k: float(np.mean([t[k] for t in timings])) for k in timings[0]} if timings else {}
    result = {
        "clients": args.clients,
        "requests": args.requests,
        "distinct_images": len(uploads),
        "server_workers": args.workers,
        "server_threads": args.threads,
        "cpus": sorted(os.sched_getaffinity(0)),
        "wall_s": wall,
        "throughput_rps": len(latencies) / wall,
        "latency_ms": {
            "p50": float(np.percentile(ms, 50)),
            "p95": float(np.percentile(ms, 95)),
            "max": float(ms.max()),
        },
        "errors": errors,
        "statuses": {str(k): v for k, v in statuses.items()},
        "server_stage_mean_ms": stages,
        "server_rss_idle_mib": idle_mib,
        "server_rss_peak_mib": peak_mib,
    }
    print(
        f"{args.requests} requests from {args.clients} clients, server --workers {args.workers}, "
        f"OMP_NUM_THREADS={args.threads}, CPUs {result['cpus']}, {len(uploads)} distinct X-rays\n"
        f"| throughput (req/s) | p50 (ms) | p95 (ms) | max (ms) | errors | "
        f"server RSS idle -> peak (MiB) |\n|---|---|---|---|---|---|\n"
        f"| {result['throughput_rps']:.2f} | {result['latency_ms']['p50']:.0f} | "
        f"{result['latency_ms']['p95']:.0f} | {result['latency_ms']['max']:.0f} | {errors} | "
        f"{idle_mib:.0f} -> {peak_mib:.0f} |\n"
        f"server mean per request (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
