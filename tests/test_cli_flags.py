"""Flags as users meet them: help with defaults, one-line usage errors, results.csv columns."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_dicom_file, xray_dataset
from PIL import Image

from lungseg.cli import HelpFormatter, build_parser, describe_runtime, main
from lungseg.predict import collect_inputs
from lungseg.predict.outputs import COLUMNS, DICOM_COLUMNS, columns
from lungseg.predict.runner import dicom_ids

# --- --help: every option explained, every default shown ------------------------------------


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser by its name as typed (``data check`` included)."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix}{name}"] = sub
                    walk(sub, f"{prefix}{name} ")

    walk(build_parser(), "")
    return found


COMMANDS = sorted(command_parsers())


def options_of(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    return [action for action in parser._actions if not isinstance(action, skip)]


def shown_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text ``--help`` prints for ``action`` (defaults and %-fields expanded)."""
    return parser._get_formatter()._expand_help(action)


def test_every_command_is_covered():
    assert {"predict", "evaluate", "export", "models", "train", "serve", "data check"} <= set(
        COMMANDS
    )
    assert all(parser.formatter_class is HelpFormatter for parser in command_parsers().values())


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_a_default_for_every_option_that_has_one(command: str):
    parser = command_parsers()[command]
    for action in options_of(parser):
        default = action.default
        if default is None or default is argparse.SUPPRESS or default == []:
            continue  # nothing to show (the help says what happens without it, if anything)
        if action.const is True and default is False:
            continue  # a store_true switch: off unless given
        text = shown_help(parser, action)
        assert "default" in text, f"{command} {action.option_strings}: {text!r}"
        assert "default: True" not in text and "default: False" not in text, text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_text(command: str):
    parser = command_parsers()[command]
    missing = [a.option_strings or a.dest for a in options_of(parser) if not a.help]
    assert not missing, f"{command}: options without help: {missing}"


def test_printed_help_reads_like_the_defaults():
    predict = command_parsers()["predict"].format_help()
    for shown in ("--batch-size N", "(default: 8)", "(default: auto)", "--json PATH"):
        assert shown in predict
    assert "(default: True)" not in predict and "default: post-" in predict
    evaluate = command_parsers()["evaluate"].format_help()
    assert "(default: 8)" in evaluate and "(default: auto)" in evaluate


def test_predict_and_evaluate_share_the_runtime_and_loader_flags():
    parser = build_parser()
    for argv in (["predict", "x", "-o", "o"], ["evaluate", "--data", "d"]):
        args = parser.parse_args(argv)
        assert (args.device, args.precision) == ("auto", "auto")
        assert args.batch_size >= 1 and args.workers == 1 and args.json is None
        assert parser.parse_args([*argv, "--json", "t.json"]).json == Path("t.json")
        assert parser.parse_args([*argv, "--precision", "auto"]).precision == "auto"


# --- wrong arguments: one line on stderr, exit code 2, no traceback ---------------------------


@pytest.fixture
def an_input(tmp_path: Path) -> Path:
    """An input path that exists (never decoded: each case fails before that)."""
    path = tmp_path / "in.png"
    path.write_bytes(b"not decoded")
    return path


def wrong_arguments(tmp_path: Path, an_input: Path) -> dict[str, list[str]]:
    a_file = tmp_path / "taken.txt"
    a_file.write_text("a file where a folder should be")
    out = str(tmp_path / "out")
    predict = ["predict", str(an_input), "-o"]
    return {
        "out_onto_a_file": [*predict, str(a_file)],
        "batch_size_0": [*predict, out, "--batch-size", "0"],
        "batch_size_text": [*predict, out, "--batch-size", "four"],
        "negative_workers": [*predict, out, "--workers", "-1"],
        "missing_input": ["predict", str(tmp_path / "nope.png"), "-o", out],
        "glob_matching_nothing": ["predict", str(tmp_path / "*.dcm"), "-o", out],
        "json_onto_a_folder": [*predict, out, "--json", str(tmp_path)],
        "unknown_precision": [*predict, out, "--precision", "fp8"],
        "evaluate_batch_size_0": ["evaluate", "--data", str(tmp_path), "--batch-size", "0"],
        "evaluate_missing_data": ["evaluate", "--data", str(tmp_path / "nowhere")],
        "evaluate_threshold_above_1": ["evaluate", "--data", str(tmp_path), "--threshold", "2"],
        "export_onto_a_folder": [
            "export",
            "--format",
            "onnx",
            "-o",
            str(tmp_path),
            "--check-image",
            str(an_input),
        ],
    }


WRONG = [
    "out_onto_a_file",
    "batch_size_0",
    "batch_size_text",
    "negative_workers",
    "missing_input",
    "glob_matching_nothing",
    "json_onto_a_folder",
    "unknown_precision",
    "evaluate_batch_size_0",
    "evaluate_missing_data",
    "evaluate_threshold_above_1",
    "export_onto_a_folder",
]

SUBPROCESS_CASES = ("out_onto_a_file", "batch_size_0", "missing_input")


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_wrong_argument_is_one_line_and_exit_2_from_the_console(
    case: str, tmp_path: Path, an_input: Path
):
    argv = wrong_arguments(tmp_path, an_input)[case]
    done = subprocess.run(
        [sys.executable, "-m", "lungseg", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lungseg {argv[0]}: error: "), done.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


def exit_code(argv: list[str]) -> int:
    """``lungseg ARGV`` in-process: a usage error found while parsing exits (SystemExit), one
    found by the handler is returned; both are 2."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


@pytest.mark.parametrize("case", WRONG)
def test_wrong_argument_is_one_line_and_exit_2(
    case: str, tmp_path: Path, an_input: Path, capsys: pytest.CaptureFixture[str]
):
    argv = wrong_arguments(tmp_path, an_input)[case]
    code = exit_code(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lungseg {argv[0]}: error: "), captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("out_onto_a_file", ("-o/--out", "taken.txt", "is a file")),
        ("batch_size_0", ("--batch-size", "'0'", "at least 1")),
        ("negative_workers", ("--workers", "'-1'", "at least 0")),
        ("missing_input", ("nope.png", "no such file")),
        ("evaluate_missing_data", ("--data", "nowhere", "no such file")),
    ],
)
def test_usage_errors_name_the_flag_and_the_value(
    case: str, words: tuple[str, ...], tmp_path: Path, an_input: Path, capsys
):
    assert exit_code(wrong_arguments(tmp_path, an_input)[case]) == 2
    err = capsys.readouterr().err
    assert all(word in err for word in words), err


# --- results.csv and --json -------------------------------------------------------------------


def test_dicom_ids_reads_the_three_tags_and_never_fails(tmp_path: Path):
    pixels = np.zeros((32, 32), np.uint8)
    ds = xray_dataset(pixels, StudyInstanceUID="1.2.3", PatientID="P-7")
    full = dicom_ids(write_dicom_file(tmp_path / "a.dcm", ds))
    assert full == {
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "study_instance_uid": "1.2.3",
        "patient_id": "P-7",
    }
    bare = dicom_ids(write_dicom_file(tmp_path / "b.dcm", xray_dataset(pixels)))
    assert bare["study_instance_uid"] == "" and bare["patient_id"] == ""
    (tmp_path / "c.png").write_bytes(b"\x89PNG not dicom")
    assert dicom_ids(tmp_path / "c.png") == dict.fromkeys(DICOM_COLUMNS, "")
    assert dicom_ids(tmp_path / "missing.dcm") == dict.fromkeys(DICOM_COLUMNS, "")


def test_columns_have_spacing_in_two_and_drop_the_ids_when_anonymized():
    assert "pixel_spacing_mm" not in COLUMNS
    assert {"pixel_spacing_row_mm", "pixel_spacing_col_mm"} <= set(COLUMNS)
    assert {"model", "model_version", "threshold", "postprocess"} <= set(COLUMNS)
    assert {"heart_area_px", "heart_area_cm2", "ctr", "cardiomegaly"} <= set(COLUMNS)
    assert set(DICOM_COLUMNS) <= set(columns()) and not set(DICOM_COLUMNS) & set(columns(True))


SPACING = (0.35, 0.3)  # (row, column) mm: unequal, so a swap would show


@pytest.fixture(scope="module")
def mixed_inputs(test_split_pairs: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real PNG X-rays and a DICOM made of a third one, with UIDs, PatientID and spacing."""
    folder = tmp_path_factory.mktemp("mixed")
    for pair in test_split_pairs[:2]:
        shutil.copy(pair.image, folder / pair.image.name)
    grey = np.asarray(Image.open(test_split_pairs[2].image).convert("L"))
    ds = xray_dataset(
        grey,
        StudyInstanceUID="1.2.826.0.1.3680043.2.1125.1",
        PatientID="MCU-0042",
        PixelSpacing=list(SPACING),
    )
    write_dicom_file(folder / "chest.dcm", ds)
    return folder


@pytest.fixture(scope="module")
def predicted(mixed_inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("predicted") / "out"
    table = out.parent / "table.json"
    code = main(["predict", str(mixed_inputs), "-o", str(out), "--json", str(table), "--quiet"])
    assert code == 0
    return out


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.mark.data
def test_results_csv_columns_and_row_order(predicted: Path, mixed_inputs: Path):
    from lungseg.inference import Segmenter

    info = Segmenter.from_pretrained().info
    header, rows = read_rows(predicted / "results.csv")
    assert header == list(COLUMNS)
    assert [row["name"] for row in rows] == [im.name for im in collect_inputs([mixed_inputs])]
    for row in rows:
        assert row["status"] == "ok"
        assert row["model"] == info.model_config["name"]
        assert row["model_version"] == info.lungseg_version
        assert float(row["threshold"]) == pytest.approx(info.threshold)
        assert row["postprocess"] == "True"
    (dicom,) = [row for row in rows if row["name"] == "chest"]
    pngs = [row for row in rows if row is not dicom]
    assert dicom["study_instance_uid"] == "1.2.826.0.1.3680043.2.1125.1"
    assert dicom["patient_id"] == "MCU-0042" and dicom["sop_instance_uid"].startswith("1.2.")
    spacing = float(dicom["pixel_spacing_row_mm"]), float(dicom["pixel_spacing_col_mm"])
    assert spacing == SPACING
    for column in ("area_cm2", "right_area_cm2", "left_area_cm2"):
        whole, _, decimals = dicom[column].partition(".")
        assert len(decimals) == 2 and float(dicom[column]) > 0  # 0.01 cm2
    expected_cm2 = int(dicom["area_px"]) * SPACING[0] * SPACING[1] / 100
    assert float(dicom["area_cm2"]) == pytest.approx(expected_cm2, abs=0.005)
    for row in pngs:  # no DICOM ids, no stated spacing: empty cells
        assert all(row[column] == "" for column in DICOM_COLUMNS)
        assert row["pixel_spacing_row_mm"] == row["pixel_spacing_col_mm"] == ""
        assert row["area_cm2"] == "" and int(row["area_px"]) > 0


@pytest.mark.data
def test_json_path_gets_the_table_and_anonymize_drops_the_ids(predicted: Path, mixed_inputs):
    document = json.loads((predicted.parent / "table.json").read_text())
    _, rows = read_rows(predicted / "results.csv")
    assert [image["name"] for image in document["images"]] == [row["name"] for row in rows]
    assert document["summary"]["ok"] == len(rows) and document["summary"]["postprocess"] is True
    (first,) = [image for image in document["images"] if image["name"] == "chest"]
    assert first["patient_id"] == "MCU-0042" and first["pixel_spacing_row_mm"] == SPACING[0]
    assert not (predicted / "results.json").exists()  # the JSON goes where --json says

    # A rerun with --anonymize: nothing to segment again, the table loses the three columns.
    anonymous = predicted.parent / "anonymous.json"
    folder = str(mixed_inputs)
    argv = ["predict", folder, "-o", str(predicted), "--anonymize", "--json", str(anonymous)]
    assert main([*argv, "--quiet"]) == 0
    header, rows = read_rows(predicted / "results.csv")
    assert header == list(columns(anonymize=True))
    text = (predicted / "results.csv").read_text() + anonymous.read_text()
    assert "MCU-0042" not in text and "1.2.826.0.1.3680043.2.1125.1" not in text
    assert json.loads(anonymous.read_text())["summary"]["anonymized"] is True

    # Images an --anonymize run did keep no ids; a rerun without it reads them from the files.
    assert main([*argv, "--quiet", "--overwrite"]) == 0
    journal = (predicted / ".lungseg-predict" / "chest.json").read_text()
    assert "MCU-0042" not in journal
    assert main(["predict", folder, "-o", str(predicted), "--quiet"]) == 0
    _, rows = read_rows(predicted / "results.csv")
    assert [row["patient_id"] for row in rows if row["name"] == "chest"] == ["MCU-0042"]


def test_the_runtime_auto_chose_is_described_in_one_line():
    from types import SimpleNamespace

    import torch

    from lungseg.runtime import Runtime

    def torch_segmenter(dtype: torch.dtype | None) -> SimpleNamespace:
        runtime = Runtime(torch.device("cpu"), dtype)
        return SimpleNamespace(backend="torch", runtime=runtime, precision_choice=None)

    assert describe_runtime(torch_segmenter(None)) == "torch on cpu, fp32"
    assert describe_runtime(torch_segmenter(torch.bfloat16)) == "torch on cpu, bf16 autocast"
    session = SimpleNamespace(get_providers=lambda: ["CUDAExecutionProvider"])
    onnx = SimpleNamespace(backend="onnxruntime", model=SimpleNamespace(session=session))
    assert describe_runtime(onnx) == "onnxruntime with CUDAExecutionProvider, fp32"


def test_inputs_keep_the_order_they_were_given_in(tmp_path: Path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for path in (tmp_path / "b.png", tmp_path / "a.png", folder / "d.png", folder / "c.png"):
        Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(path)
    given = [tmp_path / "b.png", folder, tmp_path / "a.png"]
    assert [im.name for im in collect_inputs(given)] == ["b", "c", "d", "a"]
