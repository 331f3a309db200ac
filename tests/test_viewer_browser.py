"""ns-viewer in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium) opens the viewer of a trained run and sees what a user sees.

Checked: the 3D canvas shows the scene (the viewer opens through the first context camera, so
the canvas holds the rendered photo, not an empty background), the walkthrough panel's controls
are there, and tracing a pixel draws its epipolar samples into the scene (the canvas changes
and the panel reads the trace out). The screenshot is kept in the test's folder and, when
``PIXELSPLAT_SCREENSHOT`` names a path, written there too (the README's image).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.scenes import cut_scene
from tests.test_nerfstudio_e2e import BIN, ENV, free_port, run, train_args

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test dependency")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver (apt)"
)


def _serve(root: Path, method: str, *extra: str):
    """Train ``method`` feed-forward on a small cut of a real scene and serve it with ns-viewer."""
    scene = cut_scene("pavilion-chair-sunset", root / "scene", train=[20, 21, 25, 26], eval_=[22, 23])
    args = train_args(scene, root / "outputs", "--max-num-iterations", "0", *extra)
    args[1] = method  # ns-train <method>
    result = run(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = next((root / "outputs").rglob("config.yml"))
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "ns-viewer"), "--load-config", str(config), "--viewer.websocket-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", root
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.fixture(scope="module")
def viewer_url(tmp_path_factory):
    """A trained run (feed-forward, 0 fine-tuning steps) served by ns-viewer."""
    yield from _serve(tmp_path_factory.mktemp("browser"), "pixelsplat")


@pytest.fixture(scope="module")
def wide_baseline_viewer_url(tmp_path_factory):
    """The second method (its bundled small network), feed-forward, served by ns-viewer."""
    yield from _serve(tmp_path_factory.mktemp("browser-wb"), "wide-baseline")


def _browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Software WebGL (SwiftShader): no GPU here.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                     "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _wait(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition()
        except Exception:  # the page is still loading: elements come and go
            value = None
        if value is not None and value is not False:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _canvas(driver) -> np.ndarray:
    """The 3D canvas as the browser shows it: [h, w, 3] floats in [0, 1]."""
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.TAG_NAME, "canvas")
    path = Path(driver.capture_path)
    canvas.screenshot(str(path))
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255


# Text fields hold their value in the DOM property, not in the page's text.
_FIELD_VALUES = "return Array.from(document.querySelectorAll('input, textarea')).map(e => e.value).join('\\n')"


def _button(driver, label: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(
        By.XPATH, f"//button[.//*[normalize-space(text())='{label}'] or normalize-space(.)='{label}']"
    )


def check_viewer(url: str, root: Path, pick_label: str, readout: str, screenshot_to: str | None) -> None:
    """The scene fills the canvas, the walkthrough's controls are there, tracing a pixel draws
    into the scene and reads ``readout`` out in the panel."""
    driver = _browser()
    driver.capture_path = str(root / "canvas.png")
    try:
        _wait(lambda: driver.get(url) or True, 240, "the page")

        # The scene: the viewer streams its render of the first context camera into the canvas.
        # Until then the canvas shows the empty scene: one background colour (and the axes).
        def rendered() -> np.ndarray | None:
            image = _canvas(driver)
            background = np.abs(image - image[0, 0]).sum(axis=-1) < 0.05
            return image if image.std() > 0.08 and background.mean() < 0.5 else None

        _wait(rendered, 300, "a rendered scene filling the 3D canvas (at most half of it background)")

        # The walkthrough panel's controls.
        for label in ("Trace pixel", pick_label):
            _wait(lambda label=label: _button(driver, label) or None, 60, f"the {label!r} button")
        page = driver.find_element("tag name", "body").text
        for label in ("Context cameras", "Pixel row", "Pixel column"):
            assert label in page, f"{label!r} missing from the panel"

        screenshot = root / "viewer.png"
        driver.save_screenshot(str(screenshot))
        if screenshot_to:
            shutil.copyfile(screenshot, screenshot_to)

        # Tracing a pixel draws its ray and epipolar samples into the scene.
        # First a settled canvas (the viewer refines its render after a move), so that a change
        # after the click is the trace's drawing and not a finer render.
        def settled() -> np.ndarray | None:
            first = _canvas(driver)
            time.sleep(2)
            return first if np.array_equal(first, _canvas(driver)) else None

        before = _wait(settled, 120, "a settled canvas")
        _button(driver, "Trace pixel").click()
        changed = lambda: float((np.abs(_canvas(driver) - before).max(axis=-1) > 0.2).mean())  # noqa: E731
        _wait(lambda: changed() > 0.001 or None, 120, "the traced samples in the canvas")
        _wait(lambda: readout in driver.execute_script(_FIELD_VALUES) or None, 240, "the trace's readout in the panel")
    finally:
        driver.quit()


def test_viewer_shows_the_scene_and_traces_a_pixel_in_a_real_browser(viewer_url):
    url, root = viewer_url
    check_viewer(url, root, "Pick: click a Gaussian", "top bucket", os.environ.get("PIXELSPLAT_SCREENSHOT"))


def test_wide_baseline_viewer_in_a_real_browser(wide_baseline_viewer_url):
    """The same panel for the second method: a render at the first context camera, the trace
    of a context pixel (its epipolar samples drawn, its pseudo-depth read out)."""
    url, root = wide_baseline_viewer_url
    check_viewer(url, root, "Pick: click the scene", "pseudo-depth", os.environ.get("PIXELSPLAT_SCREENSHOT_WB"))
