"""The REST API (`lungseg serve`) with FastAPI's TestClient, on real X-rays and on bad input."""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from dicom_factory import write_dicom_file, xray_dataset
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e .[serve]")

from fastapi.testclient import TestClient  # noqa: E402

from lungseg.cli import build_parser, main  # noqa: E402
from lungseg.cli.serve import settings_from_args  # noqa: E402
from lungseg.data.dataset import load_full_mask  # noqa: E402
from lungseg.errors import LungsegError  # noqa: E402
from lungseg.inference import Segmenter  # noqa: E402
from lungseg.metrics import dice  # noqa: E402
from lungseg.models import create_model  # noqa: E402
from lungseg.overlay import HEART_COLOR, THORAX_COLOR  # noqa: E402
from lungseg.png import encode_png  # noqa: E402
from lungseg.serve import ServeSettings, create_app  # noqa: E402
from lungseg.serve.app import header_card  # noqa: E402
from lungseg.serve.results import ResultStore  # noqa: E402
from lungseg.serve.segment import hex_colour, segment_upload  # noqa: E402
from lungseg.weights import WeightsInfo, load_weights, save_weights, shipped_weights_path  # noqa: E402

CAVEAT = "AP and supine films enlarge the heart's shadow"
HEART_FIELDS = {
    "heart_area_px",
    "heart_area_cm2",
    "ctr",
    "cardiomegaly",
    "cardiomegaly_caveat",
    "extents",
}


@pytest.fixture(scope="module")
def pairs(test_split_pairs: list) -> list:
    """The first test-split pair of each source (Montgomery and Shenzhen)."""
    firsts: dict[str, object] = {}
    for pair in test_split_pairs:
        firsts.setdefault(pair.source, pair)
    return [firsts[source] for source in sorted(firsts)]


@pytest.fixture(scope="module")
def xray(pairs: list) -> Path:
    return pairs[0].image


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One server with the default limits, shared by the tests that do not change them."""
    app = create_app(ServeSettings(temp_dir=tmp_path_factory.mktemp("serve")))
    with TestClient(app) as test_client:
        yield test_client


def heart_model() -> tuple[torch.nn.Module, WeightsInfo]:
    """A tiny untrained model with a heart channel (what it segments is arbitrary)."""
    torch.manual_seed(0)
    model = create_model("msag_unet_cpu", out_channels=2)
    return model.eval(), WeightsInfo(
        model_config=model.config,
        image_size=(64, 64),
        threshold=0.42,
        labels=("lungs", "heart"),
        extra={"epochs": 3, "val_dice_original_res": 0.5},
    )


@pytest.fixture(scope="module")
def heart_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A server whose weights have a heart channel."""
    folder = tmp_path_factory.mktemp("heart-serve")
    weights = folder / "heart_model.safetensors"
    save_weights(weights, *heart_model())
    with TestClient(create_app(ServeSettings(weights=weights, temp_dir=folder))) as test_client:
        yield test_client


def synthetic_png(height: int = 96, width: int = 128) -> bytes:
    """A grey image of ``height x width`` (not square, so a transposed layer would show)."""
    rng = np.random.default_rng(0)
    return encode_png(rng.integers(0, 256, size=(height, width), dtype=np.uint8))


def known_logits(batch: torch.Tensor) -> torch.Tensor:
    """Stands in for the network: two lungs and a wide heart on the 64 x 64 grid."""
    logits = torch.full((batch.shape[0], 2, 64, 64), -10.0)
    logits[:, 0, 10:54, 6:28] = 10.0  # the patient's right lung (image left)
    logits[:, 0, 10:54, 36:58] = 10.0  # the left lung
    logits[:, 1, 30:50, 18:46] = 10.0  # the heart: 28 of the thorax's 52 columns
    return logits


def upload(client: TestClient, data: bytes, name: str = "chest.png", query: str = ""):
    return client.post(f"/v1/segment{query}", files={"file": (name, data)})


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def assert_json_error(response, status: int, *words: str) -> str:
    """The answer is ``{"detail": message}`` with the status, naming ``words``, no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail
    assert "Traceback" not in response.text and 'File "' not in response.text
    return detail


# --- real X-rays ------------------------------------------------------------------------------


def test_segment_returns_areas_sides_and_a_mask_that_matches_the_truth(client, pairs):
    for pair in pairs:
        response = upload(client, pair.image.read_bytes(), pair.image.name)
        assert response.status_code == 200, response.text
        body = response.json()
        truth = load_full_mask(pair)
        assert (body["image"]["height"], body["image"]["width"]) == truth.shape
        assert body["image"]["format"] == "png"
        assert body["file"] == pair.image.name
        lungs = body["lungs"]
        assert lungs["area_px"] == lungs["right_area_px"] + lungs["left_area_px"]
        assert lungs["right_area_px"] > 0 and lungs["left_area_px"] > 0
        assert lungs["area_cm2"] is None  # a PNG states no pixel spacing
        assert lungs["components"] <= 2  # post-processed by default
        assert lungs["quality"] in ("ok", "check")
        assert body["model"]["name"] == "lungseg_cxr"
        assert body["model"]["architecture"] == "msag_unet_cpu"
        assert set(body["timing_ms"]) == {"queue", "decode", "segment", "encode", "store", "total"}
        assert body["mask_png_base64"] is None

        mask = decode_png(client.get(body["results"]["mask"]).content)
        assert mask.shape == truth.shape and set(np.unique(mask)) <= {0, 255}
        assert int(np.count_nonzero(mask)) == lungs["area_px"]
        assert dice(mask > 0, truth) > 0.9, pair.id  # a real segmentation, not a placeholder

        overlay = decode_png(client.get(body["results"]["overlay"]).content)
        assert overlay.shape == (*truth.shape, 3)
        image = decode_png(client.get(body["results"]["image"]).content)
        assert image.shape == truth.shape and image.dtype == np.uint8
        for layer in ("labels", "outline"):
            rgba = decode_png(client.get(body["results"][layer]).content)
            assert rgba.shape == (*truth.shape, 4)
        labels = decode_png(client.get(body["results"]["labels"]).content)
        assert int(np.count_nonzero(labels[..., 3])) == lungs["area_px"]
        # The patient's right lung is on the image's left, painted in the "right" colour.
        right = tuple(int(body["colours"]["right"][i : i + 2], 16) for i in (1, 3, 5))
        right_pixels = np.all(labels[..., :3] == right, axis=-1) & (labels[..., 3] > 0)
        assert int(right_pixels.sum()) == lungs["right_area_px"]
        assert np.nonzero(right_pixels)[1].mean() < truth.shape[1] / 2


def test_format_png_and_base64_give_the_same_mask_as_the_result_url(client, xray):
    data = xray.read_bytes()
    as_json = upload(client, data, xray.name).json()
    url_mask = client.get(as_json["results"]["mask"]).content

    direct = upload(client, data, xray.name, "?format=png")
    assert direct.status_code == 200
    assert direct.headers["content-type"] == "image/png"
    assert f'filename="{xray.stem}_mask.png"' in direct.headers["content-disposition"]
    np.testing.assert_array_equal(decode_png(direct.content), decode_png(url_mask))

    kept = client.get("/healthz").json()["results_kept"]
    inline = upload(client, data, xray.name, "?images=base64").json()
    assert inline["results"] is None
    assert client.get("/healthz").json()["results_kept"] == kept  # nothing stored
    np.testing.assert_array_equal(
        decode_png(base64.b64decode(inline["mask_png_base64"])), decode_png(url_mask)
    )
    overlay = decode_png(base64.b64decode(inline["overlay_png_base64"]))
    assert overlay.shape == (*decode_png(url_mask).shape, 3)


def test_dicom_upload_gets_areas_in_cm2(client, xray, tmp_path):
    pixels = np.asarray(Image.open(xray).convert("L"), dtype=np.uint16) * 16  # 12-bit
    ds = xray_dataset(pixels, sop_class=SecondaryCaptureImageStorage, PixelSpacing=[0.7, 0.7])
    path = write_dicom_file(tmp_path / "chest", ds)  # no suffix: found by content

    body = upload(client, path.read_bytes(), "chest").json()
    assert body["image"]["format"] == "dicom"
    assert body["image"]["pixel_spacing_mm"] == [0.7, 0.7]
    lungs = body["lungs"]
    assert lungs["area_cm2"] == pytest.approx(lungs["area_px"] * 0.49 / 100)
    assert lungs["right_area_cm2"] + lungs["left_area_cm2"] == pytest.approx(lungs["area_cm2"])


def test_postprocess_can_be_turned_off(client, pairs):
    areas = {}
    for flag in ("true", "false"):
        body = upload(client, pairs[1].image.read_bytes(), query=f"?postprocess={flag}").json()
        assert body["postprocess"] is (flag == "true")
        areas[flag] = body["lungs"]
    # Post-processing only removes specks and fills holes: never more regions than without.
    assert areas["true"]["components"] <= min(2, areas["false"]["components"])


# --- bad input --------------------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width x height``, with no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + iend


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("text renamed .png", 415, ["scan.png", "not a supported image"]),
        ("pdf", 415, ["scan.png", "not a supported image"]),
        ("truncated png", 422, ["scan.png", "PNG"]),
        ("empty file", 422, ["scan.png", "empty"]),
        ("8x8 png", 422, ["scan.png", "at least 16 pixels"]),
        ("10000x10000 png header", 413, ["scan.png", "over the limit of 36,000,000"]),
    ],
)
def test_bad_uploads_get_a_clear_4xx(client, xray, case, status, words):
    data = {
        "text renamed .png": b"patient list\nname,age\n",
        "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        "truncated png": xray.read_bytes()[: xray.stat().st_size // 2],
        "empty file": b"",
        "8x8 png": tiny_png(),
        "10000x10000 png header": png_header_only(10_000, 10_000),
    }[case]
    assert_json_error(upload(client, data, "scan.png"), status, *words)


def test_missing_file_is_422_with_a_message(client, xray):
    assert_json_error(client.post("/v1/segment"), 422, "no file uploaded")
    wrong_field = client.post("/v1/segment", files={"image": ("a.png", xray.read_bytes())})
    assert_json_error(wrong_field, 422, "no file uploaded", "'file'")
    bad_query = client.post("/v1/segment?format=gif", files={"file": ("a.png", xray.read_bytes())})
    assert_json_error(bad_query, 422, "format")


def test_upload_over_the_size_limit_is_413_declared_or_streamed(tmp_path, xray):
    data = xray.read_bytes()
    limit = len(data) // 2
    settings = ServeSettings(max_upload_bytes=limit, temp_dir=tmp_path)
    with TestClient(create_app(settings)) as small:
        assert_json_error(upload(small, data), 413, "upload too large", "KiB")

        # Without a Content-Length the body is counted as it arrives.
        boundary = "lungsegboundary"

        def chunks() -> Iterator[bytes]:
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            yield from (data[i : i + 8192] for i in range(0, len(data), 8192))
            yield f"\r\n--{boundary}--\r\n".encode()

        streamed = small.post(
            "/v1/segment",
            content=chunks(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert "content-length" not in streamed.request.headers
        assert_json_error(streamed, 413, "upload too large")

        # A file just under the limit passes: the limit is on the file, not on its framing.
        assert upload(small, data[:limit]).status_code == 422  # truncated, but not refused


def test_image_over_the_pixel_limit_is_413(tmp_path, xray):
    with TestClient(create_app(ServeSettings(max_pixels=500 * 500, temp_dir=tmp_path))) as small:
        assert_json_error(upload(small, xray.read_bytes()), 413, "512x512", "250,000")


def test_unexpected_failure_is_a_logged_500_without_a_traceback(
    tmp_path, xray, caplog, monkeypatch
):
    def broken_model(batch):
        raise RuntimeError("simulated fault in the model")

    app = create_app(ServeSettings(temp_dir=tmp_path))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        monkeypatch.setattr(app.state.service.segmenter, "logits", broken_model)
        with caplog.at_level(logging.ERROR, logger="lungseg.serve.app"):
            response = upload(test_client, xray.read_bytes())
        detail = assert_json_error(response, 500, "internal server error")
        assert "simulated" not in detail
        assert "simulated fault in the model" in caplog.text  # the server log has it


# --- a burst queues, beyond the queue it is refused ---------------------------------------------


class Gate:
    """Holds the real model's calls until the test opens it, so requests stay in flight."""

    def __init__(self, logits) -> None:
        self.logits = logits
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self, batch):
        self.entered.release()
        assert self.gate.wait(timeout=60)
        return self.logits(batch)


def test_burst_queues_then_gets_503_with_retry_after(tmp_path, xray, monkeypatch):
    data = xray.read_bytes()
    app = create_app(ServeSettings(threads=1, max_queue=1, temp_dir=tmp_path))
    with TestClient(app) as test_client:
        segmenter = app.state.service.segmenter
        gated = Gate(segmenter.logits)
        monkeypatch.setattr(segmenter, "logits", gated)
        answers: dict[str, int] = {}

        def send(key: str) -> None:
            answers[key] = upload(test_client, data).status_code

        running = threading.Thread(target=send, args=("running",))
        running.start()
        assert gated.entered.acquire(timeout=30)  # the one worker is busy
        queued = threading.Thread(target=send, args=("queued",))
        queued.start()
        deadline = time.monotonic() + 30
        while test_client.get("/healthz").json()["in_flight"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)

        refused = upload(test_client, data)
        assert_json_error(refused, 503, "busy")
        assert int(refused.headers["retry-after"]) >= 1

        gated.gate.set()
        running.join(60)
        queued.join(60)
        assert answers == {"running": 200, "queued": 200}
        assert test_client.get("/healthz").json()["in_flight"] == 0


# --- results: expiry, bounds, the temporary folder --------------------------------------------


def test_result_urls_expire_and_old_results_are_dropped(tmp_path, xray):
    data = xray.read_bytes()
    app = create_app(ServeSettings(result_ttl_s=0.5, max_results=2, temp_dir=tmp_path))
    with TestClient(app) as test_client:
        first = upload(test_client, data).json()["results"]
        assert 0 < first["expires_in_s"] <= 0.5
        response = test_client.get(first["mask"])
        assert response.status_code == 200
        assert response.headers["cache-control"].startswith("private")
        time.sleep(0.6)
        assert_json_error(test_client.get(first["mask"]), 404, "unknown or expired")

    app = create_app(ServeSettings(max_results=2, temp_dir=tmp_path))
    with TestClient(app) as test_client:
        links = [upload(test_client, data).json()["results"] for _ in range(3)]
        assert test_client.get(links[0]["mask"]).status_code == 404  # the oldest went
        assert all(test_client.get(link["mask"]).status_code == 200 for link in links[1:])
        assert test_client.get("/healthz").json()["results_kept"] == 2
        folder = app.state.service.store.folder
        assert sorted(p.name for p in folder.iterdir()) == sorted(link["id"] for link in links[1:])


def test_unknown_results_are_404(client, xray):
    result_id = upload(client, xray.read_bytes()).json()["results"]["id"]
    for path in (
        "/v1/results/nosuchid/mask.png",
        f"/v1/results/{result_id}/model.png",
        f"/v1/results/{result_id}/..%2F..%2Fetc%2Fpasswd.png",
        f"/v1/results/{result_id}/mask.jpg",
    ):
        assert client.get(path).status_code == 404, path


def test_nothing_is_left_in_the_temp_folder_after_shutdown(tmp_path, xray):
    app = create_app(ServeSettings(temp_dir=tmp_path))
    with TestClient(app) as test_client:
        links = upload(test_client, xray.read_bytes()).json()["results"]
        (folder,) = tmp_path.iterdir()
        assert folder.name.startswith("lungseg-serve-")
        assert sorted(p.name for p in (folder / links["id"]).iterdir()) == [
            "heart.png",
            "image.png",
            "labels.png",
            "mask.png",
            "outline.png",
            "overlay.png",
        ]
    assert list(tmp_path.iterdir()) == []


def test_result_store_expires_and_bounds_with_a_clock(tmp_path):
    now = [0.0]
    store = ResultStore(ttl_s=10, max_count=2, parent=tmp_path, clock=lambda: now[0])
    a = store.put({"a.png": b"1"})
    now[0] = 5
    b = store.put({"a.png": b"2"})
    assert store.get(a, "a.png") == b"1" and store.expires_in(a) == 5
    assert store.get(a, "other.png") is None
    now[0] = 10  # a expires exactly at its deadline
    assert store.get(a, "a.png") is None and store.get(b, "a.png") == b"2"
    c, d = store.put({"a.png": b"3"}), store.put({"a.png": b"4"})
    assert store.get(b, "a.png") is None and len(store) == 2  # b dropped: over max_count
    assert {p.name for p in store.folder.iterdir()} == {c, d}
    store.close()
    assert not store.folder.exists()


# --- the other endpoints and the CLI ----------------------------------------------------------


def test_health_model_card_docs_and_page(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "lungseg_cxr"
    assert health["capacity"] == 1 + 8

    card = client.get("/v1/model").json()
    _, info = load_weights(shipped_weights_path())
    sidecar = json.loads(shipped_weights_path().with_suffix(".json").read_text())
    header = header_card("lungseg_cxr", info)
    # What the header states is the header's; the shipped card file adds metrics and sources.
    assert {key: card[key] for key in header if key != "training"} == {
        key: value for key, value in header.items() if key != "training"
    }
    assert card["labels"] == ["lungs", "heart"] and card["has_heart"] is True
    assert card["threshold"] == info.threshold and card["input_size"] == list(info.image_size)
    assert card["training"] == {**sidecar["training"], **info.extra}
    assert card["test_metrics"] == sidecar["test_metrics"]
    assert card["sources"] == sidecar["sources"]

    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text  # works offline
    bundle = client.get("/docs-assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    # Swagger UI 5: 4 cannot read the OpenAPI 3.1 schema FastAPI emits ("Unable to render this
    # definition"); tests/test_serve_browser.py looks at the rendered page.
    assert b'PACKAGE_VERSION:"5.' in bundle.content
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    assert client.get("/docs-assets/favicon.png").status_code == 200
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    spec = client.get("/openapi.json").json()
    assert {"/v1/segment", "/v1/model", "/healthz"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert set(schemas["HeartMeasurements"]["properties"]) >= HEART_FIELDS
    assert "heart" in schemas["SegmentResponse"]["properties"]
    assert "heart" in schemas["ResultLinks"]["properties"]
    assert {"labels", "has_heart"} <= set(schemas["ModelInfo"]["properties"])

    def refs(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    prefix = "#/components/schemas/"
    assert all(ref.startswith(prefix) and ref[len(prefix) :] in schemas for ref in refs(spec))

    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-max-upload-bytes="67108864"' in page.text and "64 MiB" in page.text
    assert "__MAX_UPLOAD" not in page.text
    # Works offline: nothing is fetched from another host.
    for external in ('src="http', "src='http", 'href="http', "@import", "url(http", "//cdn"):
        assert external not in page.text


def test_other_weights_without_a_card_get_one_from_their_header(tmp_path, xray):
    weights = tmp_path / "my_model.safetensors"
    shutil.copy(shipped_weights_path(), weights)
    with TestClient(create_app(ServeSettings(weights=weights, temp_dir=tmp_path))) as test_client:
        card = test_client.get("/v1/model").json()
        assert card == header_card("my_model", load_weights(weights)[1])
        assert card["name"] == "my_model" and card["model"] == "msag_unet_cpu"
        shipped = json.loads(shipped_weights_path().with_suffix(".json").read_text())
        assert card["threshold"] == pytest.approx(shipped["threshold"])
        assert "test_metrics" not in card  # no card file beside these weights
        body = upload(test_client, xray.read_bytes()).json()
        assert body["model"]["name"] == "my_model"


def test_cli_serve_refuses_missing_weights_in_one_line(tmp_path, capsys):
    assert main(["serve", "--weights", str(tmp_path / "nope.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.safetensors: weights file not found" in err


def test_cli_serve_help_shows_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    for flag, default in (
        ("--backend", "auto"),
        ("--device", "auto"),
        ("--precision", "auto"),
        ("--threads", "1"),
        ("--queue", "8"),
        ("--max-upload-mb", "64.0"),
        ("--max-results", "64"),
        ("--max-connections", "64"),
    ):
        assert flag in text
        assert f"(default: {default})" in text.split(f"{flag} ", 2)[-1].split(" --")[0], flag
    assert "--workers" not in text  # renamed: it meant threads here, processes elsewhere


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--workers", "2"], ["--workers was renamed --threads", "--threads 2"]),
        (["--threads", "0"], ["--threads", "at least 1"]),
        (["--queue", "-1"], ["--queue", "at least 0"]),
        (["--device", "tpu"], ["--device", "invalid choice"]),
        (["--precision", "int8"], ["--precision", "invalid choice"]),
        (["--backend", "tensorrt"], ["--backend", "invalid choice"]),
        (["--read-timeout", "0"], ["--read-timeout", "above 0"]),
        (["--port", "70000"], ["--port", "65535"]),
    ],
)
def test_cli_serve_wrong_flags_are_one_line_and_exit_2(capsys, args, words):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    for word in words:
        assert word in err


def test_cli_serve_builds_one_settings_for_the_app_and_the_server(monkeypatch, tmp_path):
    import lungseg.serve
    import lungseg.serve.server

    seen: dict[str, object] = {}
    real_create_app = lungseg.serve.create_app

    def create_app_spy(settings: ServeSettings):
        seen["app_settings"] = settings
        return real_create_app(settings)

    def run_server_spy(app, settings: ServeSettings) -> None:
        seen["app"], seen["server_settings"] = app, settings

    monkeypatch.setattr(lungseg.serve, "create_app", create_app_spy)
    monkeypatch.setattr(lungseg.serve.server, "run_server", run_server_spy)
    args = ["serve", "--port", "8123", "--threads", "3", "--queue", "0", "--device", "cpu"]
    args += ["--precision", "fp32", "--max-upload-mb", "2", "--max-results", "5"]
    assert main(args) == 0
    settings = seen["app_settings"]
    assert seen["server_settings"] is settings  # one object, for the app and for uvicorn
    assert settings == ServeSettings(
        port=8123,
        threads=3,
        max_queue=0,
        device="cpu",
        precision="fp32",
        max_upload_bytes=2 * 2**20,
        max_results=5,
    )
    assert seen["app"].state.served.segmenter.backend == "torch"
    # The defaults of the flags are the defaults of the settings.
    assert settings_from_args(build_parser().parse_args(["serve"])) == ServeSettings()


# --- settings: device, precision, backend ---------------------------------------------------------


def test_serve_settings_check_their_values():
    assert ServeSettings(weights="w.safetensors", temp_dir="tmp").weights == Path("w.safetensors")
    for bad, word in (
        ({"device": "tpu"}, "device"),
        ({"precision": "int8"}, "precision"),
        ({"backend": "tensorrt"}, "backend"),
        ({"threads": 0}, "threads"),
        ({"port": -1}, "port"),
        ({"max_pixels": 10**9}, "max_pixels"),
    ):
        with pytest.raises(ValueError, match=word):
            ServeSettings(**bad)


def test_device_and_precision_reach_the_model(tmp_path):
    settings = ServeSettings(device="cpu", precision="bf16", temp_dir=tmp_path)
    app = create_app(settings)
    segmenter = app.state.served.segmenter
    assert segmenter.backend == "torch"
    assert segmenter.runtime.device.type == "cpu" and segmenter.runtime.dtype == torch.bfloat16
    assert (
        create_app(
            ServeSettings(device="cpu", precision="fp32")
        ).state.served.segmenter.runtime.dtype
        is None
    )


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_cuda_without_a_gpu_fails_before_the_server_starts(capsys):
    with pytest.raises(LungsegError, match="no CUDA GPU"):
        create_app(ServeSettings(device="cuda"))
    assert main(["serve", "--device", "cuda"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no CUDA GPU is available" in err


def test_onnxruntime_backend_needs_an_exported_file(capsys):
    with pytest.raises(LungsegError, match="lungseg export"):
        create_app(ServeSettings(backend="onnxruntime"))
    assert main(["serve", "--backend", "onnxruntime"]) == 1
    assert "lungseg export" in capsys.readouterr().err


def test_onnx_weights_are_served_by_onnxruntime_like_torch(tmp_path, xray, client):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from lungseg.export import _onnx_bytes

    # The exporter's bytes without export_model's verification: this test is about serving them.
    onnx_path = tmp_path / "lungs.onnx"
    onnx_path.write_bytes(_onnx_bytes(*load_weights(shipped_weights_path())))
    with pytest.raises(LungsegError, match="fp32"):
        create_app(ServeSettings(weights=onnx_path, precision="bf16"))
    app = create_app(ServeSettings(weights=onnx_path, temp_dir=tmp_path))  # backend auto
    assert app.state.served.segmenter.backend == "onnxruntime"
    with TestClient(app) as onnx_client:
        card = onnx_client.get("/v1/model").json()
        assert card == header_card("lungs", load_weights(shipped_weights_path())[1])
        body = upload(onnx_client, xray.read_bytes(), xray.name).json()
        assert body["model"]["name"] == "lungs"
        onnx_mask = decode_png(onnx_client.get(body["results"]["mask"]).content)
    torch_body = upload(client, xray.read_bytes(), xray.name).json()
    torch_mask = decode_png(client.get(torch_body["results"]["mask"]).content)
    assert dice(onnx_mask > 0, torch_mask > 0) > 0.99


# --- the model card: the weights' header, whatever a card file says ---------------------------


def test_model_card_is_the_weights_header(heart_client):
    card = heart_client.get("/v1/model").json()
    _, info = heart_model()
    assert card == {
        "name": "heart_model",
        "model": "msag_unet_cpu",
        "model_config": info.model_config,
        "input_size": [64, 64],
        "preprocessing": info.preprocessing,
        "threshold": 0.42,
        "labels": ["lungs", "heart"],
        "has_heart": True,
        "lungseg_version": info.lungseg_version,
        "training": {"epochs": 3, "val_dice_original_res": 0.5},
    }
    model = upload(heart_client, synthetic_png()).json()["model"]
    assert model["threshold"] == 0.42 and model["input_size"] == [64, 64]


def test_a_card_file_cannot_contradict_the_header(tmp_path, caplog):
    weights = tmp_path / "mine.safetensors"
    save_weights(weights, *heart_model())
    forged = {
        "name": "someone_elses_model",
        "model": "unet_r50",
        "model_config": {"name": "unet_r50"},
        "input_size": [512, 512],
        "threshold": 0.9,
        "labels": ["lungs"],
        "has_heart": False,
        "lungseg_version": "9.9.9",
        "training": {"epochs": 300, "preset": "gpu"},
        "test_metrics": {"dice": 0.97},
    }
    weights.with_suffix(".json").write_text(json.dumps(forged))
    with caplog.at_level(logging.WARNING, logger="lungseg.serve.app"):
        app = create_app(ServeSettings(weights=weights, temp_dir=tmp_path))
    assert "the header wins" in caplog.text and "threshold" in caplog.text
    with TestClient(app) as test_client:
        card = test_client.get("/v1/model").json()
        body = upload(test_client, synthetic_png()).json()
    _, info = heart_model()
    header = header_card("mine", info)
    assert {key: card[key] for key in header if key != "training"} == {
        key: value for key, value in header.items() if key != "training"
    }
    assert card["threshold"] == 0.42 and card["labels"] == ["lungs", "heart"]
    assert card["training"] == {"epochs": 3, "val_dice_original_res": 0.5, "preset": "gpu"}
    assert card["test_metrics"] == {"dice": 0.97}  # what the header does not state is kept
    assert body["model"]["name"] == "mine" and body["model"]["threshold"] == 0.42
    assert body["model"]["has_heart"] is True and body["heart"]["heart_area_px"] is not None


def test_an_unreadable_card_file_leaves_the_header_card(tmp_path, caplog):
    weights = tmp_path / "mine.safetensors"
    save_weights(weights, *heart_model())
    for text in ("{not json", "[1, 2]"):
        weights.with_suffix(".json").write_text(text)
        with caplog.at_level(logging.WARNING, logger="lungseg.serve.app"):
            card = create_app(ServeSettings(weights=weights)).state.served.card
        assert card == header_card("mine", heart_model()[1])
        assert "using the weights' header" in caplog.text


# --- the heart and the cardiothoracic ratio -----------------------------------------------------


@pytest.fixture(scope="module")
def lungs_only_client(
    tmp_path_factory: pytest.TempPathFactory, lungs_only_weights: Path
) -> Iterator[TestClient]:
    """A server whose weights have no heart channel (as those written before it)."""
    settings = ServeSettings(weights=lungs_only_weights, temp_dir=tmp_path_factory.mktemp("l"))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_lungs_only_model_answers_null_heart_fields_and_no_heart_view(lungs_only_client):
    client = lungs_only_client
    response = upload(client, synthetic_png())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["labels"] == ["lungs"] and body["model"]["has_heart"] is False
    heart = body["heart"]
    assert set(heart) == HEART_FIELDS
    assert all(heart[key] is None for key in HEART_FIELDS - {"cardiomegaly_caveat"})
    assert CAVEAT in heart["cardiomegaly_caveat"]
    results = body["results"]
    assert results["heart"] is None
    assert client.get(f"/v1/results/{results['id']}/heart.png").status_code == 404
    assert decode_png(client.get(results["overlay"]).content).shape == (96, 128, 3)


def test_heart_model_answers_the_heart_fields_and_a_heart_layer(heart_client):
    response = upload(heart_client, synthetic_png())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["labels"] == ["lungs", "heart"] and body["model"]["has_heart"] is True
    card = heart_client.get("/v1/model").json()
    assert card["labels"] == ["lungs", "heart"] and card["has_heart"] is True
    heart = body["heart"]
    assert set(heart) == HEART_FIELDS
    # Untrained: the heart may be empty or everywhere; the structure is what is fixed.
    assert isinstance(heart["heart_area_px"], int) and 0 <= heart["heart_area_px"] <= 96 * 128
    assert heart["heart_area_cm2"] is None  # a PNG states no pixel spacing
    assert CAVEAT in heart["cardiomegaly_caveat"]
    if heart["ctr"] is None:
        assert heart["cardiomegaly"] is None and heart["extents"] is None
    else:
        assert heart["cardiomegaly"] is (heart["ctr"] > 0.5)
        assert set(heart["extents"]) == {
            "heart_columns",
            "heart_row",
            "thorax_columns",
            "thorax_row",
        }
    assert body["colours"]["heart"] == hex_colour(HEART_COLOR)
    assert body["colours"]["thorax"] == hex_colour(THORAX_COLOR)
    layer = decode_png(heart_client.get(body["results"]["heart"]).content)
    assert layer.shape == (96, 128, 4) and layer.dtype == np.uint8
    assert int(np.count_nonzero(layer[..., 3])) >= heart["heart_area_px"]


def test_ctr_extents_and_heart_layer_rebuild_the_overlay(heart_client, monkeypatch):
    monkeypatch.setattr(heart_client.app.state.service.segmenter, "logits", known_logits)
    body = upload(heart_client, synthetic_png()).json()
    heart, links = body["heart"], body["results"]
    extents = heart["extents"]
    (h0, h1), (t0, t1) = extents["heart_columns"], extents["thorax_columns"]
    # The 64-grid columns 18..45 and 6..57 at twice the width (bilinear: within a pixel or two).
    assert abs(h0 - 36) <= 2 and abs(h1 - 91) <= 2 and abs(t0 - 12) <= 2 and abs(t1 - 115) <= 2
    assert 45 <= extents["heart_row"] <= 75 and 15 <= extents["thorax_row"] <= 81
    assert heart["ctr"] == pytest.approx((h1 - h0 + 1) / (t1 - t0 + 1), abs=1e-4)
    assert heart["cardiomegaly"] is True  # 28 / 52 columns
    assert heart["heart_area_px"] == pytest.approx(20 * 1.5 * 28 * 2, rel=0.1)

    views = {
        view: decode_png(heart_client.get(links[view]).content)
        for view in ("image", "labels", "outline", "heart", "overlay")
    }
    layer = views["heart"]
    # The lines are opaque: the heart's in its colour on its row, the thorax's in yellow.
    assert (layer[extents["heart_row"], h0 + 2 : h1 - 1, :3] == HEART_COLOR).all()
    assert (layer[extents["thorax_row"], t0 + 2 : t1 - 1, :3] == THORAX_COLOR).all()
    tint = layer[..., 3] == round(0.45 * 255)
    assert 0 < int(tint.sum()) < heart["heart_area_px"]  # the inside; the contour is opaque
    assert (layer[tint, :3] == HEART_COLOR).all()

    # Stacked as the page stacks them (tint at 45 %), the layers give the overlay.
    stack = np.repeat(views["image"][..., None].astype(np.float64), 3, axis=2)
    for rgba, weight in ((views["labels"], 0.45), (views["outline"], 1.0), (layer, 1.0)):
        alpha = rgba[..., 3:4] / 255.0 * weight
        stack = stack * (1 - alpha) + rgba[..., :3] * alpha
    assert np.abs(stack - views["overlay"]).max() <= 2


def test_segment_upload_omits_the_heart_view_without_a_heart_channel(
    monkeypatch, lungs_only_weights
):
    model, info = heart_model()
    segmenter = Segmenter(model, info)
    monkeypatch.setattr(segmenter, "logits", known_logits)
    with_heart = segment_upload(segmenter, synthetic_png(), "a.png", max_pixels=10**6)
    assert with_heart.has_heart and with_heart.extents is not None
    assert with_heart.measurements.ctr == pytest.approx(with_heart.extents.ctr, abs=1e-4)
    assert set(with_heart.pngs) == {"mask", "overlay", "image", "labels", "outline", "heart"}
    only_mask = segment_upload(
        segmenter, synthetic_png(), "a.png", max_pixels=10**6, views=["mask"]
    )
    assert set(only_mask.pngs) == {"mask"}

    lungs_only = Segmenter.from_pretrained(lungs_only_weights)
    result = segment_upload(lungs_only, synthetic_png(), "a.png", max_pixels=10**6)
    assert not result.has_heart and result.extents is None and "heart" not in result.pngs
    assert result.measurements.ctr is None and result.measurements.heart_area_px is None
