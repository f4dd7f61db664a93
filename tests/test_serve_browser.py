"""`lungseg serve` as a user meets it: the real CLI on a real port, driven by headless Chromium.

The server runs as a subprocess (``python -m lungseg serve``, see ``live_server.py``) with its
own TMPDIR, so the test also sees that shutdown leaves nothing behind. The browser is Debian's
``chromium`` (``.ci/run`` installs it), driven by Playwright through ``executable_path``: no
browser download.

The page's screenshot is saved under ``$LUNGSEG_TEST_ARTIFACTS`` when set (``.ci/run`` sets it
to ``artifacts/``), else in the test's temporary folder; the path is printed.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import LiveServer, live_server

from lungseg.data.discovery import discover, load_split, select

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",  # the machine is offline: no calls home
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def xrays(data_root: Path) -> list[Path]:
    """The first test-split X-ray of each source."""
    test = select(
        discover(data_root).pairs, load_split(data_root / "splits/paper_433.json"), "test"
    )
    firsts: dict[str, Path] = {}
    for pair in test:
        firsts.setdefault(pair.source, pair.image)
    return [firsts[source] for source in sorted(firsts)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``lungseg serve`` on a free loopback port, stopped with SIGINT like Ctrl+C."""
    with live_server(tmp_path_factory.mktemp("server-tmp"), "--max-upload-mb", "1") as live:
        yield live


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run does)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def artifact_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LUNGSEG_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_page_segments_an_uploaded_xray(server, browser, xrays, tmp_path):
    page = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(server.url + "/")
    page.wait_for_function(
        "document.getElementById('model-name').textContent.includes('lungseg_cxr')"
    )

    # Pick a file, as through the file dialog.
    xray = xrays[0]
    page.set_input_files("#file-input", str(xray))
    page.wait_for_selector("#result", state="visible", timeout=60_000)
    for image_id in ("xray-img", "overlay-img", "outline-img"):
        width = page.eval_on_selector(f"#{image_id}", "img => img.complete && img.naturalWidth")
        assert width == 512, image_id
    assert page.is_visible("#overlay-img")

    # The page shows what the API says about the same X-ray.
    api = _post_file(server, xray)
    lungs = api["lungs"]
    assert page.inner_text("#area-total") == f"{lungs['area_px']:,}"
    assert page.inner_text("#area-right") == f"{lungs['right_area_px']:,}"
    assert page.inner_text("#area-left") == f"{lungs['left_area_px']:,}"
    assert page.inner_text("#area-total-cm2") == "\u2014"  # a PNG states no spacing
    assert page.inner_text("#quality") == {"ok": "OK", "check": "Check"}[lungs["quality"]]
    assert page.inner_text("#file-name") == xray.name
    # The shipped model has no heart channel: no CTR card, no heart toggle, no heart layer.
    assert api["model"]["has_heart"] is False and api["heart"]["ctr"] is None
    for heart_part in ("#heart-card", "#heart-control", "#heart-img"):
        assert page.is_hidden(heart_part), heart_part

    # The opacity slider drives the tint layer.
    page.eval_on_selector(
        "#opacity", "el => { el.value = 80; el.dispatchEvent(new Event('input')); }"
    )
    assert page.eval_on_selector("#overlay-img", "img => img.style.opacity") == "0.8"
    assert page.inner_text("#opacity-value") == "80%"

    # The mask download is a real PNG of the image's size.
    link = page.get_attribute("#download-mask", "href")
    assert page.get_attribute("#download-mask", "download") == f"{xray.stem}_mask.png"
    mask = page.request.get(server.url + link)
    assert mask.ok and mask.headers["content-type"] == "image/png"
    assert mask.body()[:8] == b"\x89PNG\r\n\x1a\n"

    screenshot = artifact_dir(tmp_path) / "serve_page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot of the web page: {screenshot}")
    assert screenshot.stat().st_size > 10_000

    # Drag and drop the other hospital's X-ray onto the drop zone.
    other = xrays[1]
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const files = new DataTransfer();
            files.items.add(new File([bytes], name, {type: "image/png"}));
            document.getElementById("drop-zone").dispatchEvent(
                new DragEvent("drop", {dataTransfer: files, bubbles: true, cancelable: true}));
        }""",
        [base64.b64encode(other.read_bytes()).decode(), other.name],
    )
    page.wait_for_function(
        f"document.getElementById('status').textContent.startsWith('Done: {other.name}')",
        timeout=60_000,
    )
    assert page.inner_text("#file-name") == other.name
    assert page.inner_text("#area-total") == f"{_post_file(server, other)['lungs']['area_px']:,}"
    assert console_errors == []
    page.close()


def test_page_shows_the_ctr_and_toggles_the_heart_with_a_heart_model(
    browser, xrays, tmp_path_factory
):
    """A model with a heart channel (tiny, untrained: its heart is arbitrary, the page is not)."""
    import torch

    from lungseg.models import create_model
    from lungseg.weights import WeightsInfo, save_weights

    folder = tmp_path_factory.mktemp("heart-weights")
    torch.manual_seed(0)
    model = create_model("msag_unet_cpu", out_channels=2)
    info = WeightsInfo(model_config=model.config, image_size=(64, 64), labels=("lungs", "heart"))
    save_weights(folder / "heart.safetensors", model, info)
    weights = str(folder / "heart.safetensors")
    with live_server(tmp_path_factory.mktemp("heart-server-tmp"), "--weights", weights) as live:
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.goto(live.url + "/")
        page.set_input_files("#file-input", str(xrays[0]))
        page.wait_for_selector("#heart-card", state="visible", timeout=60_000)
        width = page.eval_on_selector("#heart-img", "img => img.complete && img.naturalWidth")
        assert width == 512
        assert page.is_visible("#heart-img") and page.is_checked("#heart-toggle")
        heart = _post_file(live, xrays[0])["heart"]
        ctr = page.inner_text("#ctr")
        assert ctr == ("\u2014" if heart["ctr"] is None else f"{heart['ctr']:.2f}")
        if heart["ctr"] is not None:
            assert "AP and supine films" in page.inner_text("#ctr-caveat")
        page.uncheck("#heart-toggle")
        assert page.is_hidden("#heart-img")
        page.check("#heart-toggle")
        assert page.is_visible("#heart-img")
        assert console_errors == []
        page.close()


def test_page_shows_api_errors_readably(server, browser, tmp_path):
    page = browser.new_page()
    page.goto(server.url + "/")
    notes = tmp_path / "notes.png"
    notes.write_text("not an x-ray at all\n")
    page.set_input_files("#file-input", str(notes))
    page.wait_for_selector("#error", state="visible", timeout=30_000)
    assert page.inner_text("#error-title") == "Not an image"
    assert "notes.png: not a supported image" in page.inner_text("#error-message")
    assert page.is_hidden("#result")

    big = tmp_path / "big.png"  # over the server's 1 MiB: refused before it is sent
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2 * 2**20))
    page.set_input_files("#file-input", str(big))
    page.wait_for_function(
        "document.getElementById('error-message').textContent.includes('2.0 MiB')"
    )
    assert "accepts up to 1.0 MiB" in page.inner_text("#error-message")
    page.close()


def test_results_live_in_tmpdir_and_go_with_the_server(server, xrays, tmp_path_factory):
    """Runs last in this module: it stops the shared server and checks what it left."""
    result_id = _post_file(server, xrays[0])["results"]["id"]
    (folder,) = server.tmpdir.glob("lungseg-serve-*")
    assert (folder / result_id / "mask.png").is_file()
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=30) == 0
    assert list(server.tmpdir.glob("lungseg-serve-*")) == []


def _post_file(server: LiveServer, path: Path) -> dict:
    """POST one file as multipart with the standard library (no client library needed)."""
    boundary = "lungsegtestboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body += path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        connection.request(
            "POST",
            "/v1/segment",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        connection.close()
