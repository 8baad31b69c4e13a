"""Issue 13, item 10: every alert sink has a total deadline and an output cap.

The deadline is wall-clock over a whole attempt, not per socket read, so a server that drips
a byte at a time cannot hold an attempt past it; the cap bounds what is read and kept of a
response or of a command's output (the rest is discarded, and the result says it was cut).
Both come from the alert sink's settings. Real loopback servers and real commands, with small
deadlines and caps so that the tests stay quick.
"""
from __future__ import annotations

import fcntl
import json
import socket
import sys
import threading
import time
import tracemalloc

import pytest

from selfheal.edges.alerts import CommandSink, ConfiguredSinks, JsonlSink, WebhookSink, sink_from_config
from selfheal.schemas.config import ConfigError, parse_settings


class Drip:
    """A loopback HTTP server that reads the request, sends `head` at once, then drips `drip`
    one byte every `every_s` (at most `limit` bytes), until the client hangs up."""

    def __init__(self, head: bytes, drip: bytes, every_s: float = 0.05, limit: int = 80):
        self.head, self.drip, self.every_s, self.limit = head, drip, every_s, limit
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, body = data.split(b"\r\n\r\n", 1)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            try:
                conn.sendall(self.head)
                for i in range(min(len(self.drip), self.limit)):
                    conn.sendall(self.drip[i:i + 1])
                    time.sleep(self.every_s)
            except OSError:   # the client hung up: what a deadline does
                pass

    def close(self):
        self.sock.close()


@pytest.fixture
def drip():
    servers = []

    def make(*args, **kwargs):
        servers.append(Drip(*args, **kwargs))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def no_sleep(_seconds):
    pass


RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def test_a_server_dripping_its_status_line_cannot_hold_an_attempt_past_the_deadline(drip, alert):
    server = drip(b"", RESPONSE)          # 62 bytes, 50 ms apart: 3 s if each read may take 0.5 s
    t0 = time.monotonic()
    result = WebhookSink(server.url, retries=1, timeout_s=0.5, sleep=no_sleep).deliver(alert)
    took = time.monotonic() - t0
    assert not result.ok, result.detail
    assert len(result.attempts) == 2 and server.connections == 2      # a timeout is retried
    for attempt in result.attempts:
        assert attempt.status is None and attempt.duration_s < 1.0, attempt
        assert "timed out" in attempt.error and "0.5s deadline" in attempt.error
    assert took < 2.5


def test_a_server_dripping_its_body_is_cut_at_the_deadline(drip, alert):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    server = drip(head, b"x" * 100000)
    t0 = time.monotonic()
    result = WebhookSink(server.url, retries=2, timeout_s=0.5, sleep=no_sleep).deliver(alert)
    assert time.monotonic() - t0 < 1.5
    # the server said 200 before its body: delivered, on the first attempt; the body is cut
    assert result.ok and len(result.attempts) == 1 and result.attempts[0].status == 200
    assert result.attempts[0].duration_s < 1.0
    assert "response cut" in result.detail and "0.5s deadline" in result.detail


def test_a_response_larger_than_the_cap_is_cut_to_it(drip, alert):
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1000000\r\n\r\n"
    server = drip(head + b"y" * 1_000_000, b"", every_s=0)
    result = WebhookSink(server.url, retries=0, timeout_s=5, max_output_bytes=100,
                         sleep=no_sleep).deliver(alert)
    assert not result.ok and result.attempts[0].status == 500
    assert "y" * 100 in result.detail and "y" * 101 not in result.detail
    assert "response cut" in result.detail and "100 bytes" in result.detail


PRINTER = "import sys\nfor _ in range({n}):\n    sys.stdout.buffer.write(b'z' * 65536)\nsys.stderr.write('done')"


def _peak_while(deliver):
    tracemalloc.start()
    try:
        result = deliver()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_command_printing_far_more_than_the_cap_keeps_only_the_cap(alert):
    # 64 MiB on stdout; the sink must not hold it (before the fix it held all of it, twice)
    sink = CommandSink([sys.executable, "-c", PRINTER.format(n=1024)], timeout_s=20)
    result, peak = _peak_while(lambda: sink.deliver(alert))
    assert result.ok, result.detail                  # the rest is drained and discarded: it exits 0
    assert peak < 4 << 20, f"held {peak / 2**20:.1f} MiB of a 64 MiB output"
    assert "stdout cut" in result.detail and "67,108,864 bytes" in result.detail
    assert "stderr: done" in result.detail


def test_a_configured_cap_and_deadline_bound_a_command_that_never_stops_printing(alert):
    sink = sink_from_config({"type": "command", "argv": [sys.executable, "-c", PRINTER.format(n=10**9)],
                             "timeout_s": 0.5, "max_output_bytes": 1000})
    t0 = time.monotonic()
    result, peak = _peak_while(lambda: sink.deliver(alert))
    assert time.monotonic() - t0 < 3
    assert not result.ok and "timed out after 0.5s" in result.attempts[0].error
    assert peak < 1 << 20
    assert "stdout cut" in result.detail and "last 1,000 bytes kept" in result.detail


def test_a_jsonl_sink_waits_for_a_held_lock_no_longer_than_its_deadline(tmp_path, alert):
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b"")
    with open(path, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)     # another writer that never lets go
        box = []
        worker = threading.Thread(target=lambda: box.append(JsonlSink(path, timeout_s=0.3).deliver(alert)),
                                  daemon=True)
        worker.start()
        worker.join(5)
        assert box, "the JSONL sink was still waiting for the lock after 5 s"
    [result] = box
    assert not result.ok and "0.3s" in result.attempts[0].error and result.attempts[0].duration_s < 1
    assert path.read_bytes() == b""


def _toml(sinks: str) -> str:
    return f'[deployments.chat]\nscenario = "workstation-12gb-speech"\nalerts = [{sinks}]\n'


def test_the_deadline_and_the_cap_come_from_the_alert_sink_settings(drip, alert):
    server = drip(b"", RESPONSE)
    settings = parse_settings(_toml(f'{{type = "webhook", url = {json.dumps(server.url)}, retries = 0, '
                                    f'timeout_s = 0.4, max_output_bytes = 512}}'))
    spec = settings.deployments["chat"].alerts[0].spec()
    assert spec["timeout_s"] == 0.4 and spec["max_output_bytes"] == 512
    t0 = time.monotonic()
    [(name, result)] = ConfiguredSinks([spec]).deliver(alert, alert.raised_at, 1)
    assert name == "webhook:0" and not result.ok and "0.4s deadline" in result.attempts[0].error
    assert time.monotonic() - t0 < 1.5


@pytest.mark.parametrize("entry, words", [
    ('{type = "webhook", url = "http://h/", timeout_s = 0}', ["alerts.0.timeout_s", "> 0"]),
    ('{type = "command", argv = ["x"], timeout_s = 1e9}', ["alerts.0.timeout_s", "<= 3600"]),
    ('{type = "command", argv = ["x"], max_output_bytes = 0}', ["alerts.0.max_output_bytes", ">= 1"]),
    ('{type = "webhook", url = "http://h/", max_output_bytes = 4294967296}',
     ["alerts.0.max_output_bytes", "<= 67108864"]),
    ('{type = "jsonl", path = "a.jsonl", max_output_bytes = 10}', ["alerts.0", "max_output_bytes", "jsonl"]),
])
def test_bad_deadlines_and_caps_are_refused_naming_the_key(entry, words):
    with pytest.raises(ConfigError) as info:
        parse_settings(_toml(entry))
    for w in words:
        assert w in str(info.value)
