"""The web page in a real headless Chromium (Selenium), with a raw-socket line user
in the same room: messages, history, a DM, a server restart, a phone-sized window.

Screenshots of the page are taken on the way; with PYCHAT_SCREENSHOTS=DIR they
are kept in DIR (docs/ holds the ones the README shows:
``PYCHAT_SCREENSHOTS=docs bash tests/run tests/test_browser.py``)."""

import os
import shutil
import socket
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from helpers import EVENT, ServerProcess
from pychat.core.history import MESSAGE, HistoryStore

DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chrome(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary:
        options.binary_location = binary
    driver_path = shutil.which("chromedriver")
    service = webdriver.ChromeService(executable_path=driver_path) if driver_path else None
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_window_size(width, height)
    return driver


class Page:
    """One browser user of the page."""

    def __init__(self, port: int, name: str, width: int = 1200, height: int = 800, password: str = "",
                 refused: bool = False) -> None:
        """Open the page and log in as NAME (with PASSWORD, for a registered name);
        REFUSED: wait for the login form's error instead of the chat."""
        self.driver = chrome(width, height)
        self.name = name
        self.driver.get(f"http://127.0.0.1:{port}/")
        self.wait(lambda d: d.find_element(By.ID, "name").is_displayed())
        self.driver.find_element(By.ID, "name").send_keys(name)
        if password:
            self.driver.find_element(By.ID, "password").send_keys(password)
        self.driver.find_element(By.ID, "name").send_keys(Keys.ENTER)
        if refused:
            self.wait(lambda d: d.find_element(By.ID, "login-error").text != "")
        else:
            self.wait(lambda d: d.find_element(By.ID, "title").text == "#general")

    def wait(self, condition, timeout: float = DEADLINE):
        # The page redraws its lists as lines arrive: an element found a moment
        # ago may be gone; the condition is then simply tried again.
        return WebDriverWait(self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)

    def log_lines(self) -> list[str]:
        """The message list as shown, one string per line (read in one round trip)."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#log li')].map((li) => li.innerText.replace(/\\s+/g, ' ').trim())")

    def wait_line(self, ending: str) -> None:
        self.wait(lambda d: any(line.endswith(ending) for line in self.log_lines()))

    def type(self, text: str) -> None:
        box = self.driver.find_element(By.ID, "input")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def count(self, ending: str) -> int:
        return sum(1 for line in self.log_lines() if line.endswith(ending))

    def screenshot(self, tmp_path: Path, name: str, dark: bool) -> Path:
        self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})
        path = tmp_path / name
        assert self.driver.save_screenshot(str(path))
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        keep = os.environ.get("PYCHAT_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / name)
        return path

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def pages():
    opened: list[Page] = []
    yield opened
    for page in opened:
        page.quit()


def test_two_browsers_and_a_line_user_share_a_room_and_survive_a_restart(tmp_path, pages):
    web = free_port()
    db = str(tmp_path / "chat.db")
    flags = ("--web-port", str(web))
    server = ServerProcess(tmp_path, *flags, db=db)
    try:
        lou = server.client("lou")
        lou.send("hello before the browsers")
        ann = Page(web, "ann")
        pages.append(ann)
        ann.wait_line("lou: hello before the browsers")  # history replayed on join
        ann.type("hi from ann")
        lou.expect(EVENT + r"#general ann: hi from ann$")
        ben = Page(web, "ben")
        pages.append(ben)
        ben.wait_line("ann: hi from ann")  # history, from a browser this time
        ben.wait_line("lou: hello before the browsers")
        lou.send("hello browsers")
        ann.wait_line("lou: hello browsers")
        ben.wait_line("lou: hello browsers")
        ben.type("from ben")
        ann.wait_line("ben: from ben")
        ben.type("/dm lou psst, a secret")
        lou.expect(r"\(dm\) ben: psst, a secret$")
        assert ben.driver.find_element(By.ID, "title").text == "lou"  # the DM has its own view
        assert not any("psst" in line for line in ann.log_lines())
        ben.wait(lambda d: d.find_element(By.XPATH, "//ul[@id='rooms']//button[starts-with(., '#general')]").click()
                 or True)
        ben.wait(lambda d: d.find_element(By.ID, "title").text == "#general")
        ann.screenshot(tmp_path, "web-desktop-light.png", dark=False)
        ann.screenshot(tmp_path, "web-desktop-dark.png", dark=True)

        # The server restarts; both pages reconnect by themselves.
        server.stop()
        server = ServerProcess(tmp_path, *flags, db=db)
        for page in (ann, ben):
            page.wait(lambda d: "connected as" in d.find_element(By.ID, "status").text, timeout=40)
        lou = server.client("lou")
        lou.send("after the restart")
        for page in (ann, ben):
            page.wait_line("lou: after the restart")
        # Replayed history and live lines: every line once, none lost.
        for page in (ann, ben):
            for ending in ("lou: hello before the browsers", "ann: hi from ann", "lou: hello browsers",
                           "ben: from ben", "lou: after the restart"):
                assert page.count(ending) == 1, (page.name, ending, page.log_lines())
    finally:
        server.stop()


def test_a_phone_sized_window_shows_the_messages_and_the_input(tmp_path, pages, make_server):
    web = free_port()
    server = make_server("--web-port", str(web))
    phone = Page(web, "pia", width=375, height=667)
    pages.append(phone)
    lou = server.client("lou")
    lou.send("hello phone")
    phone.wait_line("lou: hello phone")
    width = phone.driver.execute_script("return window.innerWidth")
    for element_id in ("log", "input"):
        element = phone.driver.find_element(By.ID, element_id)
        assert element.is_displayed()
        rect = element.rect
        assert rect["x"] >= 0 and rect["x"] + rect["width"] <= width + 1, (element_id, rect, width)
    assert not phone.driver.find_element(By.CSS_SELECTOR, ".members").is_displayed()  # room for the messages
    assert phone.driver.find_element(By.ID, "log").get_attribute("role") == "log"
    phone.type("typed on a phone")
    lou.expect(EVENT + r"#general pia: typed on a phone$")
    phone.screenshot(tmp_path, "web-phone-light.png", dark=False)
    phone.screenshot(tmp_path, "web-phone-dark.png", dark=True)


def history_file(tmp_path: Path, first_id: int) -> str:
    """A history file whose next message ids start at FIRST_ID (past 2**53 as
    on a cluster, where ids are made from the stream's clock: a JavaScript
    Number then no longer holds every id)."""
    path = str(tmp_path / "history.db")
    store = HistoryStore(path)
    room = store.add_room("attic", "attic", None, 0.0)
    store.number_from(first_id)
    store.append(room, 0.0, MESSAGE, "past", "kept")
    store.close()
    return path


ID_STARTS = pytest.mark.parametrize("first_id", [1, 2**60 + 1], ids=["small-ids", "ids-past-2**53"])


@ID_STARTS
def test_scrolling_up_loads_older_history_once_each(tmp_path, pages, make_server, first_id):
    web = free_port()
    server = make_server("--web-port", str(web), "--flood-rate", "0", db=history_file(tmp_path, first_id))
    lou = server.client("lou")
    for n in range(1, 81):
        lou.send(f"old {n}")
    lou.sync()
    page = Page(web, "reader")
    pages.append(page)
    page.wait_line("lou: old 80")
    assert page.count("lou: old 1") == 0  # only the last 20 are replayed on joining

    def scrolled_to_the_start(driver) -> bool:
        driver.execute_script("document.getElementById('log').scrollTop = 0")
        return page.count("lou: old 1") == 1

    page.wait(scrolled_to_the_start)
    lines = [line for line in page.log_lines() if "lou: old " in line]
    assert [int(line.rsplit(" ", 1)[1]) for line in lines] == list(range(1, 81))  # in order, each once


@ID_STARTS
def test_a_dropped_page_catches_up_on_what_it_missed(tmp_path, pages, make_server, first_id):
    web = free_port()
    server = make_server("--web-port", str(web), "--oper", "boss", "--flood-rate", "0",
                         db=history_file(tmp_path, first_id))
    boss = server.client("boss")
    boss.password_command("/register boss-pass-1")
    page = Page(web, "ann")
    pages.append(page)
    boss.send("before the drop")
    page.wait_line("boss: before the drop")
    boss.send("/kill ann testing")
    boss.expect(r"ann is disconnected")
    for n in range(1, 251):  # more than the 20 replayed on joining again, and than one page of 100
        boss.send(f"missed {n}")
    boss.sync()
    page.wait(lambda d: "connected as ann" in d.find_element(By.ID, "status").text
              and page.count("boss: missed 250") == 1 and page.count("boss: missed 150") == 1, timeout=40)
    shown = page.log_lines()
    for n in range(1, 251):
        assert sum(line.endswith(f"boss: missed {n}") for line in shown) == 1, (n, shown)
    assert page.count("boss: before the drop") == 1


def test_a_registered_name_needs_its_password_and_other_rooms_count_unread(tmp_path, pages, make_server):
    web = free_port()
    server = make_server("--web-port", str(web))
    # The owner registers from another address: a password check costs two of
    # an address's five units (one back every 2 s), so register, a wrong and a
    # right password from one address within 2 s would be refused.
    owner = server.client("vera", source="127.0.0.2")
    owner.password_command("/register vera-pass-1")
    owner.send("/quit")
    owner.wait_closed()

    wrong = Page(web, "vera", password="not-it", refused=True)
    pages.append(wrong)
    assert not wrong.driver.find_element(By.ID, "chat").is_displayed()
    assert "wrong password for vera" in wrong.driver.find_element(By.ID, "login-error").text
    page = Page(web, "vera", password="vera-pass-1")
    pages.append(page)

    page.type("/join den")  # a second room; the view switches to it
    page.wait(lambda d: d.find_element(By.ID, "title").text == "#den")
    lou = server.client("lou")
    lou.send("hi vera, are you there?")  # in #general, which is not on screen
    lou.send("second line")

    def general_button(driver):
        return driver.find_element(By.XPATH, "//ul[@id='rooms']//button[starts-with(., '#general')]")

    page.wait(lambda d: general_button(d).find_elements(By.CLASS_NAME, "unread")
              and general_button(d).find_element(By.CLASS_NAME, "unread").text == "2")
    page.wait(lambda d: general_button(d).click() or True)
    page.wait_line("lou: second line")
    mention = page.driver.find_element(By.XPATH, "//ol[@id='log']/li[contains(., 'are you there')]")
    assert "mention" in mention.get_attribute("class")
    page.wait(lambda d: not general_button(d).find_elements(By.CLASS_NAME, "unread"))  # read now
    # Keyboard only: Alt+Down moves to the next view.
    page.driver.find_element(By.ID, "input").send_keys(Keys.ALT, Keys.ARROW_DOWN)
    page.wait(lambda d: d.find_element(By.ID, "title").text == "#den")
