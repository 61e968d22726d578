"""The web app in a real browser: ``python -m agents.app`` on a free localhost port, driven by headless Chromium
(Debian's ``/usr/bin/chromium`` through Playwright, no downloaded browser). Marked ``browser`` (``-m "not browser"``
skips them); skipped where Chromium, Playwright or Gradio is missing. The app's logic: tests/test_app.py."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from agents.cli import stylize

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no {CHROMIUM} (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("gradio")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, onnx_cache: Path) -> Iterator[str]:
    """The app's URL: ``python -m agents.app`` on a free port (its own Gradio folder, the session's ONNX cache)."""
    folder = tmp_path_factory.mktemp("app_server")
    url = f"http://127.0.0.1:{free_port()}/"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(folder / "gradio")}
    with open(folder / "log.txt", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "agents.app", "--port", url.split(":")[-1].strip("/"), "--device", "cpu"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 150
            while True:
                assert process.poll() is None, (folder / "log.txt").read_text()
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        if response.status == 200:
                            break
                except OSError:
                    assert time.monotonic() < deadline, "the app did not start: " + (folder / "log.txt").read_text()
                    time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium with a fresh profile (one context: its pages are the tabs of one browser window)."""
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 1600},
        )
        yield context
        context.close()


def open_page(browser: Any, url: str, requests: list[str] | None = None) -> Any:
    """A new tab on the app, its requests to other hosts recorded in ``requests``."""
    page = browser.new_page()
    if requests is not None:
        page.on("request", lambda request: None if request.url.startswith(url) else requests.append(request.url))
    page.goto(url)
    page.wait_for_selector("#run", timeout=30_000)
    return page


def wait_for_text(page: Any, selector: str, text: str, timeout: float = 60_000) -> str:
    """Wait until the element's text contains ``text``; return its text."""
    try:
        page.wait_for_function(
            "([selector, text]) => (document.querySelector(selector)?.innerText || '').includes(text)",
            arg=[selector, text],
            timeout=timeout,
        )
    except sync_api.TimeoutError:
        pytest.fail(f"{selector} never said {text!r}; it says {page.locator(selector).inner_text()!r}")
    return page.locator(selector).inner_text()


def shown_step(page: Any, previous: str | None = None) -> tuple[str, np.ndarray]:
    """The step image's URL (once it differs from ``previous``) and its pixels."""
    page.wait_for_function(
        "previous => { const img = document.querySelector('#step-view img'); return img && img.src !== previous; }",
        arg=previous,
        timeout=20_000,
    )
    src = page.locator("#step-view img").get_attribute("src")
    return src, np.asarray(Image.open(io.BytesIO(page.request.get(src).body())))


def write_pair(folder: Path) -> tuple[Path, Path]:
    """A 64x48 photo and a 40x40 painting."""
    rng = np.random.default_rng(3)
    photo, style = folder / "photo.png", folder / "style.png"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photo)
    Image.fromarray(np.kron(rng.integers(0, 256, (5, 5, 3)), np.ones((8, 8, 1))).astype(np.uint8)).save(style)
    return photo, style


def test_slider_shows_each_step_as_agents_stylize_writes_it(server: str, browser: Any, tmp_path: Path) -> None:
    photo, style = write_pair(tmp_path)
    cli = ["--content", str(photo), "--style", str(style), "--steps", "3", "--out", str(tmp_path), "--device", "cpu"]
    assert stylize.main(cli) == 0
    expected = {k: np.asarray(Image.open(tmp_path / f"photo__style_step{k:02d}.png")) for k in (1, 3)}

    elsewhere: list[str] = []
    page = open_page(browser, server, elsewhere)
    page.locator("#photo-input input[type=file]").set_input_files(str(photo))
    wait_for_text(page, "#status", "The photo photo.png is 64x48.")
    page.locator("#style-input input[type=file]").set_input_files(str(style))
    wait_for_text(page, "#status", "The painting style.png is 40x40.")
    page.locator("#steps input[type=number]").fill("3")
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#run").click()
    assert "Done: 3 steps" in wait_for_text(page, "#status", "Done:")
    src_last, last = shown_step(page)
    assert "Step 3 of 3" in page.locator("#step-view").inner_text()

    page.locator("#step input[type=range]").fill("1")
    src_first, first = shown_step(page, src_last)
    assert "Step 1 of 3" in page.locator("#step-view").inner_text()
    page.locator("#step input[type=range]").fill("3")
    _, again = shown_step(page, src_first)
    assert np.array_equal(first, expected[1]) and np.array_equal(last, expected[3]) and np.array_equal(again, last)
    assert not np.array_equal(first, last)
    assert "Step 3 (64x48 PNG)" in page.locator("#download-step").inner_text()
    page.wait_for_selector("#ssim-curve .vega-embed", timeout=30_000)  # the curve, scored after the steps

    other = open_page(browser, server)  # a second tab: its own session, none of the first one's images
    assert other.locator("#step-view img").count() == 0 and other.locator("#status").inner_text().strip() == ""
    other.close()
    page.close()
    assert elsewhere == []  # nothing fetched from the internet


def test_a_text_file_as_photo_gives_one_message_and_the_page_stays_usable(
    server: str, browser: Any, tmp_path: Path
) -> None:
    photo, style = write_pair(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "notes.png").write_text("not an image either")
    page = open_page(browser, server)
    page.locator("#photo-input input[type=file]").set_input_files(str(tmp_path / "notes.txt"))
    toast = wait_for_text(page, "body", "Invalid file type")  # Gradio's own check of the file's type
    assert "notes.txt" in toast
    page.locator("#photo-input input[type=file]").set_input_files(str(tmp_path / "notes.png"))
    message = "The photo notes.png is not an image this app can read"
    wait_for_text(page, "#status", message)
    page.locator("#style-input input[type=file]").set_input_files(str(style))
    page.locator("#run").click()
    page.wait_for_timeout(1500)
    status = page.locator("#status").inner_text()
    assert status.startswith("Error:") and message in status and status.count("Error") == 1

    page.locator("#photo-input input[type=file]").set_input_files(str(photo))
    wait_for_text(page, "#status", "The photo photo.png is 64x48.")
    page.locator("#steps input[type=number]").fill("1")
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#run").click()
    wait_for_text(page, "#status", "Done: 1 step of")
    page.close()
