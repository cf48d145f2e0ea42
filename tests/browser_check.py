"""Opens dla-edge's web viewer in a real headless Chromium and checks what a
user would see: the live overlay shows a picture (not a blank box) and the
stats update by themselves.

Talks the Chrome DevTools Protocol over --remote-debugging-pipe (file
descriptors 3 and 4, NUL-separated JSON), so it needs nothing but the
standard library, numpy and Pillow.

usage: browser_check.py CHROMIUM URL OUT_DIR ENGINE [TOKEN]
ENGINE is what the header must name ("MODEL on BACKEND"). With TOKEN the
viewer has a login: the page must first be the login form, showing no
camera, and the check logs in through it as a person would.
Writes OUT_DIR/viewer-1.png, viewer-2.png and report.json; exits non-zero,
saying why, when a check fails.
"""

import base64
import fcntl
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 1280, 1000


class Browser:
    """A headless Chromium driven over its DevTools pipe."""

    def __init__(self, chromium, profile):
        # Chromium reads commands from fd 3 and writes answers to fd 4. Move
        # all pipe ends out of the way first: os.pipe() itself may hand out 3/4.
        def high(fd):
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
            os.close(fd)
            return moved

        to_chrome_r, self._to_chrome = map(high, os.pipe())
        self._from_chrome, from_chrome_w = map(high, os.pipe())
        os.dup2(to_chrome_r, 3)
        os.dup2(from_chrome_w, 4)
        args = [
            chromium,
            "--headless=new",
            "--remote-debugging-pipe",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
        ]
        if os.geteuid() == 0:
            # Chromium refuses to run as root with its sandbox (CI containers).
            args.append("--no-sandbox")
        self.proc = subprocess.Popen(
            args + ["about:blank"],
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in (3, 4, to_chrome_r, from_chrome_w):
            os.close(fd)
        self._buf = b""
        self._next_id = 0
        self.session = None

    def call(self, method, params=None, session=True, timeout=30.0):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buf:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer to {method} in {timeout} s")
                chunk = os.read(self._from_chrome, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium exited while waiting for {method}")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def attach_to_page(self):
        targets = self.call("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call(
            "Target.attachToTarget",
            {"targetId": page["targetId"], "flatten": True},
            session=False,
        )["sessionId"]

    def eval(self, expression):
        r = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        return base64.b64decode(data)

    def close(self):
        try:
            self.call("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_for(browser, expression, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = browser.eval(expression)
        except RuntimeError as e:
            # The page may still be loading: its elements are not there yet.
            last_error, value = e, None
        if value:
            return value
        time.sleep(0.2)
    sys.exit(f"FAIL: {what} (waited {timeout:.0f} s for `{expression}`; last error: {last_error})")


def crop(png, rect):
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    x, y, w, h = (int(round(v)) for v in (rect["x"], rect["y"], rect["w"], rect["h"]))
    return img[y : y + h, x : x + w]


def main():
    chromium, url, out_dir, want_engine = sys.argv[1:5]
    token = sys.argv[5] if len(sys.argv) > 5 else None
    login_form_seen = None
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(chromium, profile)
        try:
            browser.attach_to_page()
            browser.call("Page.enable")
            browser.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
            )
            browser.call("Page.navigate", {"url": url})
            if token is not None:
                # Refused without the login: the form, and no camera.
                wait_for(browser, "document.getElementById('login') !== null",
                         "the viewer asks for a login first")
                login_form_seen = browser.eval(
                    "document.getElementById('overlay') === null && "
                    "document.getElementById('raw') === null")
                browser.eval(
                    "document.getElementById('secret').value = %s; "
                    "document.getElementById('login-button').click(); true" % json.dumps(token))
            # Live frames: the overlay image has a size, the stats were polled.
            wait_for(
                browser,
                "document.getElementById('overlay').naturalWidth > 0",
                "the overlay stream shows a frame",
            )
            wait_for(
                browser,
                "Number(document.getElementById('processed').textContent) > 0",
                "the page shows processed frames",
            )
            rect_js = """(() => { const r = document.getElementById('%s').getBoundingClientRect();
                return {x: r.x, y: r.y, w: r.width, h: r.height}; })()"""
            overlay_rect = browser.eval(rect_js % "overlay")
            header_rect = browser.eval(
                "(() => { const r = document.querySelector('header').getBoundingClientRect();"
                " return {x: r.x, y: r.y, w: r.width, h: r.height}; })()"
            )
            first_count = int(browser.eval("document.getElementById('processed').textContent"))
            first = browser.screenshot()
            # The page polls /stats.json every second: wait for two polls.
            time.sleep(2.5)
            second_count = int(browser.eval("document.getElementById('processed').textContent"))
            second = browser.screenshot()
            legend_rows = browser.eval("document.querySelectorAll('#legend tr').length")
            engine = browser.eval("document.getElementById('engine').textContent")
            stage_rows = browser.eval("document.getElementById('stages').rows.length")
        finally:
            browser.close()

    for name, png in (("viewer-1.png", first), ("viewer-2.png", second)):
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(png)

    overlay = crop(first, overlay_rect)
    # Colours present in the overlay, quantised to 32 levels per channel.
    colours = len(np.unique((overlay // 8).reshape(-1, 3), axis=0))
    header_changed = float(
        np.mean(crop(first, header_rect) != crop(second, header_rect))
    )
    report = {
        "login_form_seen": login_form_seen,
        "overlay_rect": overlay_rect,
        "overlay_std": float(overlay.std()),
        "overlay_colours": colours,
        "processed_first": first_count,
        "processed_second": second_count,
        "header_pixels_changed": header_changed,
        "legend_rows": legend_rows,
        "stage_rows": stage_rows,
        "engine": engine,
    }
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report))

    failures = []
    if overlay_rect["w"] < 100 or overlay_rect["h"] < 50:
        failures.append(f"the overlay is too small on the page: {overlay_rect}")
    if report["overlay_std"] < 10 or colours < 16:
        failures.append(
            f"the overlay looks blank (pixel std {report['overlay_std']:.1f}, {colours} colours)"
        )
    if second_count <= first_count:
        failures.append(f"processed frames did not go up: {first_count} -> {second_count}")
    if header_changed <= 0:
        failures.append("the stats in the header look the same in both screenshots")
    if stage_rows < 7:
        failures.append(f"the latency table has {stage_rows} rows, expected a header and 6 stages")
    # The model and engine the stream runs, named in the header.
    if engine != want_engine:
        failures.append(f"the header names {engine!r}, expected {want_engine!r}")
    if token is not None and not login_form_seen:
        failures.append("the login page showed the camera or was not the login form")
    if legend_rows < 2:
        failures.append(f"the class legend has {legend_rows} rows")
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("OK")


if __name__ == "__main__":
    main()
