"""The web page in a real headless Chromium (Debian's, driven by chromedriver through Selenium)
against `instyle serve` on a free loopback port: stylize a bundled photo with a style, and train
a tiny style from the form while its progress advances.

Screenshots are written to ``var/test-artifacts/``. Without Chromium the tests skip locally and
fail in CI (``.ci/run`` installs ``chromium`` and ``chromium-driver``)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ASSET_PHOTOS, ASSET_STYLE, REPO
from tests.e2e.conftest import serve_embedded

ARTIFACTS = REPO / "var" / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None or driver is None:
        reason = "Chromium, chromedriver or selenium is missing (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return chromium, driver


@pytest.fixture
def server(tiny_store: Path, small_photos: Path, tmp_path: Path) -> Iterator[str]:
    with serve_embedded(
        tmp_path / "serve.log", INSTYLE_STORE=str(tiny_store), INSTYLE_TRAIN_DATA=str(small_photos), OMP_NUM_THREADS="1"
    ) as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Callable[[int, int], Any]:
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers: list[Any] = []

    def start(width: int, height: int) -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / f'profile{len(drivers)}'}"]:
            options.add_argument(flag)
        if width < 500:  # headless windows are at least 500 px wide: emulate the phone's viewport
            metrics = {"width": width, "height": height, "pixelRatio": 2.0, "touch": True}
            options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
        else:
            options.add_argument(f"--window-size={width},{height}")
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        driver.set_page_load_timeout(30)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _choose_style(driver: Any, style: str = "starry-night") -> Any:
    """Click a style's card in the gallery once it has loaded; returns the card."""
    from selenium.webdriver.common.by import By

    selector = f'.style-card[data-style="{style}"]'
    card = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, selector), 15, "the gallery")[0]
    card.click()
    return card


def _stylize(driver: Any, max_size: int) -> Any:
    """Stylize the bundled cat photo (451x300) at ``max_size`` from the form; returns the
    result image once it has loaded."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "photo").send_keys(str(ASSET_PHOTOS / "skimage_chelsea.jpg"))
    size = driver.find_element(By.ID, "max-size")
    size.clear()
    size.send_keys(str(max_size))
    driver.find_element(By.ID, "stylize-button").click()
    after = driver.find_element(By.ID, "after")
    _wait(lambda: driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", after), 60,
          "the stylized image")  # fmt: skip
    return after


@pytest.mark.slow
def test_stylize_a_photo_on_a_phone_sized_screen(server: str, browser: Callable[[int, int], Any]) -> None:
    from selenium.webdriver.common.by import By

    driver = browser(390, 844)
    driver.get(server)
    assert _choose_style(driver).get_attribute("aria-checked") == "true"
    after = _stylize(driver, 96)
    natural = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", after)
    assert natural == [96, 64]
    assert driver.find_element(By.ID, "download").get_attribute("download") == "skimage_chelsea-starry-night.jpg"
    assert not driver.find_element(By.ID, "stylize-error").is_displayed()
    # the page fits the phone's width: nothing scrolls sideways
    assert driver.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]") == [390, 390]
    driver.execute_script("arguments[0].scrollIntoView()", after)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "browser-stylize-phone.png"))


#: Injected into the page: the stylize POST is queued but answered with the 503 that names the
#: job (Redis gone right after), and the first three polls of it get a 503 too.
FLAKY_API = """
const realFetch = window.fetch;
window.outagesLeft = 3;
window.statusSeen = [];
new MutationObserver(() => window.statusSeen.push(document.querySelector("#stylize-status").textContent))
  .observe(document.querySelector("#stylize-status"), { childList: true, characterData: true, subtree: true });
const unavailable = (extra) => new Response(JSON.stringify({
  type: "/problems/redis_unavailable", title: "Service unavailable", status: 503, code: "redis_unavailable",
  detail: "the job queue (Redis) cannot be reached", ...extra,
}), { status: 503, headers: { "Content-Type": "application/problem+json", "Retry-After": "0" } });
window.fetch = async (path, options = {}) => {
  const url = String(path);
  if (url.endsWith("/v1/stylize") && options.method === "POST") {
    const accepted = await (await realFetch(path, options)).json();
    return unavailable({ job_id: accepted.job_id, status_url: accepted.status_url });
  }
  if (url.includes("/v1/jobs/") && !url.endsWith("/result") && window.outagesLeft > 0) {
    window.outagesLeft -= 1;
    return unavailable({});
  }
  return realFetch(path, options);
};
"""


@pytest.mark.slow
def test_the_page_rides_out_a_brief_outage(server: str, browser: Callable[[int, int], Any]) -> None:
    """Redis away right after the photo was queued, and for the first polls: the page follows
    the job the 503 names, says it is reconnecting, and shows the result once the API is back."""
    from selenium.webdriver.common.by import By

    driver = browser(1200, 900)
    driver.get(server)
    _choose_style(driver)
    driver.execute_script(FLAKY_API)
    _stylize(driver, 64)
    assert not driver.find_element(By.ID, "stylize-error").is_displayed()
    assert driver.execute_script("return window.outagesLeft") == 0
    seen = driver.execute_script("return window.statusSeen")
    assert any(text.startswith("reconnecting (the job queue (Redis) cannot be reached)") for text in seen), seen
    assert driver.find_element(By.ID, "stylize-status").text == "done"


@pytest.mark.slow
def test_errors_show_the_problem_detail(server: str, browser: Callable[[int, int], Any], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser(1200, 900)
    driver.get(server)
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, ".style-card"), 15, "the gallery")
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("this is not a picture")
    driver.find_element(By.ID, "photo").send_keys(str(not_an_image))
    driver.find_element(By.ID, "stylize-button").click()
    error = driver.find_element(By.ID, "stylize-error")
    _wait(error.is_displayed, 15, "the error message")
    assert "image" in error.text.lower() and "{" not in error.text  # the problem's detail, in words


@pytest.mark.slow
def test_train_a_style_from_the_form_and_watch_it(server: str, browser: Callable[[int, int], Any]) -> None:
    from selenium.webdriver.common.by import By

    driver = browser(1200, 1000)
    driver.get(server)
    driver.find_element(By.ID, "tab-train").click()
    driver.find_element(By.ID, "style-image").send_keys(str(ASSET_STYLE))
    driver.find_element(By.ID, "style-name").send_keys("browser-made")
    driver.find_element(By.ID, "style-title").send_keys("Made in a browser")
    driver.find_element(By.CSS_SELECTOR, "#train-form details summary").click()
    for name, value in (("iterations", "150"), ("image_size", "32"), ("style_size", "64"), ("batch_size", "1")):
        driver.find_element(By.NAME, name).send_keys(value)
    driver.find_element(By.ID, "train-button").click()

    seen: set[str] = set()

    def finished() -> bool:
        seen.add(driver.find_element(By.ID, "train-iter").text)
        error = driver.find_element(By.ID, "train-error")
        assert not error.is_displayed(), error.text
        return bool(driver.find_element(By.ID, "train-done").is_displayed())

    _wait(finished, 240, "the training to finish")
    done = {text for text in seen if text.endswith("/ 150")}
    assert "150 / 150" in done
    assert any(text not in ("0 / 150", "150 / 150") for text in done), f"no intermediate progress in {seen}"
    assert "browser-made@1" in driver.find_element(By.ID, "train-done").text
    assert driver.execute_script("return document.getElementById('train-preview').naturalWidth") > 0
    # the new style joins the gallery and the list
    assert driver.find_elements(By.CSS_SELECTOR, '.style-card[data-style="browser-made"]')
    driver.find_element(By.ID, "tab-styles").click()
    row = driver.find_element(By.CSS_SELECTOR, '.style-row[data-style="browser-made"]')
    assert "150 it x batch 1 @ 32 px" in row.text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "browser-styles.png"))


#: Injected into the page: records each request the page sends, method and path.
RECORD_REQUESTS = """
const realFetch = window.fetch;
window.sent = [];
window.fetch = (path, options = {}) => {
  window.sent.push(`${options.method || "GET"} ${String(path)}`);
  return realFetch(path, options);
};
"""


@pytest.mark.slow
def test_the_result_is_what_was_sent_and_cancel_deletes_the_job(
    server: str, browser: Callable[[int, int], Any]
) -> None:
    """Picking another photo and style while a job ran relabelled its result (before image,
    download name); the photo input was out of the keyboard's reach; a stylize job had no
    cancel."""
    from selenium.webdriver.common.by import By

    driver = browser(1200, 900)
    driver.get(server)
    # keyboard users reach the photo input (it was `hidden`: never focusable)
    assert driver.execute_script(
        "const p = document.getElementById('photo'); p.focus(); return document.activeElement === p"
    )
    _choose_style(driver)
    driver.execute_script(RECORD_REQUESTS)
    driver.find_element(By.ID, "photo").send_keys(str(ASSET_PHOTOS / "skimage_chelsea.jpg"))
    driver.find_element(By.ID, "stylize-button").click()
    driver.find_element(By.ID, "photo").send_keys(str(ASSET_PHOTOS / "skimage_coffee.jpg"))  # while it runs
    _choose_style(driver, "tiny")
    download = driver.find_element(By.ID, "download")
    _wait(lambda: download.get_attribute("download"), 60, "the result")
    assert download.get_attribute("download") == "skimage_chelsea-starry-night.jpg"
    # cancel: the button sends the job's DELETE (the result held back, so that the job is the
    # page's own for long enough whatever the worker's speed)
    driver.execute_script(
        "const f = window.fetch; window.fetch = async (p, o) => { if (String(p).endsWith('/result'))"
        " await new Promise((r) => setTimeout(r, 5000)); return f(p, o); };"
    )
    before = driver.execute_script("return window.sent.length")
    driver.find_element(By.ID, "stylize-button").click()
    cancel = driver.find_element(By.ID, "stylize-cancel")
    polled = f"return window.sent.slice({before}).some((r) => r.includes('/v1/jobs/'))"
    _wait(lambda: driver.execute_script(polled), 30, "a poll of the second job")
    cancel.click()
    _wait(lambda: driver.execute_script("return window.sent.some((r) => r.startsWith('DELETE '))"), 10, "the cancel")
