"""A minimal W3C WebDriver client for one browser test: Debian's chromium + chromedriver.

Four endpoints of the WebDriver protocol (new session, navigate, run a script,
end session) plus chromedriver's Chrome DevTools passthrough, which sets the
``Authorization`` header for every request the page makes (Flower's tasks page
loads its table with XHR). That is all the test needs, so it needs no Python
package beyond the standard library.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.waiting import eventually

__all__ = ["BROWSER", "DRIVER", "WebDriver"]

BROWSER = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")

#: Headless, and no background connections (this machine's network is closed to them).
_ARGUMENTS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


class WebDriver:
    """A headless chromium driven through chromedriver."""

    def __init__(self) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="cloudworker-chromium-")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self._driver = subprocess.Popen(
            [str(DRIVER), f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._base = f"http://127.0.0.1:{port}"
        self._wait_until_listening(port)
        options = {
            "binary": str(BROWSER),
            "args": [*_ARGUMENTS, f"--user-data-dir={self._profile.name}"],
        }
        session = self._call(
            "POST",
            "/session",
            {
                "capabilities": {
                    "alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}
                }
            },
        )
        self._session = f"/session/{session['sessionId']}"

    def devtools(self, command: str, params: dict[str, Any]) -> Any:
        """Run a Chrome DevTools Protocol command."""
        return self._call(
            "POST", f"{self._session}/goog/cdp/execute", {"cmd": command, "params": params}
        )

    def open(self, url: str) -> None:
        self._call("POST", f"{self._session}/url", {"url": url})

    def run(self, script: str) -> Any:
        """The value of JavaScript ``script`` (a function body) in the page."""
        return self._call("POST", f"{self._session}/execute/sync", {"script": script, "args": []})

    def close(self) -> None:
        try:
            self._call("DELETE", self._session)
        finally:
            self._driver.terminate()
            self._driver.wait(30)
            self._profile.cleanup()

    def __enter__(self) -> WebDriver:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self._base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def _wait_until_listening(self, port: int, timeout: float = 30) -> None:
        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        eventually(listening, timeout=timeout, what=f"chromedriver listening on port {port}")
