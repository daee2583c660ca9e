"""The playground in a real browser: Debian's chromium, headless, driven by selenium with
Debian's chromedriver (no browser download). An analyser node spliced in front of the
page's audio output tells whether sound really plays."""

from __future__ import annotations

import shutil
import tempfile
import time

import pytest
import requests

from sesame_server.config import Settings
from tests.conftest import piper_settings
from tests.live import live_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
LONG_TEXT = ("This is a long test of the playground, spoken sentence after sentence. It keeps going for a "
             "while, so that the audio is still playing when the download has finished. And one more.")
# Every AudioContext the page makes: its output goes through an analyser we can read.
SPY = """
window.__contexts = [];
const RealContext = window.AudioContext;
window.AudioContext = class extends RealContext {
  constructor(options) {
    super(options);
    this.__analyser = this.createAnalyser();
    this.__analyser.connect(super.destination);
    window.__contexts.push(this);
  }
  get destination() { return this.__analyser; }
};
window.__level = () => Math.max(0, ...window.__contexts.filter((c) => c.state !== "closed").map((c) => {
  const data = new Float32Array(c.__analyser.fftSize);
  c.__analyser.getFloatTimeDomainData(data);
  return Math.max(...data.map(Math.abs));
}));
"""


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver; .ci/run does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": SPY})
    # A phone: 390 CSS pixels wide.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    yield driver
    driver.quit()


def _open(driver, url: str) -> None:
    driver.get(url)
    _until(lambda: driver.execute_script("return document.getElementById('voice').options.length") > 0
           or not driver.execute_script("return document.getElementById('key-form').hidden"))


def _until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the page did not get there in time"
        time.sleep(0.05)


def _errors(driver, *, allow_401: bool = False) -> list[str]:
    """Console errors; with allow_401, not the 401 answers that make the page ask for the key."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
            and not (allow_401 and "status of 401" in entry["message"])]


def test_it_plays_and_stop_silences_it_even_after_the_download(browser, piper_server):
    _open(browser, f"{piper_server.url}/")
    assert browser.find_element("id", "backend").text == "piper backend"
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 390  # no sideways scroll
    browser.execute_script(f"document.getElementById('text').value = {LONG_TEXT!r}")
    browser.find_element("id", "speak").click()
    _until(lambda: browser.execute_script("return window.__level()") > 0.05)  # sound is playing
    # The download ends long before the playback: Stop must still be there.
    _until(lambda: "s of audio" in browser.find_element("id", "stats").text
           and browser.find_element("id", "speak").is_enabled())
    playing = browser.execute_script("const c = window.__contexts.at(-1); return c.state === 'running'")
    assert playing and browser.find_element("id", "stop").is_enabled()
    browser.find_element("id", "stop").click()
    assert browser.execute_script("return window.__contexts.every((c) => c.state !== 'running')")
    assert browser.execute_script("return window.__level()") == 0
    assert not browser.find_element("id", "stop").is_enabled()
    assert _errors(browser) == []


def test_stop_right_away_and_what_piper_cannot_do_is_said(browser, piper_server):
    _open(browser, f"{piper_server.url}/")
    browser.execute_script("document.getElementById('text').value = '**Total:** $12.50 🎉'")
    browser.find_element("id", "speak").click()
    browser.find_element("id", "stop").click()  # before any audio
    _until(lambda: browser.find_element("id", "spoken").is_displayed())
    assert browser.find_element("id", "spoken").text == "Spoken as: Total: twelve dollars and fifty cents."
    assert browser.execute_script("return window.__contexts.every((c) => c.state !== 'running')")
    assert not browser.find_element("id", "conversation").is_enabled()
    assert "CSM backend" in browser.find_element("id", "conversation-note").text
    assert not browser.find_element("css selector", "#clone-form button").is_enabled()  # the fieldset is disabled
    assert "CSM backend" in browser.find_element("id", "clone-note").text
    assert browser.find_element("css selector", "label[for=text]").text == "Text"
    assert requests.get(f"{piper_server.url}/favicon.ico").status_code == 200
    assert _errors(browser) == []


def test_api_key_flow(browser, tmp_path):
    settings: Settings = piper_settings(tmp_path, api_key="s3cret", warmup_on_start=False)
    with live_server(settings) as server:
        host = server.url.removeprefix("http://")
        _open(browser, f"http://user:s3cret@{host}/")  # what typing the key into the browser's prompt does
        if browser.execute_script("return !document.getElementById('key-form').hidden"):
            browser.find_element("id", "key").send_keys("s3cret")
            browser.find_element("css selector", "#key-form button").click()
            _until(lambda: browser.execute_script("return document.getElementById('voice').options.length") > 0)
        assert browser.execute_script("return document.getElementById('key-form').hidden")
        assert "API key" not in browser.find_element("id", "stats").text
        browser.find_element("id", "speak").click()
        _until(lambda: browser.execute_script("return window.__level()") > 0.05)
        browser.find_element("id", "stop").click()
        assert _errors(browser, allow_401=True) == []
