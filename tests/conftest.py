"""Shared fixtures: where the real X-ray data lives, and a fast torch setup for tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path | None:
    root = Path(os.environ.get("LUNGSEG_DATA") or REPO.parent / "shared" / "data")
    return root if (root / "splits" / "paper_433.json").is_file() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared Montgomery+Shenzhen folder; skips (with the reason) only when it is absent."""
    root = _data_root()
    if root is None:
        pytest.skip("real X-ray data not found: set LUNGSEG_DATA or place it at ../shared/data")
    return root


@pytest.fixture(scope="session")
def split_file(data_root: Path) -> Path:
    """The paper's 4:3:3 split behind every reported number."""
    return data_root / "splits" / "paper_433.json"


@pytest.fixture(scope="session")
def test_split_pairs(data_root: Path, split_file: Path) -> list:
    """The 211 test pairs of the paper split, in split order (both hospitals)."""
    from lungseg.data.discovery import discover, load_split, select

    return select(discover(data_root).pairs, load_split(split_file), "test")


@pytest.fixture(scope="session")
def small_split(
    data_root: Path, split_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A few dozen real pairs of the paper split (both sources), for seconds-long training runs."""
    ids = json.loads(split_file.read_text())

    def pick(subset: str, n: int) -> list[str]:
        montgomery = [i for i in ids[subset] if i.startswith("montgomery")]
        shenzhen = [i for i in ids[subset] if i.startswith("shenzhen")]
        return montgomery[: n // 4] + shenzhen[: n - n // 4]

    path = tmp_path_factory.mktemp("split") / "small.json"
    path.write_text(json.dumps({"train": pick("train", 24), "val": pick("val", 8), "test": []}))
    return path


@pytest.fixture(scope="session")
def lungs_only_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped network without its heart channel: the lung output only, as the weights
    files written before the heart channel are (for tests of the lungs-only behaviour)."""
    import dataclasses

    from lungseg.models import build_from_config
    from lungseg.weights import LABELS, load_weights, save_weights, shipped_weights_path

    model, info = load_weights(shipped_weights_path())
    config = {**model.config, "out_channels": 1}
    lungs = build_from_config(config)
    state = model.state_dict()
    # The head conv gives each label's logits in a block of channels (one per sub-pixel of a
    # pixel-shuffle head, so 4 with a stride-2 stem); the lungs are the first block.
    head = "head.0" if "head.0.weight" in state else "head"
    block = state[f"{head}.weight"].shape[0] // model.config["out_channels"]
    for kind in ("weight", "bias"):
        state[f"{head}.{kind}"] = state[f"{head}.{kind}"][:block]
    lungs.load_state_dict(state)
    extra = {k: v for k, v in info.extra.items() if k != "quality_model"}
    path = tmp_path_factory.mktemp("lungs-only") / "lungseg_cxr.safetensors"  # its usual name
    lungs_info = dataclasses.replace(info, model_config=lungs.config, labels=LABELS, extra=extra)
    save_weights(path, lungs, lungs_info)
    return path
