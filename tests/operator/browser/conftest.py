"""Headless chromium (Debian's, installed by .ci/test-env) for the `browser` tests, and the folder
their screenshots are kept in after the run: $SELFHEAL_ARTIFACTS/browser, else
<tmp>/selfheal-artifacts/browser, named at the end of pytest's output."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("SELFHEAL_ARTIFACTS") or Path(tempfile.gettempdir()) / "selfheal-artifacts") / "browser"
_kept: list[Path] = []


class Browser:
    """One headless chromium per page: a profile shared by the calls keeps the cookie a token sets."""

    def __init__(self, profile: Path, keep: Path):
        self.profile, self.keep = profile, keep

    def _run(self, url: str, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-extensions", f"--user-data-dir={self.profile}", *args, url],
            capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    def dom(self, url: str) -> str:
        """The page's DOM after it loaded (and its scripts ran), serialised."""
        return self._run(url, "--dump-dom").stdout

    def evaluate(self, url: str, expression: str, size: tuple[int, int] = (1400, 2400)):
        """`expression`'s JSON value in the page at `url` once it has loaded: what chromium laid
        out (boxes, positions), which --dump-dom cannot tell. DevTools over --remote-debugging-pipe:
        JSON messages ending in NUL, read by chromium from fd 3 and written to fd 4."""
        to_child, ours_w = os.pipe()
        ours_r, from_child = os.pipe()

        def wire():  # before the exec, after the fork: the ends where chromium looks for them
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)
        proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-extensions", f"--user-data-dir={self.profile}", f"--window-size={size[0]},{size[1]}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(to_child, from_child, 3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        buffer, calls = b"", 0

        def call(method: str, params: dict, session: str | None = None) -> dict:
            nonlocal buffer, calls
            calls += 1
            os.write(ours_w, json.dumps({"id": calls, "method": method, "params": params,
                                         **({"sessionId": session} if session else {})}).encode() + b"\0")
            while True:
                while b"\0" in buffer:
                    raw, buffer = buffer.split(b"\0", 1)
                    message = json.loads(raw)
                    if message.get("id") == calls:
                        assert "error" not in message, (method, message["error"])
                        return message["result"]
                chunk = os.read(ours_r, 1 << 16)
                assert chunk, f"chromium closed its DevTools pipe during {method}"
                buffer += chunk

        def value(session: str, js: str):
            out = call("Runtime.evaluate", {"expression": js, "returnByValue": True}, session)
            assert "exceptionDetails" not in out, out["exceptionDetails"]
            return out["result"].get("value")
        try:
            target = call("Target.createTarget", {"url": url})["targetId"]
            session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            end = time.monotonic() + 60
            while not (value(session, "location.protocol + document.readyState") or "").startswith("http:complete"):
                assert time.monotonic() < end, f"{url} did not load"
                time.sleep(0.1)
            return value(session, expression)
        finally:
            proc.kill()
            proc.wait(timeout=30)
            os.close(ours_w)
            os.close(ours_r)

    def screenshot(self, url: str, name: str, size: tuple[int, int] = (1400, 2400)) -> Path:
        """A PNG of the page, kept under the artifacts folder."""
        path = self.keep / name
        self._run(url, f"--window-size={size[0]},{size[1]}", f"--screenshot={path}")
        assert path.stat().st_size > 10_000, f"{name}: the screenshot is nearly empty"
        _kept.append(path)
        return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)  # only this run's pictures
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture
def browser(tmp_path, artifacts) -> Browser:
    if CHROMIUM is None:
        pytest.fail("no chromium: run .ci/test-env (it installs Debian's chromium), or deselect with -m 'not browser'")
    return Browser(tmp_path / "chromium-profile", artifacts)


def pytest_terminal_summary(terminalreporter):
    if _kept:
        terminalreporter.write_line(f"browser screenshots ({len(_kept)}): {ARTIFACTS}")
