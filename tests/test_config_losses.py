"""Presets, overrides and the loss: the pieces a training run is assembled from."""

from __future__ import annotations

import pytest
import torch

from lungseg.config import PRESETS, TrainConfig, apply_overrides, get_preset
from lungseg.errors import LungsegError
from lungseg.losses import boundary_loss, build_loss, signed_distance, soft_dice_loss


def test_paper_preset_is_the_papers_recipe() -> None:
    paper = get_preset("paper")
    assert paper.image_size == (512, 512)
    assert (paper.batch_size, paper.epochs, paper.optimizer) == (2, 50, "adam")
    assert (paper.lr, paper.min_lr) == (1e-4, 1e-6)
    assert paper.model == "msag_unet"


def test_presets_round_trip_through_json_dicts() -> None:
    for config in PRESETS.values():
        assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("override", "field", "value"),
    [
        ("epochs=7", "epochs", 7),
        ("lr=0.01", "lr", 0.01),
        ("image_size=320x256", "image_size", (320, 256)),
        ("image_size=128", "image_size", (128, 128)),
        ("model=unet", "model", "unet"),
        ("augment=false", "augment", False),
    ],
)
def test_overrides(override: str, field: str, value: object) -> None:
    assert getattr(apply_overrides(get_preset("cpu"), [override]), field) == value


def test_model_args_override_sets_one_entry() -> None:
    config = apply_overrides(get_preset("cpu"), ["model_args.width=24", "model_args.heads=2"])
    assert config.model_args == {"width": 24, "heads": 2}


def test_source_weights_override_sets_one_source_and_keeps_the_others() -> None:
    config = apply_overrides(get_preset("cpu"), ["source_weights.wingspan=2"])
    assert config.source_weights == {"covidqu": 0.5, "wingspan": 2}
    assert get_preset("cpu_paper").source_weights == {}
    assert (get_preset("cpu").augmentation, get_preset("cpu_paper").augmentation) == (
        "hospital",
        "basic",
    )
    assert (get_preset("cpu").selection, get_preset("cpu_paper").selection) == (
        "source_mean",
        "image_mean",
    )


def test_old_run_configs_without_the_new_fields_keep_their_recipe() -> None:
    """A config.json written before augmentation kinds existed resumes with the basic set."""
    old = get_preset("cpu_paper").to_dict()
    del old["augmentation"], old["source_weights"], old["selection"]
    config = TrainConfig.from_dict(old)
    assert (config.augmentation, config.source_weights, config.selection) == (
        "basic",
        {},
        "image_mean",
    )


@pytest.mark.parametrize(
    "bad",
    [
        "nope=1",
        "epochs",
        "image_size=1x2x3",
        "augmentation=strong",
        "selection=worst_source",
        "source_weights.covidqu=-1",
        'source_weights.covidqu="half"',
        "batch_size=0",
        "epochs=0",
        "lr=-0.1",
        "workers=-1",
        "image_size=8",
        'loss="focal"',
        'optimizer="sgd"',
        'precision="int8"',
        'device="tpu"',
        "model_args.out_channels=3",  # with heart=true below, the heart sets it
    ],
)
def test_bad_overrides_are_clear_errors(bad: str) -> None:
    """Checked when the config is built, before a trainer decodes a single image."""
    with pytest.raises(LungsegError):
        apply_overrides(get_preset("cpu"), [bad, "heart=true"])


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(LungsegError, match="paper"):
        get_preset("fast")


def test_soft_dice_is_zero_for_a_confident_perfect_prediction_and_one_for_the_opposite() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 50.0  # logits: +50 inside, -50 outside
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(-perfect, target).item() == pytest.approx(1.0, abs=0.02)


def test_bce_dice_sums_its_parts() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    both = build_loss("bce+dice")(logits, target)
    parts = build_loss("bce")(logits, target) + build_loss("dice")(logits, target)
    assert both.item() == pytest.approx(parts.item(), rel=1e-6)
    with pytest.raises(LungsegError):
        build_loss("focal")


def test_signed_distance_is_negative_inside_positive_outside_and_zero_without_a_border() -> None:
    target = torch.zeros(3, 1, 20, 20)
    target[0, :, 5:15, 5:15] = 1
    target[2] = 1  # all target: no border
    distance = signed_distance(target) * 20  # back to pixels
    assert distance[0, 0, 10, 10] == pytest.approx(-5.0, abs=0.01)  # 5 px from the square's side
    assert distance[0, 0, 10, 0] == pytest.approx(5.0, abs=0.01)  # 5 px left of it
    assert distance[0, 0, 0, 0] == pytest.approx(5 * 2**0.5, abs=0.01)  # diagonal: Euclidean
    assert (distance[0][target[0] > 0.5] < 0).all() and (distance[0][target[0] < 0.5] > 0).all()
    assert not distance[1].any() and not distance[2].any()  # empty, full: nothing to be near


def test_boundary_loss_charges_a_far_false_positive_more_than_a_near_one() -> None:
    target = torch.zeros(1, 1, 32, 32)
    target[:, :, 8:24, 8:20] = 1
    exact = (target * 2 - 1) * 50.0
    near, far = exact.clone(), exact.clone()
    near[:, :, 8:24, 20:22] = 50.0  # two columns past the border
    far[:, :, 8:24, 29:31] = 50.0  # the same area, nine columns away
    exact_loss, near_loss, far_loss = (boundary_loss(x, target).item() for x in (exact, near, far))
    assert exact_loss < near_loss < far_loss
    logits = torch.zeros(1, 1, 32, 32, requires_grad=True)
    boundary_loss(logits, target).backward()  # probabilities fall outside, rise inside
    assert logits.grad[0, 0, 0, 0] > 0 > logits.grad[0, 0, 16, 14]


def test_the_boundary_recipe_adds_the_boundary_term_to_bce_dice() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 16, 16), torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 3:9] = 1
    total = build_loss("bce+dice+boundary")(logits, target)
    parts = build_loss("bce+dice")(logits, target) + boundary_loss(logits, target)
    assert total.item() == pytest.approx(parts.item(), rel=1e-6)
    labelled = torch.tensor([[True], [False]])  # the second image has no label: no term
    masked = build_loss("bce+dice+boundary")(logits, target, labelled)
    alone = build_loss("bce+dice+boundary")(logits[:1], target[:1])
    assert masked.item() == pytest.approx(alone.item(), rel=1e-6)
    assert apply_overrides(get_preset("cpu"), ["loss=bce+dice+boundary"]).loss == (
        "bce+dice+boundary"
    )
