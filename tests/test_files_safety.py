"""Atomic writes, safe checkpoint loading and self-describing weights files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from lungseg.atomic import atomic_write, atomic_write_bytes
from lungseg.errors import InvalidInputError
from lungseg.models import create_model
from lungseg.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from lungseg.weights import WeightsInfo, load_weights, save_weights


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(ValueError), atomic_write(target) as handle:
        handle.write(b"half a new fi")
        raise ValueError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary left behind


def test_atomic_write_gives_the_permissions_a_plain_write_would(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "atomic.bin", b"x")
    (tmp_path / "plain.bin").write_bytes(b"x")
    assert (tmp_path / "atomic.bin").stat().st_mode == (tmp_path / "plain.bin").stat().st_mode


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_a_malicious_pickle_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Exploit()}, evil, pickle_module=pickle)
    with pytest.raises(InvalidInputError, match="evil.pt"):
        load_checkpoint(evil)


def test_checkpoint_round_trip_restores_rng_streams(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.manual_seed(3)
    state = {"model": {"w": torch.arange(4.0)}, "rng": rng_state(), "epoch": 2}
    save_checkpoint(tmp_path / "c.pt", state)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    loaded = load_checkpoint(tmp_path / "c.pt")
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_unreadable_checkpoint_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match="broken.pt"):
        load_checkpoint(path)


def test_weights_file_rebuilds_the_same_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("unet", base_width=8).eval()
    info = WeightsInfo(model_config=model.config, image_size=(64, 64), threshold=0.45)
    save_weights(tmp_path / "m.safetensors", model, info)
    loaded, loaded_info = load_weights(tmp_path / "m.safetensors")
    assert loaded_info.threshold == 0.45 and tuple(loaded_info.image_size) == (64, 64)
    x = torch.randn(1, 1, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), loaded(x))


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"PK\x03\x04 not safetensors"])
def test_bad_weights_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match="bad.safetensors"):
        load_weights(path)
