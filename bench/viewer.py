#!/usr/bin/env python
"""The viewer in a real browser: how soon a viewer link shows its first image, how long the
background prefetch of a 300-slice series takes, and how fast a prefetched series scrolls.

The bridge runs as ``bridge serve`` in its own process (SQLite, defaults) with a 300-slice
512×512 16-bit CT series stored by STOW-RS (the phantom of ``bench/rendered.py``); an MIS link
comes from ``GET /api/links``; Debian's headless Chromium (the tests' harness, 1280×900) opens
it on loopback. Targets (issue 15): the first image within 300 ms of opening the link, and
scrolling at 20 frames/s or more once prefetched.

- **first image**: from the navigation's start (``performance.timeOrigin``) to the first frame
  drawn on the canvas: page, scripts, the series and instance lists and one rendered frame.
  The first opening (cold: nothing cached in the bridge or the browser) and then each of
  ``--repeats`` fresh openings of a new link in a new page (the browser's cache of the
  console's files warm, the bridge's header cache warm).
- **prefetch**: until every frame of the series is in the viewer's cache.
- **scroll**: one ArrowDown per animation frame (what a held key or a wheel gives) through the
  whole series, frames drawn per second; and as fast as the events can be sent (headroom).

    python bench/viewer.py [--slices 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import StealMeter, bench_token, bridge_process, log, machine
from bench.rendered import series, stow, urls_of
from bridge.store.db import make_engine
from tests.browser_harness import Browser, running_browser

FIRST_IMAGE_TARGET_MS = 300.0
SCROLL_TARGET_FPS = 20.0

_SCROLL = """
const [paced, done] = [arguments[0], arguments[arguments.length - 1]];
const canvas = document.querySelector('.stage canvas');
canvas.dispatchEvent(new KeyboardEvent('keydown', {key: 'Home', bubbles: true}));
const frames = Number(canvas.dataset.frames);
const before = Number(canvas.dataset.drawn);
const start = performance.now();
let sent = 0;
function step() {
  canvas.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}));
  sent += 1;
  if (sent < frames - 1) { paced ? requestAnimationFrame(step) : step(); return; }
  const seconds = (performance.now() - start) / 1000;
  done({drawn: Number(canvas.dataset.drawn) - before, seconds,
        last: Number(canvas.dataset.frame)});
}
paced ? requestAnimationFrame(step) : step();
"""


def new_link(base: str, token: str, study: str) -> str:
    with httpx.Client(base_url=base, timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as mis:
        answer = mis.get("/api/links", params={"StudyInstanceUID": study})
        answer.raise_for_status()
        url = urlsplit(answer.json()[0]["url"])
    return f"{base}{url.path}#{url.fragment}"


def wait_stable(database_url: str) -> None:
    """Until the stored study is stable (its stability work done), then a quiet second."""
    engine = make_engine(database_url)
    deadline = time.monotonic() + 120
    try:
        while True:
            with engine.connect() as conn:
                states = set(conn.execute(text("SELECT state FROM studies")).scalars())
            if states == {"stable"}:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the study did not become stable: {states}")
            time.sleep(0.2)
    finally:
        engine.dispose()
    time.sleep(1.0)


def first_image_ms(browser: Browser, url: str) -> float:
    browser.open("about:blank")
    browser.open(url)
    deadline = time.monotonic() + 30
    script = ("const c = document.querySelector('.stage canvas');"
              "return c && c.dataset.firstImage ? Number(c.dataset.firstImage) : null;")
    while (value := browser.driver.execute_script(script)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the viewer showed no image within 30 s")
        time.sleep(0.005)
    return float(value)


def wait_prefetched(browser: Browser, frames: int) -> float:
    start = time.perf_counter()
    script = "return Number(document.querySelector('.stage canvas').dataset.loaded)"
    while browser.driver.execute_script(script) < frames:
        if time.perf_counter() - start > 300:
            raise RuntimeError("the series was not prefetched within 300 s")
        time.sleep(0.02)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trace", action="store_true",
                        help="print the cold opening's requests (start and end, ms)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    try:
        log(f"building {args.slices} CT slices (512x512, 16 bits)")
        objects = series(args.slices)
        _, uids = urls_of(objects)
        url = f"sqlite:///{root / 'bridge.db'}"
        token = bench_token(url)
        steal = StealMeter()
        # A study becomes stable a second after its last object (not the default minute),
        # and the cold opening waits for that: it measures opening a stored study, not the
        # viewer competing with the bridge's indexing of the upload for two cores.
        with bridge_process(root / "var", url, {"BRIDGE_STUDY_STABLE_SECONDS": "1"}) as ports, \
                running_browser(timeout=30) as browser:
            base = f"http://127.0.0.1:{ports['http']}"
            stow(base, token, objects)
            wait_stable(url)
            with httpx.Client(base_url=base, timeout=30,
                              headers={"Authorization": f"Bearer {token}"}) as client:
                study = client.get("/dicomweb/instances", params={
                    "SOPInstanceUID": uids[0]},
                    headers={"Accept": "application/dicom+json"}).json()[0]["0020000D"][
                        "Value"][0]
            cold = first_image_ms(browser, new_link(base, token, study))
            if args.trace:
                trace(browser)
            prefetch = wait_prefetched(browser, args.slices)
            paced = browser.driver.execute_async_script(_SCROLL, True)
            burst = browser.driver.execute_async_script(_SCROLL, False)
            warm = [first_image_ms(browser, new_link(base, token, study))
                    for _ in range(args.repeats)]
        report(args, cold, warm, prefetch, paced, burst, steal.percent())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def trace(browser: Browser) -> None:
    """The cold opening's navigation and requests, in the browser's own timings."""
    entries = browser.driver.execute_script(
        "return [performance.getEntriesByType('navigation')[0], "
        "...performance.getEntriesByType('resource')].map(e => "
        "[e.name, e.startTime, e.responseStart, e.responseEnd]);")
    for name, start, first_byte, end in entries:
        log(f"  {start:7.1f} {first_byte:7.1f} {end:7.1f}  {urlsplit(name).path[-70:]}")


def report(args: argparse.Namespace, cold: float, warm: list[float], prefetch: float,
           paced: dict[str, float], burst: dict[str, float], steal: float) -> None:
    median = statistics.median(warm)
    paced_fps = paced["drawn"] / paced["seconds"]
    burst_fps = burst["drawn"] / burst["seconds"]
    log(f"viewer link, {args.slices}-slice 512x512 CT, headless Chromium, {machine()}, "
        f"steal {steal:.1f}%")
    log(f"  first image, cold:              {cold:7.0f} ms   target {FIRST_IMAGE_TARGET_MS:.0f} ms"
        f" -> {FIRST_IMAGE_TARGET_MS / cold:.2f}x")
    log(f"  first image, new link (median of {len(warm)}): {median:5.0f} ms   "
        f"(best {min(warm):.0f}, worst {max(warm):.0f}) -> {FIRST_IMAGE_TARGET_MS / median:.2f}x")
    log(f"  prefetch of the series:         {prefetch:7.2f} s    "
        f"({args.slices / prefetch:.0f} frames/s)")
    log(f"  scroll, one step per animation frame: {paced_fps:6.1f} frames/s, "
        f"{paced['drawn']:.0f} drawn   target {SCROLL_TARGET_FPS:.0f} -> "
        f"{paced_fps / SCROLL_TARGET_FPS:.2f}x")
    log(f"  scroll, as fast as events come:       {burst_fps:6.0f} frames/s (headroom)")


if __name__ == "__main__":
    main()
