"""A real headless Chromium, driven through chromedriver's W3C WebDriver protocol with the standard library only.

``.ci/run`` installs Debian's ``chromium`` and ``chromium-driver`` when they are missing.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Self

WINDOW = (1100, 1400)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Chromium:
    """``with Chromium() as browser: browser.open(path); browser.script("return ...")``."""

    def __enter__(self) -> Self:
        driver, binary = shutil.which("chromedriver"), shutil.which("chromium")
        if not driver or not binary:
            raise RuntimeError("headless Chromium is missing: apt-get install chromium chromium-driver (.ci/run does)")
        self.port = _free_port()
        self.process = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                self._call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WINDOW[0]},{WINDOW[1]}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": binary, "args": args}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["value"]

    def open(self, path: Path) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": Path(path).resolve().as_uri()})

    def script(self, source: str) -> Any:
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": source, "args": []})

    def hover(self, css: str) -> None:
        """Move the pointer onto the first element matching ``css`` (what a user does to see its tooltip)."""
        element = self._call("POST", f"/session/{self.session}/element", {"using": "css selector", "value": css})
        move = {"type": "pointerMove", "duration": 0, "origin": element, "x": 0, "y": 0}
        self._call("POST", f"/session/{self.session}/actions",
                   {"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                                 "actions": [move]}]})

    def screenshot(self, target: Path) -> None:
        target.write_bytes(base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot")))
