"""The report in a real browser: headless Chromium (Debian's ``chromium`` package) opens
report.html from disk, and we check that every chart rendered marks, that the page logged no
console errors, and keep a screenshot under the pytest tmp dir.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so the test needs no websocket
library and downloads no browser. It runs offline: the page must not need the network.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from planner.config import parse_scenario
from planner.engines.breakeven import (
    BreakevenResults,
    cost_curve,
    finetune_breakeven,
    payback,
    volume_breakeven,
)
from planner.report import build_report
from planner.report.examples import optimiser_tables, risk_tables, simulation_tables

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "planner" / "templates" / "quickstart.toml"
EVIL = "<script>alert('x')</script> & <b>bold</b>"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """Minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, exe: str, profile: Path, timeout_s: float = 60.0):
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()

        def child_fds():  # runs in the child: the pipe must be fds 3 (in) and 4 (out)
            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
            b = fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions",
             "--disable-dev-shm-usage", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=child_fds,  # close_fds would close 3 and 4 again
        )
        os.close(cmd_r)
        os.close(res_w)
        self.deadline = time.monotonic() + timeout_s
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def _read_message(self) -> dict:
        while b"\0" not in self._buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._res_r], [], [], left)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the debugging pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, *, session: bool = True) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read_message()
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, expr: str, timeout_s: float = 30.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.evaluate(expr):
                return
            time.sleep(0.1)
        raise TimeoutError(f"page never satisfied: {expr}")

    def evaluate(self, expr: str):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url: str, width: int = 1300, height: int = 900) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        att = self.send("Target.attachToTarget",
                        {"targetId": target["targetId"], "flatten": True}, session=False)
        self.session = att["sessionId"]
        for m in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.send(m)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'")

    def screenshot(self, path: Path) -> None:
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1}})
        path.write_bytes(base64.b64decode(shot["data"]))

    def console_errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"uncaught: {d.get('exception', {}).get('description') or d['text']}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.error: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} ({p['entry'].get('url', '')})")
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._res_r)


def _scenario():
    """Quickstart plus a fine-tuned option (so the fine-tune chart is drawn) and a name that
    tries to inject markup."""
    data = tomllib.loads(QUICKSTART.read_text(encoding="utf-8"))
    data["scenario"]["name"] = EVIL
    data["scenario"]["description"] = "</script><img src=x onerror=alert(1)>"
    data["api"]["<img src=x onerror=alert(2)>"] = {"offering": "openai/gpt-4o"}
    data["api"]["gpt-4o-mini-ft"] = {"offering": "openai/gpt-4o-mini-2024-07-18",
                                      "fine_tune": "mini"}
    data["finetune"] = {"mini": {"method": "api", "base_model": "openai/gpt-4o-mini-2024-07-18",
                                 "training_tokens": 2e6, "epochs": 3, "retry_multiplier": 15,
                                 "qualifies_for": ["chat", "summarise"], "quality_tier": 1}}
    return parse_scenario(data, path=str(QUICKSTART))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    rng = np.random.default_rng(7)
    sc = _scenario()
    deps = list(sc.deployments())
    providers = {
        # the real engine on coarse grids, to keep the test fast
        "breakeven": lambda s, cat: BreakevenResults(
            volume=volume_breakeven(s, cat, points=9), finetune=finetune_breakeven(s, cat),
            payback=payback(s, cat), curve=cost_curve(s, (0.01, 0.1, 1, 10, 100), cat)),
        "risk": lambda s, cat: risk_tables(rng, deps[:3]),
        "optimiser": lambda s, cat: optimiser_tables(rng, deps[:3]),
        "simulation": lambda s, cat: simulation_tables(rng, list(s.workload)),
    }
    out = tmp_path_factory.mktemp("browser") / "report"
    return build_report(sc, out_dir=out, progress=False, providers=providers)


def test_report_renders_in_chromium(report, tmp_path_factory):
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium; "
                    ".ci/run installs it); cannot run the browser test")
    expected = set(report.charts)
    assert {"cost_breakdown", "cost_vs_volume", "api_vs_selfhost", "finetune_breakeven",
            "risk_distribution", "win_probability", "tornado", "cost_paths", "hourly_mix",
            "latency_cdf_ttft", "slo_attainment", "utilisation_heatmap",
            "predicted_vs_measured"} <= expected

    shots = tmp_path_factory.mktemp("screenshots")
    b = Browser(exe, shots / "profile")
    try:
        b.open(report.html.resolve().as_uri(), width=1400)
        b.wait_for("document.querySelectorAll('.chart').length > 0 && "
                   "[...document.querySelectorAll('.chart')].every("
                   "e => e.hasAttribute('data-rendered'))")
        state = b.evaluate("""[...document.querySelectorAll('.chart')].map(e => ({
            name: e.dataset.chart, rendered: e.dataset.rendered,
            svg: e.querySelectorAll('svg').length, canvas: e.querySelectorAll('canvas').length,
            marks: e.querySelectorAll('g.role-mark > *').length}))""")
        page = b.evaluate("""({h1: document.querySelector('h1').textContent,
            scripts: document.scripts.length,
            images: document.querySelectorAll('img').length,
            bold: document.querySelectorAll('b').length,
            title: document.title})""")
        # at 1,400 px the page never scrolls sideways: wide tables scroll inside their box
        layout = b.evaluate("""({page: document.documentElement.scrollWidth,
            view: window.innerWidth,
            boxes: [...document.querySelectorAll('.table-wrap')].map(e => ({
                overflow: getComputedStyle(e).overflowX,
                right: e.getBoundingClientRect().right}))})""")
        b.screenshot(shots / "report.png")
        errors = b.console_errors()
    finally:
        b.close()

    assert {s["name"] for s in state} == expected
    for s in state:
        assert s["rendered"] == "ok", s
        assert s["svg"] + s["canvas"] >= 1, s
        assert s["marks"] > 0, s
    assert errors == []
    assert layout["page"] <= layout["view"], layout["page"]
    assert layout["boxes"] and all(x["overflow"] == "auto" and x["right"] <= layout["view"]
                                   for x in layout["boxes"])
    # the hostile name and description are text, not markup
    assert page["h1"] == EVIL and page["title"] == EVIL
    assert page["scripts"] == 3  # Vega bundle, the specs (JSON), the embedding code
    assert page["images"] == 0 and page["bold"] == 0
    shot = shots / "report.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")


def test_harness_sees_console_errors_and_exceptions(tmp_path):
    """The checks above can fail: the same client reports errors on a broken page."""
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium; "
                    ".ci/run installs it); cannot run the browser test")
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><div class='chart'></div><script>"
                    "console.error('boom'); setTimeout(() => { throw new Error('bad'); }, 0);"
                    "</script></body></html>", encoding="utf-8")
    b = Browser(exe, tmp_path / "profile")
    try:
        b.open(page.as_uri())
        time.sleep(0.3)
        marks = b.evaluate("document.querySelectorAll('.chart g.role-mark > *').length")
        b.evaluate("1")  # drain events that arrived meanwhile
        errors = b.console_errors()
    finally:
        b.close()
    assert marks == 0
    assert any("boom" in e for e in errors), errors
    assert any("uncaught" in e and "bad" in e for e in errors), errors
