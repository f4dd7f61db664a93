"""lungseg.runtime: ``precision auto`` on a CPU is measured on the machine, once, and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lungseg.models import create_model
from lungseg.runtime import cpu_name, measure_cpu_precision


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "lungseg" / "precision.json"


def test_measures_both_precisions_then_reuses_the_answer(cache_home: Path) -> None:
    model = create_model("msag_unet_cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = measure_cpu_precision(model, (2, 1, 64, 64), training=True)
    assert not first.cached and first.fp32_ms > 0 and first.bf16_ms > 0
    assert first.name == ("bf16" if first.bf16_ms < first.fp32_ms else "fp32")
    assert first.dtype == (torch.bfloat16 if first.name == "bf16" else None)
    assert cpu_name() in first.describe() and first.name in first.describe()
    assert all(p.grad is None for p in model.parameters())  # leaves no gradients behind
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training

    again = measure_cpu_precision(model, (2, 1, 64, 64), training=True)
    assert again.cached and (again.name, again.fp32_ms) == (first.name, first.fp32_ms)
    entries = json.loads(cache_home.read_text())
    assert len(entries) == 1
    other = measure_cpu_precision(model, (2, 1, 64, 64), training=False)
    assert not other.cached and len(json.loads(cache_home.read_text())) == 2


@pytest.mark.data
def test_trainer_records_the_measured_precision(
    cache_home: Path, data_root: Path, small_split: Path, tmp_path: Path
) -> None:
    from lungseg.config import apply_overrides, get_preset
    from lungseg.training import train

    smoke = get_preset("smoke")
    summary = train(apply_overrides(smoke, ["epochs=1"]), data_root, small_split, tmp_path / "a")
    assert summary["precision"].startswith("auto: ")
    assert "fp32" in summary["precision"] and "bf16" in summary["precision"]
    fixed = apply_overrides(smoke, ["epochs=1", "precision=fp32"])
    assert train(fixed, data_root, small_split, tmp_path / "b")["precision"] == "fp32"
