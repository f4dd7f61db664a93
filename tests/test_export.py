"""Export to ONNX / TorchScript and the onnxruntime backend, checked on real X-rays."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from lungseg import export
from lungseg.backends import METADATA_KEY, OnnxRuntimeModel
from lungseg.cli import main
from lungseg.data.io import read_image
from lungseg.errors import InvalidInputError, LungsegError
from lungseg.export import ExportVerificationError, export_model, load_torchscript
from lungseg.inference import Segmenter
from lungseg.metrics import dice
from lungseg.models.fold import fold_batch_norms
from lungseg.weights import shipped_weights_path

pytestmark = [
    pytest.mark.data,
    # torch 2.13 deprecates the TorchScript-based ONNX exporter and torch.jit; export.py says why
    # it still uses them.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch"),
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
]


def _test_ids(split_file: Path) -> list[str]:
    """Three test X-rays of the paper split, both hospitals: one Montgomery, two Shenzhen."""
    test = json.loads(split_file.read_text())["test"]
    montgomery = [i for i in test if i.startswith("montgomery/")]
    shenzhen = [i for i in test if i.startswith("shenzhen/")]
    return [montgomery[0], *shenzhen[:2]]


def _image_path(data_root: Path, pair_id: str) -> Path:
    source, stem = pair_id.split("/")
    return data_root / source / "images" / f"{stem}.png"


@pytest.fixture(scope="module")
def xrays(data_root: Path, split_file: Path) -> list[Path]:
    return [_image_path(data_root, pair_id) for pair_id in _test_ids(split_file)]


@pytest.fixture(scope="module")
def torch_segmenter() -> Segmenter:
    return Segmenter.from_pretrained()


@pytest.fixture(scope="module")
def cli_onnx_export(
    tmp_path_factory: pytest.TempPathFactory, xrays: list[Path]
) -> tuple[Path, int, str]:
    """``lungseg export --format onnx`` of the shipped model, checked on two real X-rays."""
    out = tmp_path_factory.mktemp("onnx") / "lungs.onnx"
    printed = io.StringIO()  # capsys is function-scoped; this export is shared by the module
    with contextlib.redirect_stdout(printed):
        code = main(
            ["export", "--format", "onnx", "-o", str(out), "--check-image", *map(str, xrays[:2])]
        )
    return out, code, printed.getvalue()


def _break_exporter(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """Make the exporter mistranslate the network: the exported logits come out 4 higher."""
    name = "_onnx_bytes" if fmt == "onnx" else "_torchscript_bytes"
    real: Callable = getattr(export, name)

    def broken(model: torch.nn.Module, info: object) -> bytes:
        shifted = copy.deepcopy(model)
        head = shifted.head  # a conv, or conv + pixel shuffle (which only moves the logits)
        conv = head[0] if isinstance(head, torch.nn.Sequential) else head
        with torch.no_grad():
            conv.bias += 4.0
        return real(shifted, info)

    monkeypatch.setattr(export, name, broken)


def test_cli_export_onnx_prints_the_checks_and_exits_0(
    cli_onnx_export: tuple[Path, int, str],
) -> None:
    path, code, printed = cli_onnx_export
    assert code == 0 and path.is_file()
    assert "Dice vs PyTorch" in printed and "max |logit diff|" in printed
    assert "batch of 2" in printed and "FAILED" not in printed
    assert printed.count(" ok") == 3  # two images alone, then both in one batch
    assert f"wrote {path}" in printed
    assert sorted(p.name for p in path.parent.iterdir()) == ["lungs.onnx"]  # no temp file left


def test_onnx_file_is_self_describing_with_dynamic_batch_and_sides(
    cli_onnx_export: tuple[Path, int, str], torch_segmenter: Segmenter
) -> None:
    path = cli_onnx_export[0]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert dims[1].dim_value == 1
    assert [d.dim_param for d in dims[2:]] == ["height", "width"]  # the quality pass may be smaller
    # ... and it runs there as torch does.
    x = torch.rand(2, 1, 192, 192, generator=torch.Generator().manual_seed(0))
    got = OnnxRuntimeModel(path)(x)
    assert got.shape == (2, len(torch_segmenter.info.labels), 192, 192)
    assert float((got - torch_segmenter.logits(x)).abs().max()) < 1e-3
    stored = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    assert stored == torch_segmenter.info.to_metadata()


def test_onnxruntime_segmenter_matches_torch_at_original_resolution(
    cli_onnx_export: tuple[Path, int, str], torch_segmenter: Segmenter, xrays: list[Path]
) -> None:
    path = cli_onnx_export[0]
    by_suffix = Segmenter.from_pretrained(path)
    named = Segmenter.from_pretrained(path, backend="onnxruntime")
    for ort_segmenter in (by_suffix, named):
        assert ort_segmenter.backend == "onnxruntime"
        assert isinstance(ort_segmenter.model, OnnxRuntimeModel)
        assert ort_segmenter.info == torch_segmenter.info
    assert torch_segmenter.backend == "torch" and isinstance(torch_segmenter.model, torch.nn.Module)
    for image_path in xrays:  # the third was not a check image of the export
        expected = torch_segmenter(image_path, postprocess=False)
        got = by_suffix(image_path, postprocess=False)
        assert got.mask.shape == (got.meta.height, got.meta.width) == expected.mask.shape
        assert dice(got.mask, expected.mask) >= 0.999
        assert np.abs(got.probabilities - expected.probabilities).max() < 1e-4


def test_every_torch_precision_and_the_folded_network_match_fp32(
    torch_segmenter: Segmenter, xrays: list[Path]
) -> None:
    """What users can pick (bf16 autocast) and what always runs (batch norms folded into the
    convolutions, channels_last) give the masks of the module as loaded, in fp32."""
    bf16 = Segmenter.from_pretrained(precision="bf16")
    for image_path in xrays:
        grey, _ = read_image(image_path)
        batch = torch_segmenter.prepare(grey).unsqueeze(0)
        with torch.inference_mode():
            as_loaded = torch_segmenter.model(batch)  # unfolded, NCHW, fp32
        folded = torch_segmenter.logits(batch)
        assert (folded - as_loaded).abs().max() < 1e-3
        for channel in range(as_loaded.shape[1]):  # lungs and heart
            assert dice(folded[0, channel] > 0, as_loaded[0, channel] > 0) >= 0.999
        expected = torch_segmenter(image_path, postprocess=False)
        got = bf16(image_path, postprocess=False)
        assert dice(got.mask, expected.mask) >= 0.999, image_path.name
        assert dice(got.heart, expected.heart) >= 0.999, image_path.name
        # Its weights stored in bf16 once compute what autocast computes from fp32 weights.
        reference = fold_batch_norms(bf16.model).to(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            expected_logits = reference(batch.contiguous(memory_format=torch.channels_last))
        assert torch.equal(bf16.logits(batch), expected_logits.float())
    convolutions = [m for m in bf16._network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {m.weight.dtype for m in convolutions} == {torch.bfloat16}
    assert {p.dtype for p in bf16.model.parameters()} == {torch.float32}  # as loaded


def test_onnxruntime_runs_a_batch_of_two(
    cli_onnx_export: tuple[Path, int, str], torch_segmenter: Segmenter, xrays: list[Path]
) -> None:
    ort_segmenter = Segmenter.from_pretrained(cli_onnx_export[0])
    images = [read_image(path)[0] for path in xrays[1:]]
    batch = torch.stack([ort_segmenter.prepare(image) for image in images])
    logits = ort_segmenter.logits(batch)
    channels = len(ort_segmenter.info.labels)  # lungs (and heart) as the weights say
    assert logits.shape == (2, channels, *ort_segmenter.input_size)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, torch_segmenter.logits(batch), atol=1e-3)
    got = ort_segmenter.predict_arrays(images, postprocess=False)
    expected = torch_segmenter.predict_arrays(images, postprocess=False)
    for a, b in zip(got, expected, strict=True):
        assert dice(a.mask, b.mask) >= 0.999


def test_torchscript_export_round_trips(
    tmp_path: Path, torch_segmenter: Segmenter, xrays: list[Path]
) -> None:
    out = tmp_path / "lungs.pt"
    report = export_model(out, "torchscript", [xrays[0]])
    assert out.is_file() and report.size_bytes == out.stat().st_size
    assert [c.batch_size for c in report.checks] == [1, 2]
    assert "mirrored" in report.checks[1].label  # one check image: batched with its mirror
    assert all(c.passed and c.dice >= 0.999 for c in report.checks)
    module, info = load_torchscript(out)
    assert info == torch_segmenter.info
    images = [read_image(path)[0] for path in xrays[:2]]
    batch = torch.stack([torch_segmenter.prepare(image) for image in images])
    with torch.no_grad():
        assert torch.allclose(module(batch), torch_segmenter.logits(batch), atol=1e-4)


def test_failed_verification_raises_and_writes_nothing(
    tmp_path: Path, xrays: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _break_exporter(monkeypatch, "onnx")
    out = tmp_path / "lungs.onnx"
    with pytest.raises(ExportVerificationError, match="was not written") as caught:
        export_model(out, "onnx", [xrays[0]])
    assert caught.value.checks and not any(c.passed for c in caught.value.checks)
    assert all(
        c.dice < 0.999 and c.max_abs_logit_diff == pytest.approx(4.0, abs=1e-3)
        for c in caught.value.checks
    )
    assert list(tmp_path.iterdir()) == []


def test_cli_export_exits_1_and_writes_nothing_when_a_check_fails(
    tmp_path: Path,
    xrays: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _break_exporter(monkeypatch, "torchscript")
    out = tmp_path / "lungs.pt"
    code = main(
        ["export", "--format", "torchscript", "-o", str(out), "--check-image", str(xrays[0])]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "Dice vs PyTorch" in captured.out
    assert "lungseg export: error:" in captured.err and "Traceback" not in captured.err
    assert list(tmp_path.iterdir()) == []


def test_cli_export_rejects_a_check_file_that_is_no_xray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    out = tmp_path / "lungs.onnx"
    code = main(["export", "--format", "onnx", "-o", str(out), "--check-image", str(bad)])
    assert code == 1
    assert "notes.png" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"backend": "onnxruntime"}, LungsegError, "lungseg export"),
        ({"backend": "tensorrt"}, LungsegError, "unknown backend"),
        ({"weights": "model.onnx", "backend": "torch"}, InvalidInputError, "onnxruntime"),
        ({"weights": "missing.onnx"}, InvalidInputError, "not found"),
        ({"weights": "shipped", "backend": "onnxruntime"}, InvalidInputError, "not a loadable"),
    ],
)
def test_from_pretrained_explains_a_wrong_backend_or_file(
    kwargs: dict, error: type[Exception], message: str
) -> None:
    if kwargs.get("weights") == "shipped":  # a safetensors file handed to onnxruntime
        kwargs = {**kwargs, "weights": shipped_weights_path()}
    with pytest.raises(error, match=message):
        Segmenter.from_pretrained(**kwargs)


def test_onnxruntime_model_refuses_what_it_cannot_run(
    cli_onnx_export: tuple[Path, int, str],
) -> None:
    path = cli_onnx_export[0]
    with pytest.raises(LungsegError, match="fp32"):
        OnnxRuntimeModel(path, precision="bf16")
    runner = OnnxRuntimeModel(path)
    with pytest.raises(LungsegError, match="Segmenter.prepare"):
        runner(torch.zeros(1, 3, 256, 256))


def test_cli_evaluate_with_onnxruntime_gives_the_torch_dice(
    cli_onnx_export: tuple[Path, int, str],
    data_root: Path,
    split_file: Path,
    tmp_path: Path,
) -> None:
    small = tmp_path / "three.json"
    small.write_text(json.dumps({"train": [], "val": [], "test": _test_ids(split_file)}))
    results = {}
    for backend, weights in (
        ("torch", []),
        ("onnxruntime", ["--weights", str(cli_onnx_export[0])]),
    ):
        out = tmp_path / f"{backend}.json"
        common = ["--data", str(data_root), "--split", str(small), "--workers", "0"]
        code = main(["evaluate", *weights, "--backend", backend, *common, "--json", str(out)])
        assert code == 0
        results[backend] = json.loads(out.read_text())
    assert results["torch"]["n"] == results["onnxruntime"]["n"] == 3
    assert results["onnxruntime"]["dice"] == pytest.approx(results["torch"]["dice"], abs=0.001)
    assert results["torch"]["dice"] > 0.9  # a real model on real X-rays, not two empty masks


def test_a_compiled_network_gives_the_eager_masks(
    torch_segmenter: Segmenter, xrays: list[Path]
) -> None:
    """``compile=True`` (what ``predict --compile`` asks for) computes the same function."""
    compiled = Segmenter.from_pretrained(compile=True)
    expected = torch_segmenter(xrays[0], postprocess=False)
    got = compiled(xrays[0], postprocess=False)
    assert dice(got.mask, expected.mask) >= 0.999
    assert dice(got.heart, expected.heart) >= 0.999


def test_a_network_that_cannot_compile_runs_eager_and_says_so(
    torch_segmenter: Segmenter,
    xrays: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def no_compiler(module: torch.nn.Module, **_: object) -> Callable:
        def fail(batch: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

        return fail

    monkeypatch.setattr(torch, "compile", no_compiler)
    segmenter = Segmenter.from_pretrained(compile=True)
    got = segmenter(xrays[0], postprocess=False)
    assert "torch.compile failed (RuntimeError: InvalidCxxCompiler" in caplog.text
    expected = torch_segmenter(xrays[0], postprocess=False)
    assert np.array_equal(got.mask, expected.mask)
