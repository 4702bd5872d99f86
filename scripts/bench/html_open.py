#!/usr/bin/env python3
"""Time opening an HTML report in headless Chromium (issue #15: "opens in under a second").

    python3 scripts/bench/html_open.py REPORT.html [--runs 5] [--browser chromium] [--json]

Standard library only. Chromium is driven over the DevTools protocol through
`--remote-debugging-pipe` (JSON messages separated by NUL bytes on file descriptors 3 and 4),
so no websocket client is needed. One browser is started; each run opens a fresh tab,
navigates it to file://REPORT, waits for the `load` event, then reads the page's own timing
with Runtime.evaluate:

- PerformanceNavigationTiming (navigation start = 0): responseEnd, domInteractive,
  domContentLoadedEventEnd, loadEventEnd (the HTML parsed, the inline scripts run, the load
  handlers done);
- the paint entries: first-paint and first-contentful-paint, and the last
  largest-contentful-paint candidate;
- "tab wall": host-side wall time from sending Page.navigate to receiving Page.loadEventFired.

One untimed run first (the page and Chromium's own files then come from the page cache:
"warm"), then --runs timed runs; prints each run and the median, min and max of each metric.

Then the upper bound a user also sees: the wall time of a whole
`chromium --headless --screenshot` process (browser start, load, render, PNG, exit), --runs
times after one untimed run, for the report and for an empty page (the browser's own start
and exit, to subtract).

Needs Debian's `chromium` (apt-get install -y chromium); nothing is fetched from the network.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--hide-scrollbars", "--window-size=1400,2400",
]

TIMING_JS = r"""
(() => {
  const n = performance.getEntriesByType('navigation')[0];
  const p = {};
  for (const e of performance.getEntriesByType('paint')) p[e.name] = e.startTime;
  return JSON.stringify({
    responseEnd: n.responseEnd, domInteractive: n.domInteractive,
    domContentLoadedEventEnd: n.domContentLoadedEventEnd, loadEventEnd: n.loadEventEnd,
    firstPaint: p['first-paint'] ?? null, firstContentfulPaint: p['first-contentful-paint'] ?? null,
    lcp: window.__lcp ?? null, transferSize: n.transferSize, nodes: document.getElementsByTagName('*').length,
  });
})()
"""
# Registered before the document parses (Page.addScriptToEvaluateOnNewDocument).
LCP_JS = (
    "new PerformanceObserver(l => { for (const e of l.getEntries()) window.__lcp = e.startTime; })"
    ".observe({type: 'largest-contentful-paint', buffered: true});"
)


class Cdp:
    def __init__(self, browser, profile):
        r_to_chrome, w_to_chrome = os.pipe()
        r_from_chrome, w_from_chrome = os.pipe()
        # Chromium reads commands from fd 3 and writes replies to fd 4.
        def child():  # runs before subprocess closes the fds not in pass_fds
            a, b = os.dup(r_to_chrome), os.dup(w_from_chrome)  # neither lands on 3 or 4 taken
            os.dup2(a, 3)
            os.dup2(b, 4)
        self.proc = subprocess.Popen(
            [browser, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=child, pass_fds=(3, 4),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(r_to_chrome)
        os.close(w_from_chrome)
        self.w = os.fdopen(w_to_chrome, "wb", buffering=0)
        self.r = os.fdopen(r_from_chrome, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0
        self.events = []

    def _read(self):
        while b"\0" not in self.buf:
            chunk = self.r.read(1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method, params=None, session=None):
        self.next_id += 1
        mid = self.next_id
        m = {"id": mid, "method": method, "params": params or {}}
        if session:
            m["sessionId"] = session
        self.w.write(json.dumps(m).encode() + b"\0")
        while True:
            msg = self._read()
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method, session, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, e in enumerate(self.events):
                if e["method"] == method and e.get("sessionId") == session:
                    del self.events[i]
                    return e
            self.events.append(self._read())
        raise TimeoutError(method)

    def close(self):
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def open_once(cdp, url):
    tid = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    sid = cdp.send("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
    cdp.send("Page.enable", session=sid)
    cdp.send("Page.addScriptToEvaluateOnNewDocument", {"source": LCP_JS}, session=sid)
    t0 = time.perf_counter()
    cdp.send("Page.navigate", {"url": url}, session=sid)
    cdp.wait_event("Page.loadEventFired", sid)
    wall = (time.perf_counter() - t0) * 1000
    for _ in range(200):  # loadEventEnd is set once the load handlers return
        # Two animation frames after load, so the paint and LCP entries are in.
        cdp.send("Runtime.evaluate", {"expression": "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))",
                                      "awaitPromise": True}, session=sid)
        t = json.loads(cdp.send("Runtime.evaluate", {"expression": TIMING_JS, "returnByValue": True},
                                session=sid)["result"]["value"])
        if t["loadEventEnd"] > 0:
            break
    t["tabWall"] = wall
    cdp.send("Target.closeTarget", {"targetId": tid})
    return t


def screenshot_wall(browser, url, runs):
    out = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(runs + 1):
            t0 = time.perf_counter()
            subprocess.run([browser, *FLAGS, f"--user-data-dir={d}/profile", f"--screenshot={d}/s.png", url],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            if i:  # the first run is untimed (warm-up)
                out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--browser", default="chromium")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    a = ap.parse_args()
    url = "file://" + os.path.abspath(a.report)
    version = subprocess.run([a.browser, "--version"], capture_output=True, text=True).stdout.strip()

    with tempfile.TemporaryDirectory() as profile:
        cdp = Cdp(a.browser, profile)
        try:
            cdp.send("Browser.getVersion")
            open_once(cdp, url)  # warm-up, untimed
            runs = [open_once(cdp, url) for _ in range(a.runs)]
        finally:
            cdp.close()

    keys = ["responseEnd", "domInteractive", "domContentLoadedEventEnd", "loadEventEnd",
            "firstPaint", "firstContentfulPaint", "lcp", "tabWall"]
    res = {"report": a.report, "bytes": os.path.getsize(a.report), "browser": version,
           "cores": os.cpu_count(), "loadavg": os.getloadavg(), "runs": runs,
           "summary": {k: summary([r[k] for r in runs if r[k] is not None]) for k in keys
                       if any(r[k] is not None for r in runs)}}
    with tempfile.NamedTemporaryFile("w", suffix=".html") as blank:
        blank.write("<!doctype html><title>blank</title>")
        blank.flush()
        res["screenshot_wall"] = summary(screenshot_wall(a.browser, url, a.runs))
        res["screenshot_wall_blank"] = summary(screenshot_wall(a.browser, "file://" + blank.name, a.runs))

    if a.json:
        print(json.dumps(res, indent=1))
        return
    print(f"{a.report}: {res['bytes']} bytes, {version}, {res['cores']} cores, "
          f"load average {' '.join(f'{x:.2f}' for x in res['loadavg'])}")
    print(f"{a.runs} runs after one untimed run, ms from navigation start:")
    print("run " + " ".join(f"{k:>12.12}" for k in keys))
    for i, r in enumerate(runs):
        print(f"{i + 1:<3} " + " ".join(f"{r[k]:12.1f}" if r[k] is not None else f"{'-':>12}" for k in keys))
    for s in ("median", "min", "max"):
        print(f"{s:<3.3} " + " ".join(f"{res['summary'][k][s]:12.1f}" if k in res["summary"] else f"{'-':>12}"
                                     for k in keys))
    for k, label in (("screenshot_wall", "report"), ("screenshot_wall_blank", "empty page")):
        s = res[k]
        print(f"chromium --headless --screenshot, whole process, {label}: median {s['median']:.0f} ms "
              f"(min {s['min']:.0f}, max {s['max']:.0f}; {a.runs} runs after one untimed)")


if __name__ == "__main__":
    sys.exit(main())
