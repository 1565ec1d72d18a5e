"""The browser harness itself: each check it offers reports a page that breaks it.

Pages come from a tiny HTTP server on 127.0.0.1 in this module; the one external URL
(``example.invalid``, a name that never resolves) dies at the harness's refusing proxy.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.browser_harness as harness
import tests.conftest
from tests.browser_harness import (  # noqa: F401 (the fixtures browser, browser_session)
    Browser,
    browser_fixture,
    browser_session_fixture,
)

pytestmark = pytest.mark.integration

# A data: icon so Chromium does not ask for /favicon.ico (a 404 would be a console error).
HEAD = '<meta charset="utf-8"><link rel="icon" href="data:,">'

PAGES = {
    "/console-error.html": f"""<!doctype html><html lang="en"><head>{HEAD}
<title>Console error</title></head><body><main><h1>Console error</h1></main>
<script>console.error("harness-check: console error");</script></body></html>""",
    "/uncaught.html": f"""<!doctype html><html lang="en"><head>{HEAD}
<title>Uncaught</title></head><body><main><h1>Uncaught</h1></main>
<script>throw new Error("harness-check: uncaught");</script></body></html>""",
    "/external.html": f"""<!doctype html><html lang="en"><head>{HEAD}
<title>External</title></head><body><main><h1>External</h1>
<img src="http://example.invalid/x.png" alt="an external picture"></main></body></html>""",
    "/clean.html": f"""<!doctype html><html lang="en"><head>{HEAD}
<title>Clean</title></head><body><main><h1>Clean page</h1>
<img src="/dot.svg" alt="a grey dot" width="8" height="8">
<label for="name">Name</label> <input id="name" type="text">
<button id="greet" type="button">Greet</button><p id="out"></p></main>
<script>
document.getElementById("greet").addEventListener("click", () => {{
  document.getElementById("out").textContent =
    "Hello, " + document.getElementById("name").value;
}});
</script></body></html>""",
    "/inaccessible.html": f"""<!doctype html><html lang="en"><head>{HEAD}
<title>Inaccessible</title></head><body><main><h1>Inaccessible</h1>
<img id="no-alt" src="/dot.svg" width="8" height="8">
<button id="no-name" type="button"></button>
<p id="faint" style="color:#eeeeee;background:#ffffff">Hard to read</p></main></body></html>""",
    "/dot.svg": """<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">
<circle cx="4" cy="4" r="4" fill="#666"/></svg>""",
}


class _Pages(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        kind = "image/svg+xml" if self.path.endswith(".svg") else "text/html; charset=utf-8"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest's output to the tests' own


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, name="browser-pages", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_console_error_is_reported_once(browser: Browser, site: str) -> None:
    browser.open(f"{site}/console-error.html", wait_for="h1")
    errors = browser.console_errors()
    assert any("harness-check: console error" in e.message for e in errors), errors
    assert browser.console_errors() == []  # "since the last call"


def test_uncaught_exception_is_reported(browser: Browser, site: str) -> None:
    browser.open(f"{site}/uncaught.html", wait_for="h1")
    errors = browser.console_errors()
    assert any("Uncaught Error: harness-check: uncaught" in e.message for e in errors), errors


def test_external_request_is_reported_and_never_leaves(browser: Browser, site: str) -> None:
    browser.open(f"{site}/external.html", wait_for="h1")
    external = browser.external_requests()
    assert [r.url for r in external] == ["http://example.invalid/x.png"], external
    # The attempt died at the refusing proxy: nothing was resolved or fetched outside.
    errors = browser.console_errors()
    assert any("example.invalid" in e.message and "ERR_PROXY_CONNECTION_FAILED" in e.message
               for e in errors), errors


def test_clean_page_passes_every_check(browser: Browser, site: str) -> None:
    browser.open(f"{site}/clean.html", wait_for="#greet")
    browser.type("#name", "Ada")
    browser.click("#greet")
    browser.wait_for_text("Hello, Ada", css="#out")
    assert browser.text("#out") == "Hello, Ada"
    seen = {r.url for r in browser.requests()}
    # The log saw the page and its picture, so "no external request" below is not vacuous.
    assert {f"{site}/clean.html", f"{site}/dot.svg"} <= seen, seen
    assert browser.external_requests() == []
    assert browser.console_errors() == []
    violations = browser.axe_violations()
    assert violations == [], harness.format_all(violations)


def test_inaccessible_page_has_serious_violations(browser: Browser, site: str) -> None:
    browser.open(f"{site}/inaccessible.html", wait_for="h1")
    violations = browser.axe_violations()
    by_rule = {v.id: v for v in violations}
    assert {"image-alt", "button-name", "color-contrast"} <= by_rule.keys(), \
        harness.format_all(violations)
    assert by_rule["image-alt"].targets == ("#no-alt",)
    assert by_rule["button-name"].targets == ("#no-name",)
    assert by_rule["color-contrast"].targets == ("#faint",)
    assert all(v.impact in ("serious", "critical") for v in violations)
    assert "critical: image-alt" in str(by_rule["image-alt"])
    # Nothing is lost at a lower threshold, and a misspelt one is an error, not a pass.
    assert len(browser.axe_violations(min_impact="minor")) >= len(violations)
    with pytest.raises(ValueError):
        browser.axe_violations(min_impact="severe")


def test_screenshot_writes_a_png(browser: Browser, site: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_TEST_ARTIFACTS", str(tmp_path))
    browser.open(f"{site}/clean.html", wait_for="h1")
    path = browser.screenshot("clean page")
    assert path == tmp_path / "clean_page.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_artifacts_default_to_the_project_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_TEST_ARTIFACTS", raising=False)
    assert harness.artifacts_dir() == harness.ROOT / "test-artifacts" / "screenshots"


def test_waiting_for_what_never_comes_fails(browser: Browser, site: str) -> None:
    browser.open(f"{site}/clean.html", wait_for="h1")
    with pytest.raises(pytest.fail.Exception, match="no visible element '#missing'"):
        browser.wait_for("#missing", timeout=0.3)
    with pytest.raises(pytest.fail.Exception, match="never appeared"):
        browser.wait_for_text("Goodbye", timeout=0.3)


def test_reset_forgets_requests(browser: Browser, site: str) -> None:
    browser.open(f"{site}/external.html", wait_for="h1")
    assert browser.external_requests()
    browser.reset()
    assert browser.requests() == []
    assert browser.console_errors() == []


@pytest.mark.parametrize(("url", "external"), [
    ("http://127.0.0.1:8080/console", False),
    ("http://127.9.9.9/", False),
    ("http://localhost:1/", False),
    ("ws://[::1]:9/events", False),
    ("data:image/png;base64,AAAA", False),
    ("blob:http://127.0.0.1:1/6c1e", False),
    ("about:blank", False),
    ("http://example.invalid/x.png", True),
    ("https://10.0.0.1/", True),
    ("http://[2001:db8::1]/", True),
])
def test_external_means_not_loopback(url: str, external: bool) -> None:
    assert harness.is_external(url) is external


@pytest.mark.parametrize(("required", "outcome"), [
    (False, pytest.skip.Exception), (True, pytest.fail.Exception)])
def test_missing_chromium_skips_or_fails(monkeypatch: pytest.MonkeyPatch, required: bool,
                                         outcome: type[BaseException]) -> None:
    monkeypatch.setattr(harness, "CHROMIUM_CANDIDATES", ("/nonexistent/chromium",))
    monkeypatch.setattr(harness.shutil, "which", lambda name: None)
    monkeypatch.setattr(tests.conftest, "REQUIRE_PEERS", required)
    with pytest.raises(outcome, match="chromium not installed"):
        harness.require_browser()
