"""`selfheal ui` started as a person starts it: the installed CLI, a subprocess on a free loopback
port, stopped by SIGTERM. Shared by test_ui.py and the browser tests."""
from __future__ import annotations

import queue
import re
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.operator.conftest import SELFHEAL

ADDRESS = re.compile(r"open (http://127\.0\.0\.1:(\d+)/(\w+))\?token=(\S+)")


class Ui:
    def __init__(self, db: Path, *args: str, deadline_s: float = 30.0):
        self.proc = subprocess.Popen([SELFHEAL, "--db", str(db), "ui", "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=db.parent)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        try:
            self.first_line = lines.get(timeout=deadline_s)
        except queue.Empty:
            self.stop()
            pytest.fail(f"`selfheal ui` printed no address within {deadline_s:g} s: {self.proc.stderr.read()}")
        found = ADDRESS.search(self.first_line)
        assert found, self.first_line
        self.database_url, port, self.database, self.token = found.groups()
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path: str, token: bool = True) -> str:
        """`path` on the server, with the token that lets a browser in (it becomes a cookie)."""
        joiner = "&" if "?" in path else "?"
        return f"{self.base}{path}{joiner}token={self.token}" if token else f"{self.base}{path}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def status(url: str, cookie: str | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET that does not follow redirects."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kw):
            return None
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
