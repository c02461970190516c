"""Render an HTML report in headless Chromium: a PNG screenshot, the console errors, and page checks.

examples:
  python -m eval.report_check result/report.html --out report.png
  python -m eval.report_check demo_out/result/report.html --out docs/demo_report.png --height 2600

Why Chromium itself: a report that a browser cannot show (a script error, a blocked resource, a blank page)
must fail a test, and only a browser tells. We speak the DevTools protocol over a pipe
(--remote-debugging-pipe: NUL-separated JSON on fds 3/4), so nothing beyond Debian's `chromium` is needed.
Console errors collected: uncaught exceptions, console.error/assert, and browser log entries of level error
(failed or CSP-blocked loads). Exit status 1 when there is any, or when the screenshot is blank.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# no network, no first-run UI, no background services (this kind of machine refuses their connections)
FLAGS = ("--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-extensions", "--hide-scrollbars",
         "--mute-audio", "--remote-debugging-pipe")


class BrowserError(RuntimeError):
    pass


@dataclass
class PageResult:
    png: bytes
    console_errors: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)   # results of the `evaluate` expressions, in order
    page_height: int = 0


def find_browser() -> str:
    named = os.environ.get("CHROMIUM")
    if named:
        return named
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserError("no Chromium found (looked for $CHROMIUM, " + ", ".join(BROWSERS) + "); install Debian's "
                       "`chromium` (apt-get install -y chromium; scripts/setup.sh does it)")


class _Pipe:
    """The DevTools protocol over --remote-debugging-pipe: requests on fd 3, replies and events on fd 4."""

    def __init__(self, proc, write_fd: int, read_fd: int, timeout: float):
        self.proc, self.w, self.r, self.timeout = proc, write_fd, read_fd, timeout
        self.buf, self.next_id, self.events = b"", 0, []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not answer within {self.timeout:.0f} s")
            ready, _, _ = select.select([self.r], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium closed the DevTools pipe (exit status {self.proc.poll()})")
                self.buf += chunk
            elif self.proc.poll() is not None:
                raise BrowserError(f"Chromium exited with status {self.proc.returncode}")
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.w, data):]
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str | None = None) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for k, ev in enumerate(self.events):
                if ev.get("method") == method and (session is None or ev.get("sessionId") == session):
                    return self.events.pop(k)
            self.events.append(self._read_message(deadline))


def console_errors(events: Sequence[dict]) -> list[str]:
    """Readable lines for the error events of a page (exceptions, console.error/assert, error log entries)."""
    out = []
    for ev in events:
        p = ev.get("params", {})
        if ev.get("method") == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("exception: " + ((d.get("exception") or {}).get("description") or d.get("text", "?")))
        elif ev.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description", "")))
                                                            for a in p.get("args", [])))
        elif ev.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            out.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".rstrip())
    return out


def render(html_path: str | os.PathLike, *, width: int = 1400, max_height: int = 3000, evaluate: Sequence[str] = (),
           timeout: float = 60.0) -> PageResult:
    """Load a local HTML file, run `evaluate` expressions (JS, values returned), screenshot the top max_height px."""
    url = Path(html_path).resolve().as_uri()
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()

    def child_fds():  # the protocol's fixed descriptors: the browser reads fd 3 and writes fd 4
        os.dup2(to_child_r, 3)
        os.dup2(from_child_w, 4)

    profile = tempfile.mkdtemp(prefix="medvl-chromium-")
    cmd = [find_browser(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900"]
    if os.geteuid() == 0:
        cmd.append("--no-sandbox")  # Chromium refuses to run its sandbox as root
    proc = subprocess.Popen(cmd + ["about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=child_fds, pass_fds=(3, 4))
    os.close(to_child_r)
    os.close(from_child_w)
    pipe = _Pipe(proc, to_child_w, from_child_r, timeout)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            pipe.call(f"{domain}.enable", session=s)
        pipe.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=s)
        pipe.events.clear()  # about:blank's own events
        pipe.call("Page.navigate", {"url": url}, session=s)
        pipe.wait_event("Page.loadEventFired", session=s)
        values = []
        for expr in evaluate:
            r = pipe.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                          session=s)
            if "exceptionDetails" in r:
                raise BrowserError(f"evaluating {expr!r}: {r['exceptionDetails'].get('exception', {}).get('description')}")
            values.append(r.get("result", {}).get("value"))
        page_h = int(pipe.call("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight",
                                                    "returnByValue": True}, session=s)["result"]["value"])
        shot_h = max(200, min(page_h, max_height))
        pipe.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": shot_h, "deviceScaleFactor": 1, "mobile": False}, session=s)
        import base64

        png = base64.b64decode(pipe.call("Page.captureScreenshot", {"format": "png"}, session=s)["data"])
        pipe.call("Runtime.evaluate", {"expression": "0"}, session=s)  # drain events raised by the resize
        errors = console_errors([e for e in pipe.events if e.get("sessionId") == s])
        try:
            pipe.call("Browser.close")
        except BrowserError:
            pass  # it may close the pipe before answering
        return PageResult(png=png, console_errors=errors, values=values, page_height=page_h)
    finally:
        os.close(to_child_w)
        os.close(from_child_r)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def ink_fraction(png: bytes) -> float:
    """Share of pixels that differ from the most common colour (0 for a blank page)."""
    import io

    import numpy as np
    from PIL import Image

    arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(arr, axis=0, return_counts=True)
    return float(1.0 - counts.max() / counts.sum())


FULL_PAGE_CAP = 16000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.report_check", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("html", type=Path, help="the report (or any local HTML file)")
    p.add_argument("--out", type=Path, required=True, help="PNG screenshot to write")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=FULL_PAGE_CAP,
                   help=f"screenshot at most this many px from the top (default {FULL_PAGE_CAP}: the whole page "
                        "of any report; Chromium's screenshot limit is 16384)")
    a = p.parse_args(argv)
    if not a.html.is_file():
        print(f"error: {a.html}: file not found", file=sys.stderr)
        return 2
    try:
        res = render(a.html, width=a.width, max_height=a.height)
    except BrowserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(f".{a.out.name}.tmp")
    tmp.write_bytes(res.png)
    os.replace(tmp, a.out)  # atomic: a half-written PNG never lands in docs/
    ink = ink_fraction(res.png)
    shot = min(res.page_height, a.height)
    part = "the whole page" if shot >= res.page_height else f"the top {shot} of {res.page_height} px (--height)"
    print(f"screenshot: {a.out} ({part}, {ink:.1%} non-background pixels)")
    for line in res.console_errors:
        print(f"console error: {line}", file=sys.stderr)
    return 1 if res.console_errors or ink < 0.01 else 0


if __name__ == "__main__":
    sys.exit(main())
