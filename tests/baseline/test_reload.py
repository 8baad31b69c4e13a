"""Reload by signal and by command, and health and load checks over real HTTP on loopback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from selfheal.edges.processes import free_loopback_port
from selfheal.edges.reload import ReloadError, probe, read_pidfile, reload_restart, reload_signal, wait_healthy

# a stand-in for a supervisor: writes a line to a marker file on each SIGHUP
TRAP = """
import signal, sys, time
marker = sys.argv[1]
def on_hup(signum, frame):
    with open(marker, "a") as f:
        f.write("hup\\n")
signal.signal(signal.SIGHUP, on_hup)
open(marker + ".ready", "w").close()
while True:
    time.sleep(0.05)
"""


def _until(check, timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.01)
    return check()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def trap(tmp_path):
    marker = tmp_path / "hups"
    child = subprocess.Popen([sys.executable, "-c", TRAP, str(marker)])
    try:
        assert _until(lambda: Path(f"{marker}.ready").exists()), "trap child did not start"
        yield child, marker
    finally:
        child.kill()
        child.wait()


def hups(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_signal_by_pid_and_by_pidfile(trap, tmp_path):
    child, marker = trap
    assert reload_signal(pid=child.pid) == f"sent SIGHUP to pid {child.pid}"
    assert _until(lambda: hups(marker) == 1)
    pidfile = tmp_path / "vllm.pid"
    pidfile.write_text(f"{child.pid}\n")
    assert reload_signal(pidfile=pidfile, signal_name="HUP") == f"sent SIGHUP to pid {child.pid} (from {pidfile})"
    assert _until(lambda: hups(marker) == 2)
    assert child.poll() is None  # trapped, not killed


@pytest.mark.parametrize("content, message", [
    ("", "does not hold a pid"), ("vllm\n", "does not hold a pid: 'vllm'"), ("-1\n", "does not hold a pid"),
    ("0\n", "refusing to signal pid 0"), ("1\n", "refusing to signal pid 1"),
])
def test_garbage_pidfile(tmp_path, content, message):
    pidfile = tmp_path / "vllm.pid"
    pidfile.write_text(content)
    with pytest.raises(ReloadError, match=message):
        reload_signal(pidfile=pidfile)


def test_missing_pidfile_dead_pid_zombie_and_bad_arguments(tmp_path):
    with pytest.raises(ReloadError, match="does not exist"):
        read_pidfile(tmp_path / "none.pid")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "gone.pid").write_text(str(gone.pid))
    with pytest.raises(ReloadError, match=rf"pid {gone.pid} \(from .*gone.pid\) is not running"):
        reload_signal(pidfile=tmp_path / "gone.pid")
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exited, not yet reaped
    try:
        assert _until(lambda: not _alive(zombie.pid))
        with pytest.raises(ReloadError, match="zombie"):
            reload_signal(pid=zombie.pid)
    finally:
        zombie.wait()
    with pytest.raises(ReloadError, match="exactly one"):
        reload_signal()
    with pytest.raises(ReloadError, match="exactly one"):
        reload_signal(pid=os.getpid(), pidfile=tmp_path / "x")
    with pytest.raises(ReloadError, match="unknown signal"):
        reload_signal(pid=os.getpid(), signal_name="SIGNOPE")


def test_restart_command_runs_and_reports(tmp_path):
    code, out = reload_restart([sys.executable, "-c", "import sys; print('restarted'); sys.exit(3)"], 10)
    assert (code, out) == (3, "restarted\n")
    assert reload_restart(["/nonexistent/restart-vllm"], 5) == (127, "command not found: /nonexistent/restart-vllm")
    with pytest.raises(TypeError):
        reload_restart("systemctl restart vllm", 5)  # type: ignore[arg-type]


def test_restart_timeout_kills_the_whole_group(tmp_path):
    pidfile = tmp_path / "grandchild"
    script = f"sleep 30 & echo $! > {pidfile}; echo started; wait"
    started = time.monotonic()
    code, out = reload_restart(["sh", "-c", script], 0.5, grace_s=1)
    assert time.monotonic() - started < 5
    assert code == -signal.SIGTERM and out.startswith("started\n") and "timed out after 0.5s" in out
    assert _until(lambda: not _alive(int(pidfile.read_text())))


def test_restart_returns_when_the_command_does_though_its_server_keeps_stdout(tmp_path):
    # `cmd &` in a restart script keeps our output open; a pipe would wait for the server to exit
    started = time.monotonic()
    code, out = reload_restart(["sh", "-c", "sleep 20 & echo $!"], 10)
    try:
        assert code == 0 and time.monotonic() - started < 5
    finally:
        os.kill(int(out.strip()), signal.SIGKILL)


class Script:
    """What the test server answers: a list of (status, body) per path, the last one repeating."""

    def __init__(self, answers: dict[str, list[tuple[int, object]]], delay_s: float = 0.0):
        self.answers, self.delay_s = answers, delay_s
        self.calls: dict[str, int] = {}
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def next(self, path: str) -> tuple[int, object]:
        with self.lock:
            n = self.calls.get(path, 0)
            self.calls[path] = n + 1
        answers = self.answers.get(path, [(404, "no such path")])
        return answers[min(n, len(answers) - 1)]


class Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up (the timeout tests) breaks the pipe; that is the point


@contextmanager
def serve(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            if self.command == "POST":
                script.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            time.sleep(script.delay_s)
            status, body = script.next(self.path)
            raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _answer

        def log_message(self, *args):  # keep test output quiet
            pass

    server = Quiet(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_healthy_after_a_few_polls_with_a_500_first():
    script = Script({"/health": [(500, "engine starting"), (503, "loading"), (503, "loading"), (200, "")]})
    with serve(script) as url:
        healthy, detail = wait_healthy(f"{url}/health", deadline_s=5, poll_s=0.02)
    assert healthy and script.calls["/health"] == 4
    assert detail.startswith("healthy after 4 poll(s)")


def test_never_healthy_is_false_after_the_deadline():
    script = Script({"/health": [(500, "engine dead")]})
    with serve(script) as url:
        started = time.monotonic()
        healthy, detail = wait_healthy(f"{url}/health", deadline_s=0.4, poll_s=0.05)
    assert not healthy and 0.4 <= time.monotonic() - started < 2
    assert "not healthy within 0.4s" in detail and "last: HTTP 500: engine dead" in detail
    assert script.calls["/health"] >= 3


def test_refused_and_timed_out_are_not_yet():
    port = free_loopback_port()
    healthy, detail = wait_healthy(f"http://127.0.0.1:{port}/health", deadline_s=0.3, poll_s=0.05)
    assert not healthy and detail.endswith("last: connection refused")
    with serve(Script({"/health": [(200, "")]}, delay_s=0.5)) as url:
        started = time.monotonic()
        healthy, detail = wait_healthy(f"{url}/health", deadline_s=0.3, poll_s=0.05, request_timeout_s=0.1)
        assert not healthy and "timed out" in detail and time.monotonic() - started < 1.5


def test_a_server_that_comes_up_late_is_found():
    port = free_loopback_port()
    result = {}
    waiter = threading.Thread(target=lambda: result.update(
        r=wait_healthy(f"http://127.0.0.1:{port}/health", deadline_s=5, poll_s=0.05)))
    waiter.start()
    time.sleep(0.3)  # refused meanwhile
    server = Quiet(("127.0.0.1", port), type("H", (BaseHTTPRequestHandler,), {
        "do_GET": lambda self: (self.send_response(200), self.send_header("Content-Length", "0"), self.end_headers()),
        "log_message": lambda self, *a: None}))
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        waiter.join(10)
    finally:
        server.shutdown()
        server.server_close()
    healthy, detail = result["r"]
    assert healthy and int(detail.split()[2]) > 1, detail


COMPLETION = {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": " Paris.", "finish_reason": "length"}]}


def test_probe_sends_concurrent_completions():
    script = Script({"/v1/completions": [(200, COMPLETION)]})
    with serve(script) as url:
        ok, detail = probe(url, "chat", requests=3, max_tokens=8, timeout_s=5)
        assert probe(f"{url}/v1/", "chat", requests=1, timeout_s=5)[0]  # a base URL ending in /v1 works too
    assert ok and detail.startswith("3/3 completions ok"), detail
    assert script.calls["/v1/completions"] == 4
    assert all(b["model"] == "chat" and b["max_tokens"] == 8 for b in script.bodies)


@pytest.mark.parametrize("answers, why", [
    ([(200, COMPLETION), (500, "CUDA out of memory")], "HTTP 500: CUDA out of memory"),
    ([(200, {"choices": []})], "not a completion"),
    ([(200, "<html>proxy</html>")], "not a completion"),
    ([(404, "The model `chat` does not exist.")], "HTTP 404"),
])
def test_probe_fails_on_any_bad_answer(answers, why):
    with serve(Script({"/v1/completions": answers})) as url:
        ok, detail = probe(url, "chat", requests=3, timeout_s=5)
    assert not ok and why in detail, detail


def test_probe_against_nothing_and_too_slow():
    ok, detail = probe(f"http://127.0.0.1:{free_loopback_port()}", "chat", requests=2, timeout_s=1)
    assert not ok and "0/2 completions ok" in detail and "connection refused" in detail
    with serve(Script({"/v1/completions": [(200, COMPLETION)]}, delay_s=0.5)) as url:
        ok, detail = probe(url, "chat", requests=2, timeout_s=0.1)
    assert not ok and "timed out" in detail
