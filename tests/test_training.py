"""Training on real X-rays: the loss falls, resume is exact, DDP ranks agree, outputs exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lungseg.config import apply_overrides, get_preset
from lungseg.models import create_model
from lungseg.runtime import seed_everything
from lungseg.training import Trainer
from lungseg.training.checkpoint import load_checkpoint
from lungseg.weights import load_weights

pytestmark = [pytest.mark.data, pytest.mark.slow]


def crash_then_resume(
    config, data_root: Path, split: Path, out: Path, crash_epoch: int, monkeypatch
) -> Trainer:
    """Train ``out`` until epoch ``crash_epoch`` raises, then resume it to the end."""
    real_epoch = Trainer._train_epoch

    def crashing(self: Trainer) -> float:
        if self.epoch == crash_epoch:
            raise RuntimeError("simulated crash")
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "_train_epoch", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(config, data_root, split, out).fit()
    monkeypatch.setattr(Trainer, "_train_epoch", real_epoch)
    assert load_checkpoint(out / "last.pt")["epoch"] == crash_epoch
    resumed = Trainer(config, data_root, split, out)
    resumed.resume()
    resumed.fit()
    return resumed


def smoke_config(**overrides: object):
    config = get_preset("smoke")
    return apply_overrides(config, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def test_loss_falls_and_run_folder_is_complete(
    data_root: Path, small_split: Path, tmp_path: Path
) -> None:
    from lungseg.training import train

    config = smoke_config(epochs=4, augment=True)
    summary = train(config, data_root, small_split, tmp_path)
    history = load_checkpoint(tmp_path / "last.pt")["history"]
    losses = [row["train_loss"] for row in history]
    assert len(losses) == 4
    assert losses[-1] < 0.8 * losses[0], losses
    for name in (
        "config.json",
        "metrics.csv",
        "loss_curves.png",
        "val_predictions.png",
        "model.safetensors",
        "best.safetensors",
        "summary.json",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    assert any((tmp_path / "tensorboard").iterdir())
    assert len((tmp_path / "metrics.csv").read_text().strip().splitlines()) == 1 + 4
    model, info = load_weights(tmp_path / "model.safetensors")
    assert info.threshold == summary["threshold"]
    assert 0.3 <= info.threshold <= 0.7
    assert tuple(info.image_size) == (64, 64)


def test_resume_after_crash_equals_uninterrupted(
    data_root: Path, small_split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = smoke_config(epochs=3, augment=True, deterministic=True)
    straight = Trainer(config, data_root, small_split, tmp_path / "straight")
    straight.fit()

    crashed = Trainer(config, data_root, small_split, tmp_path / "crashed")
    real_epoch = Trainer._train_epoch
    calls = {"n": 0}

    def crash_in_second_epoch(self: Trainer) -> float:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "_train_epoch", crash_in_second_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    monkeypatch.setattr(Trainer, "_train_epoch", real_epoch)
    assert load_checkpoint(tmp_path / "crashed" / "last.pt")["epoch"] == 1

    resumed = Trainer(config, data_root, small_split, tmp_path / "crashed")
    resumed.resume()
    resumed.fit()
    assert resumed.epoch == straight.epoch == 3
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]


def test_two_gloo_ranks_hold_identical_weights(
    data_root: Path, small_split: Path, tmp_path: Path
) -> None:
    script = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(script),
        str(data_root),
        str(small_split),
        str(tmp_path),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name
    # Training really happened (weights moved away from the seeded initialisation).
    seed_everything(get_preset("smoke").seed)
    initial = create_model(get_preset("smoke").model).state_dict()
    assert any(not torch.equal(initial[k], states[0][k]) for k in initial if k.endswith("weight"))
    assert (tmp_path / "run" / "model.safetensors").is_file()
    history = load_checkpoint(tmp_path / "run" / "last.pt")["history"]
    assert len(history) == 2


def test_cli_train_then_resume_finished_run(
    data_root: Path, small_split: Path, tmp_path: Path
) -> None:
    from lungseg.cli import main

    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(data_root),
        "--split",
        str(small_split),
        "--out",
        str(out),
        "--preset",
        "smoke",
        "--epochs",
        "1",
    ]
    assert main(args) == 0
    assert json.loads((out / "run.json").read_text())["preset"] == "smoke"
    assert main(args) == 1  # refuses to overwrite an existing run
    assert main(["train", "--resume", str(out)]) == 0  # already finished: finalises again, no error


def test_a_run_started_from_python_resumes_from_the_cli(
    data_root: Path, small_split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lungseg.cli import main
    from lungseg.training import train

    real_epoch = Trainer._train_epoch

    def crash_in_second_epoch(self: Trainer) -> float:
        if self.epoch == 1:
            raise RuntimeError("simulated crash")
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "_train_epoch", crash_in_second_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(smoke_config(epochs=2), data_root, small_split, tmp_path)
    monkeypatch.setattr(Trainer, "_train_epoch", real_epoch)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["data"] == str(data_root.resolve()) and record["preset"] is None
    assert main(["train", "--resume", str(tmp_path)]) == 0
    history = load_checkpoint(tmp_path / "last.pt")["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert (tmp_path / "model.safetensors").is_file()


def test_best_epoch_is_read_from_the_history(
    data_root: Path, small_split: Path, tmp_path: Path
) -> None:
    trainer = Trainer(smoke_config(epochs=1), data_root, small_split, tmp_path)
    assert (trainer.best_epoch, trainer.best_dice) == (0, -1.0)
    nan = float("nan")
    trainer.history = [
        {"epoch": 1, "val_dice": 0.5},
        {"epoch": 2, "val_dice": nan},
        {"epoch": 3, "val_dice": 0.7},
        {"epoch": 4, "val_dice": 0.7},
    ]
    assert (trainer.best_epoch, trainer.best_dice) == (3, 0.7)


def test_paper_preset_starts_checkpoints_and_resumes_at_512(
    data_root: Path, split_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paper's full recipe (msag_unet, 512x512, batch 2, Adam) on 4 images for 2 epochs."""
    ids = json.loads(split_file.read_text())
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"train": ids["train"][:4], "val": ids["val"][:2], "test": []}))
    config = apply_overrides(get_preset("paper"), ["epochs=2", "workers=0"])
    resumed = crash_then_resume(config, data_root, tiny, tmp_path / "run", 1, monkeypatch)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert json.loads(state["config"])["image_size"] == [512, 512]
    assert resumed.model.config["name"] == "msag_unet"
    assert isinstance(resumed.optimizer, torch.optim.Adam)
    lrs = [row["lr"] for row in state["history"]]
    assert 1e-6 <= lrs[1] < lrs[0] <= 1e-4  # the paper's lr, decaying towards 1e-6


@pytest.fixture(scope="module")
def multi_source_split(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six train and three val pairs of each of the four sources of multi_source.json."""
    ids = json.loads((data_root / "splits" / "multi_source.json").read_text())

    def pick(subset: str, n: int) -> list[str]:
        sources = sorted({i.split("/")[0] for i in ids[subset]})
        return [i for s in sources for i in [i for i in ids[subset] if i.startswith(s + "/")][:n]]

    path = tmp_path_factory.mktemp("split") / "multi.json"
    path.write_text(json.dumps({"train": pick("train", 6), "val": pick("val", 3), "test": []}))
    return path


def test_multi_source_run_reports_each_source_and_resumes_exactly(
    data_root: Path, multi_source_split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four sources, hospital augmentation, COVID-QU-Ex at half weight; crash, resume, compare."""
    config = smoke_config(
        epochs=3,
        augment=True,
        augmentation="hospital",
        source_weights={"covidqu": 0.5},
        selection="source_mean",
        deterministic=True,
        precision="fp32",
    )
    straight = Trainer(config, data_root, multi_source_split, tmp_path / "straight")
    straight.fit()
    sources = ("covidqu", "montgomery", "shenzhen", "wingspan")
    for row in straight.history:
        per_source = [row[f"val_dice_{s}"] for s in sources]
        assert row["val_dice"] == pytest.approx(sum(per_source) / 4)
    header = (tmp_path / "straight" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {f"val_dice_{s}" for s in sources} <= set(header)

    resumed = crash_then_resume(
        config, data_root, multi_source_split, tmp_path / "crashed", 2, monkeypatch
    )

    def without_time(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert without_time(resumed.history) == without_time(straight.history)
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
