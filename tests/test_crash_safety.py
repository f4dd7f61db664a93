"""Crash safety: SIGKILL `lungseg train` and `lungseg predict` at random points, then rerun.

A SIGKILL (the OOM killer, a power cut, a preempted node) runs no ``finally`` and no ``except``:
whatever is on disk at that instant is all the next run gets. Each test kills real subprocesses
at seeded random moments - mid-epoch, mid-image and in the middle of writing a checkpoint or an
output file (through ``die_during_write.py``, which wraps ``lungseg.atomic`` from outside) - and
asserts that everything left under a final name is complete and loadable, that the rerun cleans
up the interrupted writes, and that the end result is exactly that of one uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from lungseg.training.checkpoint import load_checkpoint
from lungseg.weights import load_weights

pytestmark = [pytest.mark.data, pytest.mark.slow]

DIE_DURING_WRITE = Path(__file__).with_name("die_during_write.py")
# Every run gets the same thread count, so float sums happen in the same order in each.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
START_TIMEOUT_S = 240.0  # generous: the suite may share the CPU with other work


# ----------------------------------------------------------------------------- processes
def lungseg_command(args: list[str], die_at: tuple[str, int] | None = None) -> list[str]:
    """``python -m lungseg ARGS``, or through the wrapper that dies in the N-th matching write."""
    if die_at is None:
        return [sys.executable, "-m", "lungseg", *args]
    pattern, nth = die_at
    return [sys.executable, str(DIE_DURING_WRITE), pattern, str(nth), *args]


def start(args: list[str], log: Path, die_at: tuple[str, int] | None = None) -> subprocess.Popen:
    handle = log.open("ab")
    # Its own session: the kill below reaches the DataLoader workers too, as a power cut would.
    return subprocess.Popen(
        lungseg_command(args, die_at),
        env=CHILD_ENV,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_to_end(args: list[str], log: Path, die_at: tuple[str, int] | None = None) -> int:
    process = start(args, log, die_at)
    try:
        return process.wait(timeout=600)
    finally:
        kill(process)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the process and what it started (a DataLoader worker outlives a dead parent)."""
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, log: Path) -> None:
    """Poll ``condition`` while ``process`` runs; fail (with its output) if it never holds."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the process ended ({process.returncode}) first:\n{tail(log)}")
        if time.monotonic() > deadline:
            kill(process)
            pytest.fail(f"waited {START_TIMEOUT_S:.0f} s in vain:\n{tail(log)}")
        time.sleep(0.02)


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def temporaries(folder: Path) -> list[Path]:
    """Files ``lungseg.atomic`` writes before renaming them (``.NAME.XXXXXXXX.tmp``)."""
    return sorted(folder.rglob(".*.tmp"))


def identity(path: Path) -> tuple[int, int] | None:
    """Changes whenever the file is replaced (``os.replace`` brings a new inode)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


# ----------------------------------------------------------------------------- training
def train_args(data_root: Path, split: Path, out: Path) -> list[str]:
    """A seconds-long deterministic run with augmentation and a DataLoader worker."""
    return [
        "train",
        "--data",
        str(data_root),
        "--split",
        str(split),
        "--out",
        str(out),
        "--preset",
        "smoke",
        "--epochs",
        "3",
        "--workers",
        "1",
        "--seed",
        "11",
        "--set",
        "augment=true",
        "--set",
        "deterministic=true",
    ]


def assert_run_files_loadable(run: Path) -> None:
    """Whatever a killed run left under a final name loads completely."""
    if (run / "last.pt").exists():
        load_checkpoint(run / "last.pt")
    for name in ("best.safetensors", "model.safetensors"):
        if (run / name).exists():
            load_weights(run / name)


def assert_same_tensors(a: Any, b: Any, where: str) -> None:
    """Bit-identical nested state (dicts, lists, tensors, numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_safetensors(a: Path, b: Path) -> None:
    assert_same_tensors(load_file(a), load_file(b), a.name)
    with safe_open(str(a), "pt") as first, safe_open(str(b), "pt") as second:
        meta_a, meta_b = first.metadata(), second.metadata()
    assert meta_a["threshold"] == meta_b["threshold"]


def test_train_killed_anywhere_resumes_to_the_weights_of_an_uninterrupted_run(
    data_root: Path, small_split: Path, tmp_path: Path
) -> None:
    rng = random.Random(20251126)
    log = tmp_path / "train.log"
    straight = tmp_path / "straight"
    assert run_to_end(train_args(data_root, small_split, straight), log) == 0, tail(log)
    elapsed = [row["seconds"] for row in load_checkpoint(straight / "last.pt")["history"]]
    shortest_epoch = float(np.diff([0.0, *elapsed]).min())  # training + validation

    run = tmp_path / "crashed"
    resume = ["train", "--resume", str(run)]

    # 1. Killed halfway through writing the N-th checkpoint (N = 1: before any exists).
    nth = rng.randint(1, 2)
    code = run_to_end(train_args(data_root, small_split, run), log, die_at=("last.pt", nth))
    assert code == -signal.SIGKILL, tail(log)
    [half] = temporaries(run)
    assert half.name.startswith(".last.pt.") and half.stat().st_size > 0
    assert_run_files_loadable(run)
    if nth == 1:
        assert not (run / "last.pt").exists()
    else:
        assert load_checkpoint(run / "last.pt")["epoch"] == nth - 1

    # 2. Resumed, then killed after a random part of an epoch's time. The run rewrites
    #    config.json (after removing the half-written file) just before its first epoch, and
    #    at least two epochs of training are left from there.
    before = identity(run / "config.json")
    process = start(resume, log)
    wait_for(lambda: identity(run / "config.json") != before, process, log)
    assert not half.exists()
    time.sleep(rng.uniform(0.1, 0.7) * shortest_epoch)
    kill(process)
    assert_run_files_loadable(run)
    if (run / "last.pt").exists():
        assert load_checkpoint(run / "last.pt")["epoch"] < 3, "killed after training, not in it"

    # 3. Resumed to the end of training, then killed while writing the final weights.
    code = run_to_end(resume, log, die_at=("model.safetensors", 1))
    assert code == -signal.SIGKILL, tail(log)
    assert_run_files_loadable(run)
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    [half] = temporaries(run)
    assert half.name.startswith(".model.safetensors.")

    # 4. Resumed once more: nothing left to train, so it only finishes the run.
    assert run_to_end(resume, log) == 0, tail(log)
    assert temporaries(run) == []

    final, reference = load_checkpoint(run / "last.pt"), load_checkpoint(straight / "last.pt")
    assert final["epoch"] == reference["epoch"] == 3
    for key in ("model", "optimizer", "rng"):  # the best epoch is read from the history below
        assert_same_tensors(final[key], reference[key], key)
    for column in ("train_loss", "val_loss", "val_dice", "lr"):
        assert [r[column] for r in final["history"]] == [r[column] for r in reference["history"]]
    for name in ("best.safetensors", "model.safetensors"):
        assert_same_safetensors(run / name, straight / name)


# ----------------------------------------------------------------------------- predict
N_XRAYS = 8


@pytest.fixture(scope="module")
def xray_folder(test_split_pairs: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight real test-split X-rays, half from each hospital."""
    folder = tmp_path_factory.mktemp("xrays")
    by_source: dict[str, list] = {}
    for pair in test_split_pairs:
        by_source.setdefault(pair.source, []).append(pair)
    for source in sorted(by_source):
        for pair in by_source[source][: N_XRAYS // 2]:
            shutil.copy(pair.image, folder / pair.image.name)
    assert len(list(folder.iterdir())) == N_XRAYS
    return folder


def predict_args(inputs: Path, out: Path) -> list[str]:
    return ["predict", str(inputs), "-o", str(out), "--batch-size", "1", "--quiet"]


@pytest.fixture(scope="module")
def clean_predictions(xray_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run: what every interrupted-and-rerun folder must equal."""
    out = tmp_path_factory.mktemp("clean") / "out"
    log = out.parent / "predict.log"
    assert run_to_end(predict_args(xray_folder, out), log) == 0, tail(log)
    assert len(list(out.glob("*_mask.png"))) == N_XRAYS
    return out


def finished(out: Path) -> int:
    return len(list((out / ".lungseg-predict").glob("*.json")))


def files_of(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def assert_visible_outputs_complete(out: Path, clean: Path) -> None:
    """Every PNG under its final name decodes and is the clean run's file, byte for byte."""
    for path in [*out.glob("*_mask.png"), *out.glob("*_overlay.png")]:
        with Image.open(path) as image:
            assert np.asarray(image).size > 0  # decodes to the last row
        assert path.read_bytes() == (clean / path.name).read_bytes(), path.name


def test_predict_killed_mid_folder_and_rerun_equals_one_clean_run(
    xray_folder: Path, clean_predictions: Path, tmp_path: Path
) -> None:
    rng = random.Random(7)
    log = tmp_path / "predict.log"
    max_delay = 0.5
    for attempt in range(6):
        out = tmp_path / f"attempt{attempt}"
        process = start(predict_args(xray_folder, out), log)
        wait_for(lambda out=out: finished(out) >= 1, process, log)
        time.sleep(rng.uniform(0.0, max_delay))
        kill(process)
        if 0 < finished(out) < N_XRAYS:
            break
        max_delay /= 2  # it finished first: kill sooner next time
    else:
        pytest.fail(f"never killed mid-folder in 6 attempts:\n{tail(log)}")
    assert 0 < len(list(out.glob("*_mask.png"))) < N_XRAYS
    assert_visible_outputs_complete(out, clean_predictions)

    assert run_to_end(predict_args(xray_folder, out), log) == 0, tail(log)
    assert files_of(out) == files_of(clean_predictions)  # masks, overlays, journal, results.csv


def test_predict_killed_while_writing_an_output_never_shows_a_partial_png(
    xray_folder: Path, clean_predictions: Path, tmp_path: Path
) -> None:
    nth = random.Random(3).randint(2, N_XRAYS - 1)
    out = tmp_path / "out"
    log = tmp_path / "predict.log"
    code = run_to_end(predict_args(xray_folder, out), log, die_at=("*_overlay.png", nth))
    assert code == -signal.SIGKILL, tail(log)
    assert_visible_outputs_complete(out, clean_predictions)
    assert len(list(out.glob("*_overlay.png"))) == nth - 1
    assert len(list(out.glob("*_mask.png"))) == nth  # its mask was complete, so it is visible
    assert finished(out) == nth - 1  # but the image is not recorded as done
    [half] = temporaries(out)  # the overlay being written: half its bytes, under a hidden name
    assert "_overlay.png." in half.name and half.stat().st_size > 0

    assert run_to_end(predict_args(xray_folder, out), log) == 0, tail(log)
    assert temporaries(out) == []
    assert files_of(out) == files_of(clean_predictions)
