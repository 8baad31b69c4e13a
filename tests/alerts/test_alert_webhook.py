"""WebhookSink against a real HTTP server on loopback: retries, backoff, Retry-After, finality."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selfheal.edges.alerts import WebhookSink, to_json


class Hook:
    """A loopback webhook that answers from a script: each entry is (status, headers, delay_s)."""

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append({"path": self.path, "headers": dict(self.headers),
                                      "body": body})
                status, headers, delay = hook.script.pop(0) if hook.script else (200, {}, 0)
                time.sleep(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                reply = f"reply {status}".encode()
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/selfheal?token=s3cret"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory():
    hooks = []

    def make(*script):
        hooks.append(Hook(script))
        return hooks[-1]
    yield make
    for h in hooks:
        h.close()


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def test_500_twice_then_200_is_delivered_on_the_third_attempt(hook_factory, alert):
    hook = hook_factory((500, {}, 0), (500, {}, 0), (200, {}, 0))
    sleeps = Sleeps()
    result = WebhookSink(hook.url, sleep=sleeps).deliver(alert)
    assert result.ok, result.detail
    assert [a.status for a in result.attempts] == [500, 500, 200]
    assert [a.number for a in result.attempts] == [1, 2, 3]
    assert [a.error for a in result.attempts] == ["HTTP 500 Internal Server Error"] * 2 + [None]
    assert all(a.duration_s >= 0 and a.started_at.utcoffset().total_seconds() == 0
               for a in result.attempts)
    assert sleeps == [0.5, 1.0]
    assert len(hook.requests) == 3
    for req in hook.requests:  # the body received is the alert JSON, byte for byte
        assert req["body"] == to_json(alert)
        assert req["headers"]["Content-Type"] == "application/json"
        assert req["headers"]["Idempotency-Key"] == alert.alert_id
        assert req["path"] == "/hooks/selfheal?token=s3cret"


def test_backoff_grows_exponentially_and_is_capped(hook_factory, alert):
    hook = hook_factory(*[(503, {}, 0)] * 5)
    sleeps = Sleeps()
    sink = WebhookSink(hook.url, retries=4, backoff_s=1, backoff_factor=3, max_backoff_s=10,
                       sleep=sleeps)
    result = sink.deliver(alert)
    assert not result.ok and [a.status for a in result.attempts] == [503] * 5
    assert sleeps == [1, 3, 9, 10]  # no sleep after the last attempt
    assert "HTTP 503" in result.detail and "reply 503" in result.detail
    assert "s3cret" not in result.detail and "s3cret" not in sink.target


def test_a_400_is_final(hook_factory, alert):
    hook = hook_factory((400, {}, 0), (200, {}, 0))
    sleeps = Sleeps()
    result = WebhookSink(hook.url, sleep=sleeps).deliver(alert)
    assert not result.ok
    assert [a.status for a in result.attempts] == [400]
    assert sleeps == [] and len(hook.requests) == 1
    assert "HTTP 400" in result.detail


def test_a_redirect_is_final_not_followed_as_a_bodiless_get(hook_factory, alert):
    hook = hook_factory((302, {"Location": "/elsewhere"}, 0))
    result = WebhookSink(hook.url, sleep=Sleeps()).deliver(alert)
    assert not result.ok and [a.status for a in result.attempts] == [302]
    assert len(hook.requests) == 1


def test_retry_after_is_honoured_and_capped(hook_factory, alert):
    hook = hook_factory((429, {"Retry-After": "7"}, 0), (429, {"Retry-After": "120"}, 0),
                        (503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0), (200, {}, 0))
    sleeps = Sleeps()
    result = WebhookSink(hook.url, max_backoff_s=30, sleep=sleeps).deliver(alert)
    assert result.ok
    assert [a.status for a in result.attempts] == [429, 429, 503, 200]
    # seconds honoured; capped by max_backoff_s; an HTTP-date falls back to the backoff (3rd: 2.0)
    assert sleeps == [7.0, 30, 2.0]


@pytest.fixture
def closed_port():
    # Bound but never listening: connecting is refused, and no one else can take the port meanwhile.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def test_connection_refused_is_retried_then_fails_with_every_attempt(closed_port, alert):
    sleeps = Sleeps()
    result = WebhookSink(f"http://127.0.0.1:{closed_port}/", retries=2, sleep=sleeps).deliver(alert)
    assert not result.ok
    assert len(result.attempts) == 3
    assert all(a.status is None and a.error.startswith("ConnectionRefusedError")
               for a in result.attempts)
    assert sleeps == [0.5, 1.0]
    assert "ConnectionRefusedError" in result.detail


def test_a_timeout_is_retried(hook_factory, alert):
    hook = hook_factory((200, {}, 1.0), (200, {}, 0))
    sleeps = Sleeps()
    result = WebhookSink(hook.url, timeout_s=0.2, sleep=sleeps).deliver(alert)
    assert result.ok
    assert [a.status for a in result.attempts] == [None, 200]
    assert "timed out" in result.attempts[0].error
    assert sleeps == [0.5]


def test_proxy_variables_are_ignored_for_loopback(hook_factory, alert, closed_port, monkeypatch):
    hook = hook_factory((200, {}, 0))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{closed_port}")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    result = WebhookSink(hook.url, retries=0, sleep=Sleeps()).deliver(alert)
    assert result.ok, result.detail
    assert len(hook.requests) == 1


def test_extra_headers_are_sent(hook_factory, alert):
    hook = hook_factory((204, {}, 0))
    assert WebhookSink(hook.url, headers={"Authorization": "Bearer t"}).deliver(alert).ok
    assert hook.requests[0]["headers"]["Authorization"] == "Bearer t"


@pytest.mark.parametrize("kwargs, key", [
    ({"url": "ftp://host/x"}, "url"), ({"url": "http://"}, "url"), ({"url": "http://h:x/"}, "url"),
    ({"url": None}, "url"),
    ({"retries": -1}, "retries"), ({"backoff_s": -0.1}, "backoff_s"),
    ({"timeout_s": 0}, "timeout_s"), ({"headers": {"X": 1}}, "headers"),
])
def test_bad_arguments_name_the_key(kwargs, key):
    kwargs = {"url": "http://127.0.0.1:9/", **kwargs}
    with pytest.raises(ValueError, match=repr(key)):
        WebhookSink(kwargs.pop("url"), **kwargs)
