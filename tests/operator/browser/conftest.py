"""Headless chromium (Debian's, installed by .ci/test-env) for the `browser` tests, and the folder
their screenshots are kept in after the run: $SELFHEAL_ARTIFACTS/browser, else
<tmp>/selfheal-artifacts/browser, named at the end of pytest's output."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
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
