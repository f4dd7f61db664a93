"""`lungseg serve` as a user meets it: the real CLI on a real port, driven by headless Chromium.

The server runs as a subprocess (``python -m lungseg serve``, see ``live_server.py``) with its
own TMPDIR, so the test also sees that shutdown leaves nothing behind. The browser is Debian's
``chromium`` (``.ci/run`` installs it), driven by Playwright through ``executable_path``: no
browser download. ``/docs`` is looked at the same way: Swagger UI must render the API's OpenAPI 3.1
schema from the server's own files.

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
def server(tmp_path_factory: pytest.TempPathFactory, lungs_only_weights) -> Iterator[LiveServer]:
    """``lungseg serve`` on a free loopback port, stopped with SIGINT like Ctrl+C, with the
    shipped network's lungs alone (the heart's page is tested with a heart model below)."""
    folder = tmp_path_factory.mktemp("server-tmp")
    args = ("--max-upload-mb", "1", "--weights", str(lungs_only_weights))
    with live_server(folder, *args) as live:
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
    # Weights without a heart channel: no CTR card, no heart toggle, no heart layer.
    assert api["model"]["has_heart"] is False and api["heart"]["ctr"] is None
    for heart_part in ("#heart-card", "#heart-control", "#heart-img", "#file-row-0 .ctr-col"):
        assert page.is_hidden(heart_part), heart_part
    assert page.is_hidden("#dicom-info")  # a PNG has no DICOM header to tell of

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
    _drop(page, [other])
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
        row_ctr = page.inner_text("#file-row-0 .ctr-col")  # the file list has a CTR column
        assert row_ctr.startswith(ctr) and page.is_visible("#file-row-0 .ctr-col")

        # The next upload takes the CTR card, the heart layer and its toggle with the rest.
        held = _hold_segment_requests(page)
        page.set_input_files("#file-input", str(xrays[1]))
        _wait_until_held(page, held)
        _assert_result_cleared(page)
        assert page.is_hidden("#heart-control") and page.is_hidden("#thorax-legend")
        held.pop().continue_()
        page.wait_for_selector("#heart-card", state="visible", timeout=60_000)
        assert page.inner_text("#file-name") == xrays[1].name
        assert page.is_visible("#heart-img") and page.is_checked("#heart-toggle")
        page.unroute("**/v1/segment")
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


def test_page_clears_the_result_when_an_upload_starts_and_when_it_fails(
    server, browser, xrays, tmp_path
):
    """One patient's result never stays beside another's: not while the next file is on its
    way, and not after an upload fails."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(server.url + "/")
    first, second = xrays[0], xrays[1]
    page.set_input_files("#file-input", str(first))
    page.wait_for_selector("#result", state="visible", timeout=60_000)
    assert page.inner_text("#file-name") == first.name

    held = _hold_segment_requests(page)
    page.set_input_files("#file-input", str(second))
    _wait_until_held(page, held)
    _assert_result_cleared(page)  # the second X-ray is on its way: nothing of the first is shown
    assert _rows(page)[1]["status"] == "Segmenting\u2026"
    held.pop().continue_()
    page.wait_for_function(
        f"document.getElementById('status').textContent.startsWith('Done: {second.name}')",
        timeout=60_000,
    )
    assert page.is_visible("#result") and page.inner_text("#file-name") == second.name

    # An upload that fails while another file's result is on view: that result goes too.
    notes = tmp_path / "notes.png"
    notes.write_text("not an x-ray at all\n")
    page.set_input_files("#file-input", str(notes))
    _wait_until_held(page, held)
    _assert_result_cleared(page)
    page.click("#file-row-0 button.view")  # the user looks at the first X-ray meanwhile
    page.wait_for_selector("#result", state="visible", timeout=30_000)
    assert page.inner_text("#file-name") == first.name
    held.pop().continue_()
    page.wait_for_selector("#error", state="visible", timeout=30_000)
    _assert_result_cleared(page)
    assert page.inner_text("#error-title") == "Not an image"
    assert "notes.png: not a supported image" in _rows(page)[2]["status"]
    page.unroute("**/v1/segment")

    # One refused before it is sent (over the server's 1 MiB) clears the result as well.
    page.click("#file-row-1 button.view")
    page.wait_for_selector("#result", state="visible", timeout=30_000)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2 * 2**20))
    page.set_input_files("#file-input", str(big))
    page.wait_for_function(
        "document.getElementById('error-message').textContent.includes('2.0 MiB')"
    )
    _assert_result_cleared(page)
    assert "accepts up to 1.0 MiB" in _rows(page)[3]["status"]
    page.close()


def test_page_takes_several_files_at_once_with_a_row_each(server, browser, xrays, tmp_path):
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto(server.url + "/")
    page.wait_for_function(
        "document.getElementById('model-name').textContent.includes('lungseg_cxr')"
    )
    notes = tmp_path / "notes.png"
    notes.write_text("not an x-ray at all\n")
    files = [xrays[0], notes, xrays[1]]
    page.set_input_files("#file-input", [str(f) for f in files])  # picked together
    page.wait_for_function(
        "document.getElementById('status').textContent === 'Done: 3 files, 1 failed.'",
        timeout=120_000,
    )
    assert posts == [server.url + "/v1/segment"] * 3  # each file in its own request
    rows = _rows(page)
    assert [row["name"] for row in rows] == [f.name for f in files]
    areas = {}
    for row, xray in ((rows[0], xrays[0]), (rows[2], xrays[1])):
        lungs = _post_file(server, xray)["lungs"]
        areas[xray.name] = lungs["area_px"]
        assert row["status"].startswith("Done in ") and row["viewable"]
        assert row["area"] == f"{lungs['area_px']:,} px"  # a PNG states no spacing: no cm2
        assert row["quality"].startswith({"ok": "OK", "check": "Check"}[lungs["quality"]])
    # The failure is told on its own row, and did not stop the next file.
    assert rows[1]["status"].startswith("Not an image: notes.png: not a supported image")
    assert not rows[1]["viewable"] and rows[1]["area"] == ""
    assert page.is_hidden("#file-row-0 .ctr-col")  # no heart channel: no CTR column

    screenshot = artifact_dir(tmp_path) / "serve_page_files.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot of the web page with three files: {screenshot}")

    # The last file is on view; a row's View shows that file alone.
    assert page.inner_text("#file-name") == xrays[1].name
    assert page.get_attribute("#file-row-2", "class") == "viewing"
    page.click("#file-row-0 button.view")
    page.wait_for_selector("#result", state="visible", timeout=30_000)
    assert page.inner_text("#file-name") == xrays[0].name
    assert page.inner_text("#area-total") == f"{areas[xrays[0].name]:,}"
    assert page.get_attribute("#file-row-0", "class") == "viewing"
    assert page.get_attribute("#file-row-2", "class") == ""

    # Two dropped together: two more rows.
    _drop(page, [xrays[1], xrays[0]])
    page.wait_for_function(
        "document.getElementById('status').textContent === 'Done: 2 files.'", timeout=120_000
    )
    assert [row["name"] for row in _rows(page)[3:]] == [xrays[1].name, xrays[0].name]
    assert len(posts) == 5
    page.click("#clear-list")
    assert _rows(page) == [] and page.is_hidden("#files") and page.is_hidden("#result")
    # Chromium logs the refused upload's 415 itself; the page's script logs nothing.
    assert [e for e in console_errors if "status of 415" not in e] == []
    page.close()


def test_page_shows_the_quality_estimate_and_what_the_dicom_header_said(server, browser, xrays):
    """The fields of issue 15, with the answer the API gives for them (routed in the browser)."""
    answer = _post_file(server, xrays[0])
    answer["lungs"].update(
        estimated_dice=0.8123, quality="check", reason="estimated Dice 0.81 is below 0.90"
    )
    answer["model"]["quality_threshold"] = 0.9
    answer["image"].update(format="dicom", modality="DX", view_position="PA")
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.route(
        "**/v1/segment",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(answer)
        ),
    )
    page.goto(server.url + "/")
    page.set_input_files("#file-input", str(xrays[0]))
    page.wait_for_selector("#result", state="visible", timeout=30_000)
    assert page.inner_text("#estimated-dice") == "Estimated Dice 0.812 (check below 0.900)"
    assert page.inner_text("#dicom-info") == "DICOM header: modality DX \u00b7 view PA"
    assert page.inner_text("#quality") == "Check"
    assert page.inner_text("#quality-reason") == "estimated Dice 0.81 is below 0.90"
    assert "est. Dice 0.81" in _rows(page)[0]["quality"]
    page.close()


def test_docs_render_the_api_offline(server, browser):
    """``/docs`` renders FastAPI's OpenAPI 3.1 schema (Swagger UI 4 said "Unable to render this
    definition"), from the server's own files."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(server.url + "/docs")
    # The operations, or Swagger UI's "Unable to render this definition" (.version-pragma).
    page.wait_for_selector(
        ".opblock-summary-path, .version-pragma, .errors-wrapper", timeout=60_000
    )
    assert "Unable to render" not in page.inner_text("body")
    segment = page.locator(".opblock-summary-path[data-path='/v1/segment']")
    segment.wait_for(timeout=30_000)
    version = page.evaluate("() => window.versions && window.versions.swaggerUI.version")
    assert version.startswith("5."), version
    paths = page.eval_on_selector_all(
        ".opblock-summary-path", "els => els.map(e => e.dataset.path)"
    )
    assert {"/v1/segment", "/v1/model", "/healthz", "/v1/results/{result_id}/{view}.png"} <= set(
        paths
    )
    assert page.locator(".info .title").inner_text().startswith("lungseg")

    # The upload operation opens with its parameters and its multipart body.
    segment.click()
    opened = page.locator(".opblock.is-open")
    opened.wait_for(timeout=30_000)
    for parameter in ("format", "images", "postprocess"):
        assert opened.locator(".parameter__name", has_text=parameter).count() == 1, parameter
    assert "multipart/form-data" in opened.inner_text()
    assert "Unable to render" not in page.inner_text("body")
    # Offline: every file came from the server itself, none from a CDN.
    assert requested and all(url.startswith(server.url + "/") for url in requested), requested
    page.close()


def test_results_live_in_tmpdir_and_go_with_the_server(server, xrays, tmp_path_factory):
    """Runs last in this module: it stops the shared server and checks what it left."""
    result_id = _post_file(server, xrays[0])["results"]["id"]
    (folder,) = server.tmpdir.glob("lungseg-serve-*")
    assert (folder / result_id / "mask.png").is_file()
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=30) == 0
    assert list(server.tmpdir.glob("lungseg-serve-*")) == []


RESULT_LEFT_ON_PAGE = """() => {
    const $ = (id) => document.getElementById(id);
    const images = ["xray-img", "overlay-img", "outline-img", "heart-img"];
    const texts = ["file-name", "image-info", "dicom-info", "quality", "estimated-dice",
                   "quality-reason", "area-total", "area-right", "area-left", "area-total-cm2",
                   "ctr", "ctr-widths", "heart-area", "ctr-caveat", "expiry", "timing"];
    const shown = ["result", "heart-card", "heart-img", "cardiomegaly"];
    return [
        ...images.filter((id) => $(id).hasAttribute("src")).map((id) => id + " src"),
        ...texts.filter((id) => $(id).textContent !== "").map((id) => id + " text"),
        ...shown.filter((id) => !$(id).hidden).map((id) => id + " shown"),
        ...["download-mask", "download-overlay"].filter((id) => $(id).hasAttribute("href")),
        ...[...document.querySelectorAll("#file-rows tr.viewing")].map((row) => row.id),
    ];
}"""
"""What of a result is still on the page: every image, number, card and link it filled."""


def _assert_result_cleared(page) -> None:
    assert page.evaluate(RESULT_LEFT_ON_PAGE) == []


def _hold_segment_requests(page) -> list:
    """Hold each ``POST /v1/segment`` until the test lets it go (``held.pop().continue_()``),
    so the page is seen while an upload is in flight."""
    held: list = []
    page.route("**/v1/segment", lambda route: held.append(route))
    return held


def _wait_until_held(page, held: list) -> None:
    for _ in range(600):
        if held:
            return
        page.wait_for_timeout(50)
    raise AssertionError("the upload never reached the server")


def _rows(page) -> list[dict]:
    """The file list's rows as the user reads them."""
    return page.eval_on_selector_all(
        "#file-rows tr",
        """rows => rows.map((r) => ({
            name: r.querySelector(".name").textContent,
            status: r.querySelector(".row-status").textContent,
            area: r.querySelector(".area").textContent,
            quality: r.querySelector(".quality").textContent,
            ctr: r.querySelector(".ctr-col").textContent,
            viewable: !r.querySelector("button.view").disabled,
        }))""",
    )


def _drop(page, paths: list[Path]) -> None:
    """Drop files onto the drop zone together, as dragged from a file manager."""
    page.evaluate(
        """(files) => {
            const dropped = new DataTransfer();
            for (const [b64, name] of files) {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                dropped.items.add(new File([bytes], name, {type: "image/png"}));
            }
            document.getElementById("drop-zone").dispatchEvent(
                new DragEvent("drop", {dataTransfer: dropped, bubbles: true, cancelable: true}));
        }""",
        [[base64.b64encode(p.read_bytes()).decode(), p.name] for p in paths],
    )


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
