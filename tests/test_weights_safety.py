"""Weights safety: no file lungseg is handed can run code, and every refusal is one clear line.

Weights are read only from safetensors (``lungseg.weights.load_weights``) and checkpoints only
through ``torch.load(weights_only=True)``. Each test hands the CLI a pickle whose unpickling
would run ``touch MARKER`` - at the path ``--resume`` reads and as ``--weights`` of evaluate and
predict - and asserts exit code 1, one error line naming the file, no traceback, and no marker.
Forged and damaged safetensors files (truncated, garbage, lying metadata, an architecture of
terabytes) are refused the same way, before any memory is spent on them.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shlex
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from lungseg.cli import main
from lungseg.config import get_preset
from lungseg.errors import InvalidInputError
from lungseg.models import create_model
from lungseg.training.checkpoint import load_checkpoint
from lungseg.weights import load_weights, shipped_weights_path


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def torch_zip(marker: Path) -> bytes:
    """What ``torch.save`` writes today: a zip holding the pickle."""
    buffer = io.BytesIO()
    torch.save({"model": RunsCode(marker), "epoch": 1}, buffer)
    return buffer.getvalue()


def torch_legacy(marker: Path) -> bytes:
    """``torch.save``'s pre-1.6 format: a bare pickle stream."""
    buffer = io.BytesIO()
    torch.save({"model": RunsCode(marker)}, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def bare_pickle(marker: Path) -> bytes:
    return pickle.dumps({"model": RunsCode(marker)}, protocol=pickle.HIGHEST_PROTOCOL)


MALICIOUS: dict[str, Callable[[Path], bytes]] = {
    "torch_zip": torch_zip,
    "torch_legacy": torch_legacy,
    "bare_pickle": bare_pickle,
}


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


def test_the_payload_is_real(marker: Path) -> None:
    """Unpickled the unsafe way, the payload does run: its absence below means something."""
    pickle.loads(bare_pickle(marker))
    assert marker.exists()


def assert_one_line_error(stderr: str, command: str, path: Path, reason: str) -> None:
    """The CLI's last stderr line is its one error line, naming the file; no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert sum("error:" in line for line in lines) == 1, stderr
    assert lines[-1].startswith(f"lungseg {command}: error: {path}"), stderr
    assert reason in lines[-1], stderr


# ----------------------------------------------------------------------------- checkpoints
def make_run_folder(run: Path, data_root: Path, split: Path) -> None:
    """The files ``lungseg train`` writes before its first epoch, as ``--resume`` reads them."""
    run.mkdir()
    record = {"data": str(data_root), "split": str(split), "preset": "smoke", "command": "-"}
    (run / "run.json").write_text(json.dumps(record))
    (run / "config.json").write_text(get_preset("smoke").pretty())


@pytest.mark.data
@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_resume_refuses_a_malicious_checkpoint(
    kind: str, marker: Path, data_root: Path, small_split: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    make_run_folder(run, data_root, small_split)
    (run / "last.pt").write_bytes(MALICIOUS[kind](marker))
    assert main(["train", "--resume", str(run)]) == 1
    assert_one_line_error(capsys.readouterr().err, "train", run / "last.pt", "refused")
    assert not marker.exists()
    assert not (run / "model.safetensors").exists()


@pytest.mark.data
@pytest.mark.parametrize(
    ("kind", "reason"),
    [("truncated", "not a readable checkpoint"), ("foreign", "not a checkpoint of this run")],
)
def test_resume_refuses_a_damaged_or_foreign_checkpoint(
    kind: str, reason: str, data_root: Path, small_split: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    make_run_folder(run, data_root, small_split)
    buffer = io.BytesIO()
    if kind == "truncated":
        torch.save({"model": create_model("unet", base_width=4).state_dict()}, buffer)
        (run / "last.pt").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    else:  # loads safely, but is some other program's dict of tensors
        torch.save({"model": {"weight": torch.zeros(3)}, "epoch": 2}, buffer)
        (run / "last.pt").write_bytes(buffer.getvalue())
    assert main(["train", "--resume", str(run)]) == 1
    assert_one_line_error(capsys.readouterr().err, "train", run / "last.pt", reason)


@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_checkpoint_loader_refuses_without_running_the_payload(
    kind: str, marker: Path, tmp_path: Path
) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(MALICIOUS[kind](marker))
    with pytest.raises(InvalidInputError, match="refused") as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "weights_only" not in message  # torch's advice to load it unsafely is not passed on
    assert not marker.exists()


# ----------------------------------------------------------------------------- --weights
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_evaluate_and_predict_refuse_a_pickle_as_weights(
    kind: str, suffix: str, marker: Path, tmp_path: Path, capsys
) -> None:
    weights = tmp_path / f"model{suffix}"
    weights.write_bytes(MALICIOUS[kind](marker))
    image = tmp_path / "xray.png"  # never read: the weights are refused first
    image.write_bytes(b"")
    out = tmp_path / "out"
    evaluate = ["evaluate", "--weights", str(weights), "--data", str(tmp_path)]
    predict = ["predict", str(image), "-o", str(out), "--weights", str(weights)]
    for command, args in (("evaluate", evaluate), ("predict", predict)):
        assert main(args) == 1
        assert_one_line_error(capsys.readouterr().err, command, weights, "pickled PyTorch file")
    assert not marker.exists()
    assert not out.exists()  # not one output file


def test_real_cli_process_refuses_pickled_weights(marker: Path, tmp_path: Path) -> None:
    """The installed entry point, not just ``main()``: exit status 1 and a single stderr line."""
    weights = tmp_path / "model.pt"
    weights.write_bytes(torch_zip(marker))
    done = subprocess.run(
        [sys.executable, "-m", "lungseg", "evaluate", "--weights", str(weights), "--data", "."],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert_one_line_error(done.stderr, "evaluate", weights, "never loads")
    assert not marker.exists()


# ----------------------------------------------------------------------------- safetensors
def shipped() -> tuple[bytes, dict[str, str], dict[str, torch.Tensor]]:
    path = shipped_weights_path()
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    return path.read_bytes(), meta, load_file(path)


def damaged(kind: str) -> bytes:
    data, meta, state = shipped()
    header_end = 8 + struct.unpack("<Q", data[:8])[0]

    def forged(**fields: object) -> bytes:
        return save(state, metadata={**meta, **{k: str(v) for k, v in fields.items()}})

    config = json.loads(meta["model_config"])
    return {
        "truncated_half": lambda: data[: len(data) // 2],
        "header_only": lambda: data[:header_end],
        "garbage": lambda: bytes(range(256)) * 16,
        "header_length_lies": lambda: struct.pack("<Q", 2**40) + data[8:],
        "metadata_not_json": lambda: forged(model_config="{not json"),
        "unknown_model": lambda: forged(model_config=json.dumps({"name": "resnet_9000"})),
        "unknown_argument": lambda: forged(model_config=json.dumps({**config, "evil": 1})),
        "threshold_nan": lambda: forged(threshold="NaN"),
        "image_size_negative": lambda: forged(image_size="[-256, 256]"),
        # A 300000-channel unet: terabytes if it were allocated before the shapes are checked.
        "terabyte_architecture": lambda: forged(
            model_config=json.dumps({"name": "unet", "base_width": 300_000, "max_width": 300_000})
        ),
        "tensor_missing": lambda: save(dict(list(state.items())[1:]), metadata=meta),
        "tensor_reshaped": lambda: save(
            {k: v.flatten() if i == 0 else v for i, (k, v) in enumerate(state.items())},
            metadata=meta,
        ),
    }[kind]()


DAMAGED = {
    "truncated_half": "not a readable safetensors",
    "header_only": "not a readable safetensors",
    "garbage": "not a readable safetensors",
    "header_length_lies": "not a readable safetensors",
    "metadata_not_json": "unusable lungseg metadata",
    "unknown_model": "unknown model 'resnet_9000'",
    "unknown_argument": "no argument(s) evil",
    "threshold_nan": "unusable lungseg metadata",
    "image_size_negative": "unusable lungseg metadata",
    "terabyte_architecture": "do not fit the unet architecture",
    "tensor_missing": "1 missing",
    "tensor_reshaped": "1 of another shape",
}


@pytest.mark.parametrize("kind", sorted(DAMAGED))
def test_damaged_or_forged_safetensors_is_one_clear_error(
    kind: str, tmp_path: Path, capsys
) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(damaged(kind))
    with pytest.raises(InvalidInputError, match=re.escape(DAMAGED[kind])) as caught:
        load_weights(weights)
    assert caught.value.path == weights and "\n" not in str(caught.value)
    assert main(["evaluate", "--weights", str(weights), "--data", str(tmp_path)]) == 1
    assert_one_line_error(capsys.readouterr().err, "evaluate", weights, DAMAGED[kind])


def test_the_untouched_shipped_file_still_loads(tmp_path: Path) -> None:
    """The forgeries above start from this file: it is their damage that is refused."""
    data, _, state = shipped()
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(data)
    model, info = load_weights(copy)
    assert 0.0 < info.threshold < 1.0
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name].to(tensor.dtype)), name
