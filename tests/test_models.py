"""The model family: shapes, gradients, attention maths, config round trips and export."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lungseg.errors import LungsegError
from lungseg.models import build_from_config, create_model, list_models, pad_to_stride
from lungseg.models.attention import MultiHeadAttention2d, attention, to_map, to_tokens
from lungseg.models.complexity import attention_summary, count_flops

# Tiny widths keep every test fast; the architecture (levels, attention, gates) is unchanged.
TINY = {"base_width": 4, "max_width": 16, "head_dim": 4}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads, and a second thread on a busy CPU only spins."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**TINY, **overrides})


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(QK^T / sqrt(d)) V`` written out, in float64."""
    q, k, v = q.double(), k.double(), v.double()
    return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1) @ v


def test_registry_lists_the_family():
    assert set(list_models()) >= {"unet", "attention_unet", "msag_unet", "msag_unet_cpu"}


def test_unknown_name_lists_valid_names():
    with pytest.raises(LungsegError, match="unknown model 'vnet'.*msag_unet_cpu"):
        create_model("vnet")


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"base_widht": 8}, "no argument.*base_widht"),
        ({"norm": "layer"}, "unknown norm 'layer'"),
        ({"heads": [1, 2]}, "heads needs one value per level"),
        ({"attention_levels": [5]}, "attention_levels must lie in 0..4"),
        ({"reductions": [3, 8, 4, 2, 1]}, "divide reduction"),
        ({"skip_gate": "none", "gate_levels": [0]}, "need skip_gate"),
    ],
)
def test_bad_arguments_are_named(overrides, message):
    with pytest.raises(LungsegError, match=message):
        create_model("msag_unet", **overrides)


@pytest.mark.parametrize("name", ["unet", "attention_unet", "msag_unet", "msag_unet_cpu"])
class TestEveryModel:
    @pytest.mark.parametrize("height,width", [(256, 256), (512, 512), (320, 256)])
    def test_logits_have_the_input_size(self, name, height, width):
        model = tiny(name).eval()
        with torch.inference_mode():
            out = model(torch.randn(1, 1, height, width))
        assert out.shape == (1, 1, height, width)
        assert torch.isfinite(out).all()

    def test_every_parameter_gets_a_gradient(self, name):
        model = tiny(name).train()
        model(torch.randn(2, 1, 32, 32)).mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
        assert not missing

    def test_fixed_seed_gives_identical_output(self, name):
        x = torch.randn(1, 1, 64, 64)
        with torch.inference_mode():
            first = tiny(name).eval()(x)
            second = tiny(name).eval()(x)
        assert torch.equal(first, second)

    def test_config_rebuilds_the_same_model(self, name):
        model = tiny(name).eval()
        config = json.loads(json.dumps(model.config))  # as a checkpoint's JSON stores it
        assert config["name"] == name
        rebuilt = build_from_config(config).eval()
        rebuilt.load_state_dict(model.state_dict())
        assert rebuilt.config == model.config
        x = torch.randn(1, 1, 64, 64)
        with torch.inference_mode():
            assert torch.equal(rebuilt(x), model(x))

    def test_stride_and_size_error_say_what_to_pad_to(self, name):
        model = tiny(name)
        assert model.stride == 16
        with pytest.raises(LungsegError, match=r"250x300.*pad to 256x304"):
            model(torch.randn(1, 1, 250, 300))

    def test_channels_last_matches_contiguous(self, name):
        model = tiny(name).eval()
        x = torch.randn(2, 1, 64, 96)
        with torch.inference_mode():
            expected = model(x)
            model = model.to(memory_format=torch.channels_last)
            out = model(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)

    def test_bf16_autocast_on_cpu(self, name):
        model = tiny(name).eval()
        x = torch.randn(1, 1, 32, 32)
        with torch.inference_mode():
            expected = model(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
        assert out.shape == expected.shape
        # bf16 keeps ~3 significant digits; the logits must still agree closely.
        assert (out.float() - expected).abs().mean() < 0.05 * expected.abs().mean() + 0.05


def test_export_traces_with_dynamic_sizes():
    """No data-dependent control flow: one export serves inputs of other sizes."""
    # Two levels hold every code path (pooled queries and keys, self- and cross-attention).
    model = tiny(
        "msag_unet_cpu",
        depth=2,
        heads=[1, 2],
        reductions=[4, 2],
        query_reductions=[2, 1],
        attention_levels=[0, 1],
        attention_impl="math",
    ).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    height = torch.export.Dim("height", min=1, max=64)
    width = torch.export.Dim("width", min=1, max=64)
    program = torch.export.export(
        model,
        (torch.randn(2, 1, 64, 64),),
        dynamic_shapes={"x": {0: batch, 2: 16 * height, 3: 16 * width}},
    )
    x = torch.randn(3, 1, 96, 128)
    with torch.inference_mode():
        torch.testing.assert_close(program.module()(x), model(x))


@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize(
    "queries,keys,heads,dim", [(64, 64, 1, 8), (256, 16, 4, 16), (33, 7, 2, 4)]
)
def test_attention_matches_naive_softmax(impl, queries, keys, heads, dim):
    torch.manual_seed(0)
    q = torch.randn(2, heads, queries, dim)
    k = torch.randn(2, heads, keys, dim)
    v = torch.randn(2, heads, keys, dim)
    out = attention(q, k, v, impl)
    torch.testing.assert_close(out.double(), naive_attention(q, k, v), rtol=1e-4, atol=1e-5)


def _reference_module_attention(module: MultiHeadAttention2d, query, context):
    """The module's computation re-derived by hand: pool, position, norm, project, attend."""
    height, width = query.shape[-2:]
    query = module.query_position(F.avg_pool2d(query, module.query_reduction))
    context = query if context is None else context
    reduction = module.reduction // (module.query_reduction if context is query else 1)
    context = module.context_position(F.avg_pool2d(context, reduction))
    q = module.to_q(module.query_norm(to_tokens(query)))
    k, v = module.to_kv(module.context_norm(to_tokens(context))).chunk(2, dim=-1)
    split = lambda t: t.unflatten(-1, (module.heads, module.head_dim)).transpose(1, 2)  # noqa: E731
    out = naive_attention(split(q), split(k), split(v)).float()
    out = module.proj(out.transpose(1, 2).flatten(2))
    out = to_map(out, query.shape[-2], query.shape[-1])
    return F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)


@pytest.mark.parametrize(
    "reduction,query_reduction,cross",
    [(1, 1, False), (1, 1, True), (4, 1, False), (4, 2, False), (8, 4, True)],
)
def test_attention_module_matches_reference(reduction, query_reduction, cross):
    torch.manual_seed(0)
    module = MultiHeadAttention2d(
        8,
        6 if cross else None,
        heads=2,
        head_dim=4,
        reduction=reduction,
        query_reduction=query_reduction,
    ).eval()
    query = torch.randn(2, 8, 16, 24)
    context = torch.randn(2, 6, 16, 24) if cross else None
    with torch.inference_mode():
        out = module(query, context)
        expected = _reference_module_attention(module, query, context)
    assert out.shape == (2, 8, 16, 24)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_no_reduction_is_full_global_attention():
    """Every output pixel depends on every input pixel, including the farthest corner."""
    torch.manual_seed(0)
    module = MultiHeadAttention2d(4, 4, heads=1, head_dim=4).eval()
    query = torch.randn(1, 4, 16, 16, requires_grad=True)
    module(query)[0, :, 0, 0].sum().backward()
    assert (query.grad[0].abs().sum(0) > 0).all()


def test_msag_attention_is_really_used():
    model = tiny("msag_unet").eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.inference_mode():
        with_attention = model(x)
        handles = [
            m.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
            for m in model.modules()
            if isinstance(m, MultiHeadAttention2d)
        ]
        without_attention = model(x)
    for handle in handles:
        handle.remove()
    assert len(handles) == 9  # 5 encoder levels + 4 skip gates
    assert (with_attention - without_attention).abs().max() > 1e-3


@pytest.mark.parametrize(
    "height,width,padded", [(256, 256, (256, 256)), (250, 300, (256, 304)), (17, 1, (32, 16))]
)
def test_pad_to_stride_round_trip(height, width, padded):
    x = torch.randn(1, 1, height, width)
    out, crop = pad_to_stride(x, 16)
    assert out.shape[-2:] == padded
    assert torch.equal(out[crop], x)


def test_flops_count_convolutions_and_attention():
    plain = tiny("unet")
    # Convolutions only: exactly 4x the FLOPs at twice the side.
    assert count_flops(plain, 128, 128) == 4 * count_flops(plain, 64, 64)
    msag = tiny("msag_unet", attention_levels=[4], gate_levels=[])
    extra = count_flops(msag, 64, 64) - count_flops(plain, 64, 64)
    # Bottleneck 4x4 = 16 tokens, 16 channels, 4 heads of 4: q/kv/proj linears + two matmuls.
    tokens, channels, inner = 16, 16, 16
    linears = 2 * tokens * channels * (inner + 2 * inner) + 2 * tokens * inner * channels
    matmuls = 4 * tokens * tokens * inner
    depthwise = 2 * 9 * channels * tokens  # the positional-encoding convolution
    assert extra == linears + matmuls + depthwise


def test_attention_summary():
    assert attention_summary(tiny("unet").config) == "none"
    assert attention_summary(tiny("msag_unet").config) == "enc 0-4 + msag gates 0-3"
    config = tiny("msag_unet", attention_levels=[0, 1, 3], gate_levels=[2]).config
    assert attention_summary(config) == "enc 0-1,3 + msag gates 2"


def test_cli_prints_a_row_per_model(capsys):
    from lungseg.cli import main

    assert main(["models", "--sizes", "32"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert f"\n{name} " in out
    assert "GFLOPs@32" in out and "2 x multiply-accumulates" in out


def test_the_stem_works_at_full_resolution_without_a_full_resolution_convolution():
    """msag_unet_cpu folds 2x2 pixels into channels first: no conv sees the 256x256 grid, yet
    the logits come back at the input's size (the pixel-shuffle head)."""
    model = create_model("msag_unet_cpu").eval()
    assert model.stride == 16 and model.config["stem_stride"] == 2
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.inference_mode():
        out = model(torch.randn(1, 1, 256, 256))
    for hook in hooks:
        hook.remove()
    assert out.shape == (1, 1, 256, 256)
    assert max(seen) == 128


def test_configs_written_before_the_stem_rebuild_their_own_architecture():
    """A weights file from before ``stem_stride`` existed (the 0.55 M, 5-level, width-8 network)
    has no such key; it must load as the stride-1 network it was trained as."""
    config = create_model("msag_unet_cpu", stem_stride=1, depth=5, base_width=8).config
    del config["stem_stride"]
    model = build_from_config(config)
    assert model.config["stem_stride"] == 1 and isinstance(model.stem, torch.nn.Identity)
    assert model.encoder[0][0][0][0].in_channels == 1  # the first conv sees the image itself
    assert model.stride == 16
