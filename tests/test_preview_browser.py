"""The preview page in a real headless browser (Debian's chromium, driven over DevTools).

The page must load without console errors or exceptions, request nothing but itself and
its ``data:`` images, show the expected records and images (every image decoded by the
browser), and render: a screenshot is kept as a test artifact in ``tmp_path``.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fixtures_interop import make_dataset, make_image, sample_records

from phiv_data.preview import PreviewOptions, build_preview

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1600"]


class Page:
    """A minimal DevTools client: commands by id, events collected on the way."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def send(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(message.get("method") == event for message in self.events):
            self.events.append(json.loads(self.socket.recv(
                timeout=max(0.1, deadline - time.monotonic()))))

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        return result["result"].get("value")


def _devtools_port(process: subprocess.Popen[str], profile: Path) -> int:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.is_file() and port_file.read_text().strip():
            return int(port_file.read_text().split()[0])
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited: {process.stderr.read()}")
        time.sleep(0.05)
    raise RuntimeError("chromium did not open its DevTools port")


def open_in_chromium(html: Path, profile: Path, screenshot: Path) -> dict[str, Any]:
    """Load ``html``, collect what happened, count what is shown, take a screenshot."""
    from websockets.sync.client import connect

    process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                                "--remote-debugging-port=0", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = _devtools_port(process, profile)
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                                   timeout=10))
        url = next(target["webSocketDebuggerUrl"] for target in targets
                   if target["type"] == "page")
        with connect(url, max_size=None, open_timeout=10) as socket:
            page = Page(socket)
            for domain in ("Page", "Runtime", "Log", "Network"):
                page.send(f"{domain}.enable")
            page.send("Page.navigate", url=html.resolve().as_uri())
            page.wait_for("Page.loadEventFired")
            shown = page.evaluate("""(() => {
                const images = [...document.querySelectorAll('article.record img')];
                return {
                    records: document.querySelectorAll('article.record').length,
                    images: images.length,
                    decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
                    missing: document.querySelectorAll('[data-missing-image]').length,
                    plots: document.querySelectorAll('svg.plot').length,
                    issues: document.querySelectorAll('[data-issue]').length,
                    firstRecordImages: [...document.querySelectorAll(
                        'article.record:first-of-type img')].map(i => i.alt),
                    height: document.documentElement.scrollHeight,
                };
            })()""")
            shot = page.send("Page.captureScreenshot", format="png",
                             captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            events = page.events
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    return {"shown": shown, "events": events}


def problems_of(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, exceptions and log errors seen while loading."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails']}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console: {params.get('args')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"log: {params['entry']['text']}")
    return found


def test_preview_page_in_headless_chromium(tmp_path: Path):
    assert Path(CHROMIUM).exists(), ("needs Debian's chromium: apt-get install -y chromium "
                                     "(.ci/run does), or deselect with -m 'not browser'")
    records = sample_records() + [
        {"id": f"extra-{index}", "conversations": [
            {"images": [f"big/{index}.png"], "user": f"Q{index}?", "assistant": "yes"}]}
        for index in range(70)]
    shard = make_dataset(tmp_path / "data", [record for record in records
                                             if not record["id"].startswith("extra")])
    for index in range(70):
        make_image(tmp_path / "data/images/big" / f"{index}.png", size=(200, 120 + index))
    with shard.open("ab") as handle:
        for record in records[4:]:
            handle.write(json.dumps(record).encode() + b"\n")
        handle.write(b'{"id": 7}\n')
    html = tmp_path / "report.html"
    result = build_preview(shard, html, PreviewOptions(seed=1))
    assert result.shown == 50  # 75 lines, the default sample of 50

    screenshot = tmp_path / "preview.png"
    seen = open_in_chromium(html, tmp_path / "profile", screenshot)
    assert problems_of(seen["events"]) == []
    requested = [event["params"]["request"]["url"] for event in seen["events"]
                 if event.get("method") == "Network.requestWillBeSent"]
    assert requested and all(url.startswith(("data:", html.resolve().as_uri()))
                             for url in requested), requested
    shown = seen["shown"]
    assert shown["records"] == 50 == len(re.findall(r"<article ", html.read_text()))
    assert shown["images"] == result.embedded_images == result.shown_images > 0
    assert shown["decoded"] == shown["images"] and shown["missing"] == 0
    assert shown["plots"] == 5
    assert shown["height"] > 1600
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000
