"""The page at `/` in headless Chromium (Debian's chromium + chromium-driver): type a prompt,
press Send, and the streamed answer appears; classify texts on a classifier's page."""

import os
import shutil
from pathlib import Path

import jax
import pytest

from gptjax import GPTConfig, init_params
from gptjax.inference.server import Background, create_app
from gptjax.store import Model
from train.serve import Options, load

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="headless Chromium not installed (apt-get install chromium chromium-driver)",
)
CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0
)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1000,800",
        f"--user-data-dir={tmp_path / 'profile'}",
    )
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    yield driver
    driver.quit()


def test_chat_page_streams_the_answer(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    params = jax.jit(init_params, static_argnums=0)(CFG, jax.random.key(0))
    ckpt = Model(CFG, params, task={"kind": "instruct"}).save(tmp_path / "tiny-chat")
    served = load(Options(ckpt=str(ckpt), slots=2))
    with Background(create_app(served)) as url:
        browser.get(url + "/")
        assert "tiny-chat" in browser.find_element(By.ID, "meta").text
        browser.find_element(By.ID, "max").clear()
        browser.find_element(By.ID, "max").send_keys("12")
        browser.find_element(By.ID, "prompt").send_keys("Name a color.")
        browser.find_element(By.ID, "send").click()
        answer = lambda d: d.find_elements(By.CSS_SELECTOR, "#log .assistant")
        WebDriverWait(browser, 30).until(lambda d: answer(d) and answer(d)[0].text.strip())
        WebDriverWait(browser, 30).until(lambda d: served.engine.free() == 2)
        text = answer(browser)[0].text
        user = browser.find_element(By.CSS_SELECTOR, "#log .user").text
        shot = Path(os.environ.get("GPTJAX_SCREENSHOT") or tmp_path / "chat.png")
        browser.save_screenshot(str(shot))
    assert user == "Name a color."
    assert browser.find_element(By.ID, "error").text == ""
    assert len(text) > 0 and shot.stat().st_size > 0
