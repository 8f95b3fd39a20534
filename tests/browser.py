"""Render a local HTML file in headless Chromium and report what happened.

Standard library only (plus matplotlib/numpy to decode the screenshot).
Chromium is driven over the DevTools protocol on ``--remote-debugging-pipe``
(NUL-delimited JSON on fds 3/4), so no websocket client and no TCP port is
needed.  Every http(s)/ws(s) request is recorded and then blocked, so a render
never touches the network.

Typical use in a test::

    from browser import chromium_path, render_page

    pytestmark = pytest.mark.skipif(chromium_path() is None, reason="no chromium")

    def test_report_renders(tmp_path):
        rep = render_page(tmp_path / "report.html", tmp_path / "shot.png")
        assert rep.console_errors == [] and rep.network_requests == []
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PageReport", "chromium_path", "render_page"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--window-size=1280,800",
    "--remote-debugging-pipe",
)
_BLOCKED = ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]
_MAX_HEIGHT = 16384  # cap for full-page screenshots, in CSS pixels
# Re-map the two pipe ends to fds 3 (browser reads) and 4 (browser writes),
# then exec the browser; avoids preexec_fn, which is unsafe with threads.
_TRAMPOLINE = (
    "import fcntl,os,sys\n"
    "r,w=(fcntl.fcntl(int(a),fcntl.F_DUPFD,10) for a in sys.argv[1:3])\n"
    "os.dup2(r,3);os.dup2(w,4)\n"
    "[os.close(f) for f in {r,w,int(sys.argv[1]),int(sys.argv[2])}-{3,4}]\n"
    "os.execv(sys.argv[3],sys.argv[3:])\n"
)
_PAGE_INFO_JS = """(() => {
  const imgs = Array.from(document.querySelectorAll('img'));
  const el = document.documentElement, body = document.body || el;
  return {
    title: document.title,
    images_total: imgs.length,
    images_loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    width: Math.max(el.scrollWidth, body.scrollWidth, el.clientWidth),
    height: Math.max(el.scrollHeight, body.scrollHeight, el.clientHeight),
  };
})()"""
_SETTLE_JS = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(1))))"


@dataclass(frozen=True)
class PageReport:
    console_errors: list[str]
    network_requests: list[str]
    images_total: int
    images_loaded: int
    nonblank: bool
    title: str


def chromium_path() -> str | None:
    """Path of a Chromium/Chrome binary, or None when there is none."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class _Pipe:
    """Minimal DevTools client over the browser's fd 3/4 pipe."""

    def __init__(self, to_browser: int, from_browser: int, deadline: float, on_event):
        self._w, self._r, self._deadline, self._on_event = to_browser, from_browser, deadline, on_event
        self._buf = b""
        self._next_id = 0

    def post(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._w, data):]
        except BrokenPipeError:
            raise RuntimeError("Chromium closed the DevTools pipe (crashed?)") from None
        return self._next_id

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        want = self.post(method, params, session)
        while True:
            msg = self._read()
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method} failed: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._on_event(msg)

    def wait_for(self, method: str) -> dict:
        while True:
            msg = self._read()
            if "method" in msg:
                self._on_event(msg)
                if msg["method"] == method:
                    return msg

    def _read(self) -> dict:
        while b"\0" not in self._buf:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out waiting for Chromium")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe (crashed?)")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)


def _is_nonblank(png: bytes) -> bool:
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    return bool((pixels != pixels[:1, :1]).any())


def _console_text(params: dict) -> str:
    parts = []
    for arg in params.get("args", []):
        if "value" in arg:
            parts.append(arg["value"] if isinstance(arg["value"], str) else json.dumps(arg["value"]))
        else:
            parts.append(arg.get("description") or arg.get("unserializableValue") or arg.get("type", ""))
    return " ".join(parts)


def render_page(html_path: Path, screenshot_path: Path, timeout_s: float = 30) -> PageReport:
    """Load ``html_path`` in headless Chromium, screenshot the full page to
    ``screenshot_path`` (PNG) and report console errors, network requests,
    <img> load state, blankness and title.

    Raises FileNotFoundError if the page or Chromium is missing, TimeoutError
    if the whole render takes longer than ``timeout_s`` seconds, RuntimeError
    if Chromium fails.
    """
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(html_path)
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("no chromium binary found (run .ci/install-system.sh)")
    page_url = html_path.as_uri()
    deadline = time.monotonic() + timeout_s

    errors: list[str] = []
    requests: list[str] = []
    conn: _Pipe | None = None

    def on_event(msg: dict) -> None:
        method, p = msg["method"], msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(_console_text(p))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append(f"{d.get('text', 'Uncaught')} {d.get('exception', {}).get('description', '')}".strip())
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            errors.append(f"{e.get('text', '')} ({e['url']})" if e.get("url") else e.get("text", ""))
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if url != page_url and not url.startswith("data:"):
                requests.append(url)
        elif method == "Page.javascriptDialogOpening" and conn is not None:
            conn.post("Page.handleJavaScriptDialog", {"accept": True}, msg.get("sessionId"))

    tmp = Path(tempfile.mkdtemp(prefix="lossdiag-chromium-"))
    to_r, to_w = os.pipe()      # we write -> browser reads (its fd 3)
    from_r, from_w = os.pipe()  # browser writes (its fd 4) -> we read
    log = open(tmp / "chromium.log", "wb")
    proc = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(to_r), str(from_w), binary,
             *_FLAGS, f"--user-data-dir={tmp / 'profile'}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            pass_fds=(to_r, from_w), start_new_session=True, cwd=tmp,
        )
        os.close(to_r)
        os.close(from_w)
        to_r = from_w = -1
        conn = _Pipe(to_w, from_r, deadline, on_event)

        target = conn.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = conn.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            conn.call(f"{domain}.enable", session=sid)
        conn.call("Network.setBlockedURLs", {"urls": _BLOCKED}, sid)
        nav = conn.call("Page.navigate", {"url": page_url}, sid)
        if nav.get("errorText"):
            raise RuntimeError(f"navigation to {page_url} failed: {nav['errorText']}")
        conn.wait_for("Page.loadEventFired")
        conn.call("Runtime.evaluate", {"expression": _SETTLE_JS, "awaitPromise": True}, sid)

        info = conn.call("Runtime.evaluate", {"expression": _PAGE_INFO_JS, "returnByValue": True}, sid)
        info = info["result"]["value"]
        clip = {"x": 0, "y": 0, "scale": 1,
                "width": max(1, info["width"]), "height": max(1, min(info["height"], _MAX_HEIGHT))}
        shot = conn.call("Page.captureScreenshot",
                         {"format": "png", "captureBeyondViewport": True, "clip": clip}, sid)
        png = base64.b64decode(shot["data"])
        screenshot_path = Path(screenshot_path)
        screenshot_path.parent.mkdir(parents=True, exist_ok=True)
        screenshot_path.write_bytes(png)

        return PageReport(
            console_errors=list(errors),
            network_requests=list(requests),
            images_total=int(info["images_total"]),
            images_loaded=int(info["images_loaded"]),
            nonblank=_is_nonblank(png),
            title=str(info["title"]),
        )
    except (TimeoutError, RuntimeError) as exc:
        log.flush()
        tail = (tmp / "chromium.log").read_bytes()[-2000:].decode(errors="replace")
        raise type(exc)(f"{exc}\n--- chromium output (tail) ---\n{tail}") from exc
    finally:
        if proc is not None:
            if conn is not None and proc.poll() is None:
                try:  # polite close first, so Chromium reaps its own helpers
                    conn.post("Browser.close")
                    proc.wait(timeout=3)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # browser + its helper processes
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for fd in (to_r, to_w, from_r, from_w):
            if fd >= 0:
                os.close(fd)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
