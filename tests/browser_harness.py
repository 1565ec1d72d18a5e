"""A real browser for the web console's tests: Debian's headless Chromium driven by Selenium.

``running_browser()`` (or the ``browser`` fixture: one Chromium per test module, reset before
each test) starts ``chromium`` through ``chromedriver`` from their Debian packages. Both paths
are explicit, so Selenium Manager never runs and no browser or driver is ever downloaded; the
start-up even fails loudly if Selenium tries to call it.

Chromium must not reach anything but the bridge under test: every request to a host that is
not loopback goes to a "proxy" that is a bound port nobody listens on, so it fails at once with
``net::ERR_PROXY_CONNECTION_FAILED`` and never leaves the machine (no DNS lookup either: with a
fixed proxy the browser leaves name resolution to the proxy). The attempt is still recorded,
so ``external_requests()`` reports it; and the flags below turn off Chromium's own background
traffic (updates, sync, first-run, default apps). Traced with strace, the only non-loopback
``connect()`` left is chromedriver's and Chromium's IPv6 probe: a UDP socket "connected" to a
public address to learn the route, which sends no packet.

What the page did is read from chromedriver's logs (``goog:loggingPrefs``): the ``browser``
log for console errors and uncaught exceptions, the ``performance`` log (DevTools
``Network.requestWillBeSent``) for requests. A resource that fails to load (a 404 favicon too)
is a console error in Chromium, so it is reported as one: pages under test should say
``<link rel="icon" href="data:,">`` or serve an icon.

Missing ``chromium`` or ``chromedriver`` skips, and fails under ``BRIDGE_REQUIRE_PEERS=1``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent
AXE_JS = Path(__file__).resolve().parent / "fixtures" / "vendor" / "axe-core" / "axe.min.js"

# The real binary, not Debian's /usr/bin/chromium wrapper: the wrapper exports Google API keys
# and adds remote-extension flags, neither of which a test browser should have.
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver",)

#: Seconds a helper waits for an element or text; pages under test are local and small.
DEFAULT_TIMEOUT = 5.0
PAGE_LOAD_TIMEOUT = 15.0
WINDOW_SIZE = (1280, 900)

IMPACT_ORDER = ("minor", "moderate", "serious", "critical")
# Schemes that never touch the network; any other URL with a host is checked for loopback.
LOCAL_SCHEMES = frozenset({"data", "blob", "about", "javascript"})


@dataclass(frozen=True)
class ConsoleEntry:
    """One console error or uncaught exception (``source``: console-api, javascript, network)."""

    level: str
    source: str
    message: str

    def __str__(self) -> str:
        return f"[{self.source}] {self.message}"


@dataclass(frozen=True)
class Request:
    """One request a page made, as Chromium was about to send it."""

    url: str
    method: str
    resource_type: str

    @property
    def external(self) -> bool:
        return is_external(self.url)

    def __str__(self) -> str:
        return f"{self.method} {self.url} ({self.resource_type})"


@dataclass(frozen=True)
class AxeViolation:
    """One axe-core rule the page breaks, with the CSS selectors of the offending nodes."""

    id: str
    impact: str
    help: str
    help_url: str
    targets: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.impact}: {self.id} ({self.help}) at {', '.join(self.targets)}"


def format_all(items: list[Any]) -> str:
    """One item a line, for an assertion message."""
    return "\n".join(str(item) for item in items) or "(none)"


def is_external(url: str) -> bool:
    """True for a URL whose host is not loopback (127.0.0.0/8, ::1, localhost)."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES or not parts.hostname:
        return False
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost
        return True


def artifacts_dir() -> Path:
    """``$BRIDGE_TEST_ARTIFACTS`` if set (CI keeps it), else ``test-artifacts/screenshots``."""
    configured = os.environ.get("BRIDGE_TEST_ARTIFACTS")
    return Path(configured) if configured else ROOT / "test-artifacts" / "screenshots"


def _first_executable(candidates: tuple[str, ...], name: str) -> str | None:
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def browser_binaries() -> tuple[str | None, str | None]:
    """Chromium's and chromedriver's paths, ``None`` for what is not installed."""
    return (_first_executable(CHROMIUM_CANDIDATES, "chromium"),
            _first_executable(CHROMEDRIVER_CANDIDATES, "chromedriver"))


def require_browser() -> tuple[str, str]:
    """Both paths, or skip (fail under ``BRIDGE_REQUIRE_PEERS=1``) when one is missing."""
    chromium, chromedriver = browser_binaries()
    if chromium is None or chromedriver is None:
        from tests.conftest import missing_peer  # pytest only when a test really needs it

        missing = [name for name, path in (("chromium", chromium),
                                           ("chromium-driver", chromedriver)) if path is None]
        missing_peer(f"{' and '.join(missing)} not installed (Debian packages; "
                     "scripts/install-peers.sh installs them)")
    assert chromium is not None and chromedriver is not None
    return chromium, chromedriver


def _chromium_options(chromium: str, blackhole_port: int) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}", "--lang=en",
        # Chromium's own traffic: none of it is wanted, and none of it may leave the machine.
        "--no-first-run", "--no-default-browser-check", "--disable-default-apps",
        "--disable-sync", "--disable-component-update", "--disable-background-networking",
        "--disable-domain-reliability", "--disable-client-side-phishing-detection",
        "--disable-features=OptimizationHints,MediaRouter,Translate",
        "--metrics-recording-only", "--password-store=basic", "--use-mock-keychain",
        # Everything but loopback goes to a port that refuses connections (see the docstring).
        f"--proxy-server=http://127.0.0.1:{blackhole_port}",
        "--proxy-bypass-list=localhost;127.0.0.1;[::1]",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return options


def _refusing_port() -> socket.socket:
    """A bound loopback port that never listens: connecting to it is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


class Browser:
    """One Chromium session and the helpers a console test needs."""

    def __init__(self, driver: webdriver.Chrome, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.driver = driver
        self.timeout = timeout
        self._requests: list[Request] = []
        self._axe_source: str | None = None

    # --- navigation and the page -------------------------------------------------------------

    def open(self, url: str, *, wait_for: str | None = None,
             timeout: float | None = None) -> None:
        """Load ``url`` (returns after its load event); then wait for ``wait_for`` (CSS)."""
        self.driver.get(url)
        if wait_for is not None:
            self.wait_for(wait_for, timeout=timeout)

    def wait_for(self, css: str, *, timeout: float | None = None) -> WebElement:
        """The first visible element matching ``css``; fails the test after the timeout."""
        located = expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
        return self._until(located, f"no visible element {css!r}", timeout)

    def wait_for_text(self, text: str, *, css: str = "body",
                      timeout: float | None = None) -> WebElement:
        """The element matching ``css`` once its visible text contains ``text``."""
        self._until(expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, css), text),
                    f"{text!r} never appeared in {css!r}", timeout)
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def click(self, css: str, *, timeout: float | None = None) -> None:
        self._until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, css)),
                    f"{css!r} never became clickable", timeout).click()

    def type(self, css: str, text: str, *, clear: bool = True,
             timeout: float | None = None) -> None:
        """Type ``text`` into the field matching ``css``, replacing what it held unless told."""
        field = self.wait_for(css, timeout=timeout)
        if clear:
            field.clear()
        field.send_keys(text)

    def text(self, css: str = "body", *, timeout: float | None = None) -> str:
        """The visible text of the element matching ``css``."""
        return self.wait_for(css, timeout=timeout).text

    def _until(self, condition: Any, failure: str, timeout: float | None) -> Any:
        seconds = self.timeout if timeout is None else timeout
        try:
            return WebDriverWait(self.driver, seconds, poll_frequency=0.1).until(condition)
        except TimeoutException:
            pytest.fail(f"{failure} within {seconds:g} s on {self.driver.current_url}")

    # --- what the pages did ------------------------------------------------------------------

    def console_errors(self) -> list[ConsoleEntry]:
        """Console errors, failed loads and uncaught exceptions since the last call."""
        return [ConsoleEntry(entry["level"], entry.get("source", ""), entry["message"])
                for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    def requests(self) -> list[Request]:
        """Every request the pages made since the browser started or was last ``reset()``."""
        self._collect_requests()
        return list(self._requests)

    def external_requests(self) -> list[Request]:
        """The requests to a host that is not loopback (``data:`` and ``blob:`` are local)."""
        return [request for request in self.requests() if request.external]

    def _collect_requests(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message.get("method") == "Network.requestWillBeSent":
                request = params["request"]
                self._requests.append(Request(request["url"], request.get("method", "GET"),
                                              params.get("type", "")))
            elif message.get("method") == "Network.webSocketCreated":
                self._requests.append(Request(params["url"], "GET", "WebSocket"))

    def reset(self) -> None:
        """A blank page, no cookies, and every log emptied: the next test starts afresh."""
        self.driver.get("about:blank")
        self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        self.driver.get_log("browser")
        self.driver.get_log("performance")
        self._requests.clear()

    # --- evidence ----------------------------------------------------------------------------

    def screenshot(self, name: str) -> Path:
        """A PNG of the window in the artefacts folder; returns its path."""
        folder = artifacts_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).removesuffix(".png") or "screenshot"
        path = folder / f"{stem}.png"
        path.write_bytes(self.driver.get_screenshot_as_png())
        return path

    def axe_violations(self, min_impact: str = "serious") -> list[AxeViolation]:
        """axe-core's violations on the current page at ``min_impact`` or worse."""
        if min_impact not in IMPACT_ORDER:
            raise ValueError(f"min_impact must be one of {IMPACT_ORDER}, not {min_impact!r}")
        self._inject_axe()
        results = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            "  .then(r => done(r.violations), e => done({error: String(e)}));")
        if isinstance(results, dict):
            pytest.fail(f"axe-core failed: {results['error']}")
        floor = IMPACT_ORDER.index(min_impact)
        return [_violation(raw) for raw in results
                if IMPACT_ORDER.index(raw.get("impact") or "minor") >= floor]

    def _inject_axe(self) -> None:
        # Injected per page (a navigation drops it), read from disk once per browser.
        if self.driver.execute_script("return typeof window.axe === 'object'"):
            return
        if self._axe_source is None:
            self._axe_source = AXE_JS.read_text(encoding="utf-8")
        self.driver.execute_script(self._axe_source)


def _violation(raw: dict[str, Any]) -> AxeViolation:
    targets = tuple(" ".join(str(part) for part in node["target"]) for node in raw["nodes"])
    return AxeViolation(raw["id"], raw["impact"], raw["help"], raw["helpUrl"], targets)


@contextmanager
def running_browser(timeout: float = DEFAULT_TIMEOUT) -> Iterator[Browser]:
    """A headless Chromium for as long as the ``with`` lasts; quit after."""
    chromium, chromedriver = require_browser()
    blackhole = _refusing_port()
    # Selenium Manager downloads browsers and drivers; with both paths given it must not run.
    forbidden = AssertionError("Selenium Manager was called: a browser path is not explicit")
    try:
        with mock.patch.object(SeleniumManager, "binary_paths", side_effect=forbidden):
            driver = webdriver.Chrome(service=Service(executable_path=chromedriver),
                                      options=_chromium_options(chromium,
                                                                blackhole.getsockname()[1]))
    except Exception:
        blackhole.close()
        raise
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
    driver.set_script_timeout(PAGE_LOAD_TIMEOUT)
    browser = Browser(driver, timeout)
    try:
        yield browser
    finally:
        driver.quit()
        blackhole.close()


# Named apart from the fixture so that a test module imports them (``from tests.browser_harness
# import browser_fixture, browser_session_fixture``) and still calls its argument ``browser``.
@pytest.fixture(scope="module", name="browser_session")
def browser_session_fixture() -> Iterator[Browser]:
    """One Chromium per test module: starting one takes about a second."""
    with running_browser() as browser:
        yield browser


@pytest.fixture(name="browser")
def browser_fixture(browser_session: Browser) -> Browser:
    """The module's Chromium, on a blank page with no cookies and empty logs."""
    browser_session.reset()
    return browser_session
