"""One prediction path: what ``lungseg evaluate`` reports is the score of the masks
``lungseg predict`` writes, for the same weights and settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungseg.cli import main
from lungseg.data.dataset import load_full_mask
from lungseg.data.discovery import Pair
from lungseg.evaluate import evaluate
from lungseg.inference import FailedInput, Segmentation, Segmenter
from lungseg.metrics import MetricAccumulator, dice

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def pairs(test_split_pairs: list[Pair]) -> list[Pair]:
    montgomery = [p for p in test_split_pairs if p.source == "montgomery"][:2]
    shenzhen = [p for p in test_split_pairs if p.source == "shenzhen"][:2]
    return montgomery + shenzhen


@pytest.mark.parametrize("postprocess", [True, False])
def test_evaluate_scores_exactly_the_masks_predict_writes(
    pairs: list[Pair], tmp_path: Path, postprocess: bool
) -> None:
    out = tmp_path / "out"
    flags = [] if postprocess else ["--no-postprocess"]
    images = [str(pair.image) for pair in pairs]
    assert main(["predict", *images, "-o", str(out), "--precision", "fp32", "--quiet", *flags]) == 0
    written = MetricAccumulator()
    for pair in pairs:
        mask = np.asarray(Image.open(out / f"{pair.image.stem}_mask.png")) > 0
        written.update(mask, load_full_mask(pair), id=pair.id, source=pair.source)

    segmenter = Segmenter.from_pretrained(precision="fp32")
    reported = evaluate(segmenter, pairs, progress=False, postprocess=postprocess)
    assert reported.rows() == written.rows()


def test_predict_many_keeps_input_order_and_reports_failures_in_place(
    pairs: list[Pair], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    inputs = [pairs[0].image, broken, pairs[1].image]
    segmenter = Segmenter.from_pretrained()
    results = list(segmenter.predict_many(inputs, batch_size=2, skip_failed=True))
    assert [type(r) for r in results] == [Segmentation, FailedInput, Segmentation]
    assert results[1].path == broken and "broken.png" in str(results[1])
    for pair, result in zip((pairs[0], pairs[1]), (results[0], results[2]), strict=True):
        alone = segmenter(pair.image)
        assert dice(result.mask, alone.mask) > 0.9999  # batching does not change a mask
    with pytest.raises(Exception, match="broken.png"):
        list(segmenter.predict_many(inputs))


def test_predict_and_evaluate_say_nothing_on_stderr_in_normal_use(
    pairs: list[Pair], tmp_path: Path, data_root: Path
) -> None:
    """No progress bar off a terminal, no log lines nobody asked for: stderr stays empty."""
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "lungseg"]
    predict = subprocess.run(
        [*command, "predict", str(pairs[0].image), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert predict.returncode == 0, predict.stderr
    assert predict.stderr == "" and "1 image(s) segmented" in predict.stdout
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": [pairs[0].id]}))
    evaluate = subprocess.run(
        [*command, "evaluate", "--data", str(data_root), "--split", str(split)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert evaluate.returncode == 0, evaluate.stderr
    assert evaluate.stderr == "" and "post-processed masks" in evaluate.stdout
