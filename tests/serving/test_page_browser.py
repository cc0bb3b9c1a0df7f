"""The chat page at ``/`` in a real headless Chromium (selenium) against the real uvicorn server.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package: skipped without them, except
under CI (``CI=true``), where a missing browser is a failure (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import time

import httpx
import pytest
import torch

from tencentpretrain.models.model import Model
from tests.generation.scripted import tiny_tokenizer
from tests.helpers import tiny_llama_config
from tests.serving.helpers import make_app, running
from tests.strict_deps import strict

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
STEP_DELAY_S = 0.02  # per forward pass: a 400-token answer streams for ~8 s, long enough to Stop or Clear it
LONG = 400  # max_tokens of the answers the test interrupts
SHORT = 150  # an answer the test watches mid-stream (3 s at least) and then lets finish
SCREENSHOTS = os.environ.get("PAGE_SCREENSHOTS")  # a folder to save screenshots of the page in, when set


class RepeatingModel(Model):
    """A real model whose logits are pushed so that every next token is ``token``, one forward pass every
    ``delay`` seconds: an answer of n tokens is exactly n times the token's text, and it streams slowly."""

    def setup(self, token: int, delay: float) -> RepeatingModel:
        self.token, self.delay = token, delay
        return self

    def logits(self, src, seg=None, *, positions=None, cache=None, last_only=False):
        time.sleep(self.delay)
        out = super().logits(src, seg, positions=positions, cache=cache, last_only=last_only)
        out[..., self.token] += 1e4
        return out


def _require_browser():
    """Skip (fail under CI) when Chromium, its driver or selenium is missing."""
    missing = [name for name, found in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        reason = ("browser test needs " + ", ".join(missing)
                  + ": apt-get install -y chromium chromium-driver")
        if strict():  # CI: a missing test dependency is a failure (tests/strict_deps.py)
            pytest.fail("under CI " + reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def good(tokenizer):
    """The token id of "好" and its text (one piece, no space prefix)."""
    ids = tokenizer.encode("好")
    token = ids[-1]
    assert tokenizer.decode([token] * 3) == "好好好"
    return token


def _repeating_model(tokenizer, token: int) -> RepeatingModel:
    torch.manual_seed(0)
    model = RepeatingModel(tiny_llama_config(), tokenizer.vocab_size)
    model.init_weights()
    return model.eval().setup(token, STEP_DELAY_S)


@pytest.fixture(scope="module")
def url(tokenizer, good):
    with running(make_app(_repeating_model(tokenizer, good), tokenizer, context_length=2 * LONG + 200)) as base:
        yield base


@pytest.fixture(scope="module")
def driver():
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1000,900"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


class Page:
    """The chat page in the browser: its controls and its JavaScript state."""

    def __init__(self, driver, url: str) -> None:
        self.driver, self.url = driver, url
        driver.get(url + "/")
        self.wait_idle()

    def element(self, element_id: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

    def set_field(self, element_id: str, value) -> None:
        self.driver.execute_script("document.getElementById(arguments[0]).value = arguments[1]",
                                   element_id, str(value))

    def type_and_send(self, text: str, max_tokens: int) -> None:
        self.set_field("max_tokens", max_tokens)
        self.set_field("temperature", 0)
        box = self.element("input")
        box.clear()
        box.send_keys(text)
        self.element("send").click()

    def history(self) -> list[dict]:
        """The conversation the page will send next (its JavaScript ``messages``)."""
        return self.driver.execute_script("return messages")

    def bubbles(self) -> list[tuple[str, str]]:
        """(class, text) of each bubble in the log."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#log .msg')].map(d => [d.className, d.textContent])")

    def busy(self) -> bool:
        return self.driver.execute_script("return active !== null")

    def wait(self, condition, what: str, timeout: float = 30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; bubbles: {self.bubbles()}")

    def wait_idle(self) -> None:
        self.wait(lambda: not self.busy(), "the answer to end")

    def wait_answer_text(self) -> str:
        """Wait until the last bubble (the streaming answer) shows some text; return it."""
        return self.wait(lambda: self.bubbles()[-1][1], "the first streamed text")


def _screenshot(driver, name: str) -> None:
    if SCREENSHOTS:
        driver.save_screenshot(os.path.join(SCREENSHOTS, name + ".png"))


def _active_requests(url: str) -> int:
    return httpx.get(url + "/health").json()["active"]


def _wait_server_idle(url: str) -> None:
    deadline = time.time() + 20
    while _active_requests(url) and time.time() < deadline:
        time.sleep(0.05)
    assert _active_requests(url) == 0, "the aborted request still holds a row on the server"


def test_send_streams_the_answer_and_disables_send(driver, url):
    page = Page(driver, url)
    assert driver.title == "Chat · tiny"
    assert page.element("send").is_enabled() and not page.element("stop").is_enabled()
    page.type_and_send("你好", max_tokens=SHORT)
    page.wait(lambda: len(page.bubbles()[-1][1]) >= 3, "streamed text")
    # Mid-stream: part of the answer shown, Send disabled, Stop enabled.
    partial = page.bubbles()[-1][1]
    assert 3 <= len(partial) < SHORT and partial == "好" * len(partial)
    assert not page.element("send").is_enabled() and page.element("stop").is_enabled()
    # Enter while the answer streams sends nothing and keeps the typed text.
    from selenium.webdriver.common.keys import Keys

    page.element("input").send_keys("再来", Keys.ENTER)
    _screenshot(driver, "streaming")
    page.wait_idle()
    assert page.bubbles() == [["msg user", "你好"], ["msg assistant", "好" * SHORT]]
    assert page.history() == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好" * SHORT}]
    assert page.element("input").get_attribute("value") == "再来"
    assert page.element("send").is_enabled() and not page.element("stop").is_enabled()


def test_stop_keeps_the_partial_answer_and_the_next_message_works(driver, url):
    page = Page(driver, url)
    page.type_and_send("第一", max_tokens=LONG)
    page.wait_answer_text()
    page.element("stop").click()
    page.wait_idle()
    _wait_server_idle(url)
    [user, answer] = page.bubbles()
    kept = answer[1]
    assert user == ["msg user", "第一"]
    assert answer[0] == "msg assistant stopped"
    assert 1 <= len(kept) < LONG and kept == "好" * len(kept)
    assert page.history() == [{"role": "user", "content": "第一"}, {"role": "assistant", "content": kept}]
    assert page.element("send").is_enabled() and not page.element("stop").is_enabled()
    _screenshot(driver, "stopped")

    # The next message is sent with the stopped exchange in its history and answered (no 400).
    page.type_and_send("第二", max_tokens=5)
    page.wait_idle()
    assert page.bubbles()[2:] == [["msg user", "第二"], ["msg assistant", "好" * 5]]
    assert page.history() == [{"role": "user", "content": "第一"}, {"role": "assistant", "content": kept},
                              {"role": "user", "content": "第二"}, {"role": "assistant", "content": "好" * 5}]


def test_stop_before_any_text_withdraws_the_question(driver, url):
    page = Page(driver, url)
    # The fetch is aborted before it is sent: the exchange leaves no trace but its text back in the input box.
    driver.execute_script("document.getElementById('input').value = '撤回';"
                          "document.getElementById('form').requestSubmit();"
                          "document.getElementById('stop').click();")
    page.wait_idle()
    assert page.bubbles() == [] and page.history() == []
    assert page.element("input").get_attribute("value") == "撤回"
    _wait_server_idle(url)


def test_clear_during_an_answer_empties_the_history(driver, url):
    page = Page(driver, url)
    page.type_and_send("第一", max_tokens=5)
    page.wait_idle()
    page.type_and_send("第二", max_tokens=LONG)
    page.wait_answer_text()
    page.element("clear").click()
    assert page.bubbles() == [] and page.history() == []
    assert page.element("send").is_enabled() and not page.element("stop").is_enabled()
    _wait_server_idle(url)
    time.sleep(0.3)  # the aborted request's handler has run: it must not have brought anything back
    assert page.bubbles() == [] and page.history() == []

    page.type_and_send("第三", max_tokens=4)
    page.wait_idle()
    assert page.bubbles() == [["msg user", "第三"], ["msg assistant", "好" * 4]]
    assert page.history() == [{"role": "user", "content": "第三"}, {"role": "assistant", "content": "好" * 4}]


def test_a_server_error_drops_the_exchange(driver, url):
    page = Page(driver, url)
    page.type_and_send("第一", max_tokens=3)
    page.wait_idle()
    page.type_and_send("太长", max_tokens=100000)  # beyond the context: 400
    page.wait_idle()
    bubbles = page.bubbles()
    assert bubbles[2] == ["msg user failed", "太长"]
    assert bubbles[3][0] == "msg error" and bubbles[3][1].startswith("Error: 400: ")
    assert page.history() == [{"role": "user", "content": "第一"}, {"role": "assistant", "content": "好" * 3}]
    page.type_and_send("第二", max_tokens=2)
    page.wait_idle()
    assert page.bubbles()[-1] == ["msg assistant", "好" * 2]


def test_the_api_key_field(driver, tokenizer, good):
    with running(make_app(_repeating_model(tokenizer, good), tokenizer, api_key="secret")) as base:
        page = Page(driver, base)
        page.set_field("key", "wrong")
        page.type_and_send("你好", max_tokens=3)
        page.wait_idle()
        assert page.bubbles()[1][0] == "msg error" and page.bubbles()[1][1].startswith("Error: 401: ")
        assert page.history() == []
        page.set_field("key", "secret")
        page.type_and_send("你好", max_tokens=3)
        page.wait_idle()
        assert page.bubbles()[2:] == [["msg user", "你好"], ["msg assistant", "好" * 3]]
        assert page.history() == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好" * 3}]


def test_max_tokens_left_empty_gets_what_fits(driver, tokenizer, good):
    """The page sends no max_tokens unless one is typed, so a small context still answers (it used to send 256
    and get a 400 from a server started with --seq_length 256)."""
    context = 48  # less than the server's default of 256 new tokens, as with --seq_length 256
    with running(make_app(_repeating_model(tokenizer, good).setup(good, 0.0), tokenizer, context_length=context,
                          default_max_tokens=256)) as small:
        page = Page(driver, small)
        assert page.element("max_tokens").get_attribute("value") == ""
        page.set_field("temperature", 0)
        page.element("input").send_keys("你好")
        page.element("send").click()
        page.wait_idle()
        (_, question), (kind, answer) = page.bubbles()
        usage = httpx.post(small + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "你好"}], "max_tokens": 1}).json()["usage"]
        assert question == "你好" and kind == "msg assistant"
        assert answer == "好" * (context - usage["prompt_tokens"])  # all the context leaves, no error
        assert page.history()[-1] == {"role": "assistant", "content": answer}
