"""End to end in a real browser: Debian's chromium driven by selenium through /usr/bin/chromedriver.

The app runs in this process on a free port, over the scripted backend and a temporary SQLite
store. The test signs in, uploads a real chest radiograph (pydicom-data's RG1_UNCR.dcm), asks a
question, checks the answer, the model version and the synthetic-data banner, submits a
correction, and checks what the store recorded. Selenium never downloads a driver: the driver path
is given and ``SE_OFFLINE`` is set. Skipped (with the reason) only where chromium is not installed;
CI installs it (.ci/run).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.store import Store, case_image_path, image_content_id
from app.web.service import WebService

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 60


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            "chromium is not installed (/usr/bin/chromium and /usr/bin/chromedriver: "
            "apt-get install -y chromium chromium-driver, as .ci/run does)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must not fetch anything
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def app_url(service: WebService, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-uploads"))  # read when the app starts
    from app.web.ui import create_app, launch

    demo = create_app(service)
    port = _free_port()
    launch(demo, host="127.0.0.1", port=port, max_upload_bytes=service.limits.max_upload_bytes, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def _wait(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message=f"timed out waiting for {what}")


def _text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def _open_and_sign_in(driver: Any, url: str, login: str, role: str = "clinician") -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, lambda d: "not for clinical use" in _text(d, "banner").lower(), "the banner")
    _type(driver, "login", login)
    driver.find_element(By.CSS_SELECTOR, f"#role input[value={role}]").click()
    _click(driver, "sign-in")
    _wait(driver, lambda d: "Signed in as" in _text(d, "who"), "sign-in")


def _type(driver: Any, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, f"#{element_id} textarea, #{element_id} input")
    box.clear()
    box.send_keys(text)


def _click(driver: Any, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


def test_sign_in_upload_ask_and_correct_in_a_browser(
    browser: Any, app_url: str, service: WebService, store: Store, chest: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    _open_and_sign_in(browser, app_url, "dr.e2e")
    banner = _text(browser, "banner")
    assert "synthetic" in banner and "not for clinical use" in banner.lower()
    assert "(clinician)" in _text(browser, "who") and "dr.e2e" not in _text(browser, "who")

    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(chest))
    _wait(browser, lambda d: "Study loaded" in _text(d, "case-status"), "the upload")
    assert "CR CHEST" in _text(browser, "views")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#seen img"), "the model's image")
    assert "SMITH" not in browser.page_source and "CompressedSamples" not in browser.page_source
    # The raw upload (header and PHI-looking name) is gone from Gradio's upload cache once read.
    raw = chest.read_bytes()
    cached = [p for p in (tmp_path / "gradio-uploads").rglob("*") if p.is_file()]
    assert not [p for p in cached if "SMITH" in p.name or p.read_bytes() == raw]

    _type(browser, "question", "Is there a pleural effusion?")
    _click(browser, "ask")
    _wait(browser, lambda d: "Recorded as interaction" in _text(d, "answer"), "the answer")
    answer = _text(browser, "answer")
    assert "No pleural effusion is seen" in answer
    assert "fake-vlm@0123456789ab" in answer and "fake-adapter@ba9876543210" in answer
    assert "grounded" in answer and "RID34539" in answer and "cited" in answer

    _type(browser, "correction", "Small left pleural effusion.")
    _click(browser, "submit-correction")
    _wait(browser, lambda d: "waits for a reviewer" in _text(d, "correction-status"), "the correction")

    [(interaction, correction)] = store.pending_corrections()
    assert interaction.question == "Is there a pleural effusion?"
    assert interaction.model_version == "fake-vlm@0123456789ab" and interaction.grounded is True
    assert correction.corrected_answer == "Small left pleural effusion." and correction.status == "pending"
    assert interaction.image_sha256 is not None
    saved = case_image_path(service.cases_dir, interaction.image_sha256).read_bytes()
    assert image_content_id(saved) == interaction.image_sha256
    assert store.verify().ok and store.check_records().ok

    # A reviewer (a fresh page: a new session) approves it from the review queue.
    _open_and_sign_in(browser, app_url, "dr.reviewer", role="reviewer")
    next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Review").click()
    _wait(browser, lambda d: d.find_element(By.ID, "refresh-queue").is_displayed(), "the review tab")
    _click(browser, "refresh-queue")
    _wait(browser, lambda d: f"Correction {correction.id}" in _text(d, "queue"), "the queue")
    assert "Small left pleural effusion." in _text(browser, "queue")
    _type(browser, "correction-id", str(correction.id))
    _click(browser, "approve")
    _wait(browser, lambda d: "approved" in _text(d, "review-status"), "the review")
    assert store.pending_corrections() == [] and store.stats().corrections["approved"] == 1
    assert store.verify().ok and store.check_records().ok


def test_a_bad_upload_shows_one_sentence_in_the_browser(
    browser: Any, app_url: str, store: Store, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    bad = tmp_path / "DOE^JOHN.dcm"
    bad.write_bytes(b"DICM" * 50)
    _open_and_sign_in(browser, app_url, "dr.e2e")
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(bad))
    _wait(browser, lambda d: "could not be read" in _text(d, "case-status"), "the error")
    assert "DOE" not in _text(browser, "case-status")
    _click(browser, "ask")  # nothing loaded: the ask section says so, nothing is recorded
    _wait(browser, lambda d: "Upload a study first" in _text(d, "ask-status"), "the ask error")
    assert store.stats().interactions == 0
