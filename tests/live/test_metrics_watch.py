"""parse_prometheus, MetricsWatch over real-format scrapes, and poll() against a real HTTP server."""
from __future__ import annotations

import http.server
import math
import socket
import threading

import pytest

from selfheal.edges.metrics_watch import MetricsWatch, PollStats, parse_prometheus, poll

LABELS = '{engine="0",model_name="m"}'


def scrape(*, preemptions=0.0, running=16, waiting=0, kv=0.5, kv_name="vllm:kv_cache_usage_perc",
           engines=("0",)) -> str:
    """A /metrics body as vLLM writes it (prometheus_client exposition, a few of its families)."""
    out = []
    for name, kind, help_, value in (
        ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", running),
        ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", waiting),
        (kv_name, "gauge", "KV-cache usage. 1 means 100 percent usage.", kv),
    ):
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        out += [f'{name}{{engine="{e}",model_name="m"}} {value}' for e in engines]
    out += ["# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.",
            "# TYPE vllm:num_preemptions_total counter"]
    out += [f'vllm:num_preemptions_total{{engine="{e}",model_name="m"}} {preemptions}' for e in engines]
    out += ["# HELP vllm:num_preemptions_created Cumulative number of preemption from the engine.",
            "# TYPE vllm:num_preemptions_created gauge",
            f"vllm:num_preemptions_created{LABELS} 1.7324313481234567e+09"]
    return "\n".join(out) + "\n"


def test_parse_prometheus_sums_label_sets_and_reads_every_number_form():
    text = "\n".join([
        "# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.",
        "# TYPE vllm:e2e_request_latency_seconds histogram",
        'vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="m"} 2.0',
        'vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 5.0',
        'vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 1.5e+01',
        'vllm:e2e_request_latency_seconds_sum{engine="1",model_name="m"} 2.5E-1',
        'weird{path="C:\\\\dir\\"quoted}",other="a,b"} 7 1732431348000',
        "no_labels 3",
        "gauge_inf +Inf",
        "gauge_nan NaN",
        "   ",
        "broken{unclosed=\"x 1",
        "bad_value{} abc",
        "# a comment with a { brace",
    ])
    got = parse_prometheus(text)
    assert got["vllm:e2e_request_latency_seconds_bucket"] == 7.0
    assert got["vllm:e2e_request_latency_seconds_sum"] == 15.25
    assert got["weird"] == 7.0 and got["no_labels"] == 3.0
    assert got["gauge_inf"] == math.inf and math.isnan(got["gauge_nan"])
    assert "broken" not in got and "bad_value" not in got
    assert parse_prometheus(scrape(engines=("0", "1"), running=4))["vllm:num_requests_running"] == 8.0


def test_nothing_is_reported_for_a_healthy_server():
    watch = MetricsWatch(window_s=60)
    assert [watch.feed(scrape(preemptions=i // 10, waiting=i % 3, kv=0.6), i * 5.0) for i in range(100)] == [None] * 100


def test_sustained_preemptions_are_reported_once_with_the_fixed_wording():
    watch = MetricsWatch(window_s=300, preemption_rate=0.1)
    results = [watch.feed(scrape(preemptions=0.19 * t, running=16, waiting=3, kv=0.95), float(t))
               for t in range(0, 601, 15)]
    reported = [(i, r) for i, r in enumerate(results) if r]
    assert len(reported) == 1
    index, text = reported[0]
    assert index * 15 == 300       # the first scrape with a whole window behind it
    assert text == ("selfheal metrics: sustained preemptions: vllm:num_preemptions_total rose by 57 in 300 s "
                    "(0.19/s, threshold 0.1/s); state: running=16 waiting=3 kv_cache_usage=0.950")


def test_preemptions_below_the_threshold_or_a_counter_reset_report_nothing():
    watch = MetricsWatch(window_s=100, preemption_rate=0.1)
    assert all(watch.feed(scrape(preemptions=0.05 * t, kv=0.5), float(t)) is None for t in range(0, 400, 10))
    watch = MetricsWatch(window_s=100, preemption_rate=0.1)
    # fast, then the server restarts (counter back to 0) and is fast again for less than a window
    assert watch.feed(scrape(preemptions=0, kv=0.5), 0.0) is None
    assert watch.feed(scrape(preemptions=5, kv=0.5), 50.0) is None
    assert watch.feed(scrape(preemptions=0, kv=0.5), 90.0) is None
    assert watch.feed(scrape(preemptions=50, kv=0.5), 150.0) is None   # only 60 s since the restart
    assert "rose by 50 in 100 s" in watch.feed(scrape(preemptions=50, kv=0.5), 190.0)


def test_kv_pressure_needs_sustain_scrapes_in_a_row_and_is_reported_again_after_clearing():
    watch = MetricsWatch(kv_usage_threshold=0.98, sustain_scrapes=3)
    seq = [0.99, 0.985, 0.5, 0.98, 0.99, 0.999, 0.999, 0.999, 0.4, 0.99, 0.99, 0.99]
    results = [watch.feed(scrape(kv=kv, running=12, waiting=2), 10.0 * i) for i, kv in enumerate(seq)]
    assert [i for i, r in enumerate(results) if r] == [5, 11]
    assert results[5] == ("selfheal metrics: sustained KV cache pressure: vllm:kv_cache_usage_perc at or above 0.98 "
                          "on 3 scrapes in a row over 20 s (last 0.999); state: running=12 waiting=2 "
                          "kv_cache_usage=0.999")


def test_kv_pressure_reads_the_older_metric_name_and_the_fullest_engine():
    watch = MetricsWatch(sustain_scrapes=2)
    body = scrape(kv_name="vllm:gpu_cache_usage_perc", kv=0.99).replace(
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.99',
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.99\nvllm:gpu_cache_usage_perc{engine="1",model_name="m"} 0.2')
    assert watch.feed(body, 0.0) is None
    assert "vllm:gpu_cache_usage_perc at or above 0.98 on 2 scrapes" in watch.feed(body, 5.0)


def test_queue_growth_on_every_scrape_of_the_window():
    watch = MetricsWatch(window_s=60, sustain_scrapes=3, queue_growth=10)
    waiting = [0, 3, 6, 9, 12, 15, 18, 21, 24]
    results = [watch.feed(scrape(waiting=w, running=16, kv=0.45), 10.0 * i) for i, w in enumerate(waiting)]
    assert [i for i, r in enumerate(results) if r] == [6]
    assert results[6] == ("selfheal metrics: sustained queue growth: vllm:num_requests_waiting rose on each of 6 "
                          "scrapes, from 0 to 18 in 60 s; state: running=16 waiting=18 kv_cache_usage=0.450")
    # one scrape where the queue did not grow: no queue symptom for a whole window
    watch = MetricsWatch(window_s=60, sustain_scrapes=3, queue_growth=10)
    waiting = [0, 3, 6, 6, 12, 15, 18, 21, 24, 27]
    results = [watch.feed(scrape(waiting=w, kv=0.45), 10.0 * i) for i, w in enumerate(waiting)]
    assert [i for i, r in enumerate(results) if r] == [9]  # the first window without the pause


def test_two_symptoms_at_once_come_one_scrape_after_the_other():
    watch = MetricsWatch(window_s=30, sustain_scrapes=3, queue_growth=2)
    results = [watch.feed(scrape(preemptions=10 * i, waiting=i, kv=0.99), 10.0 * i) for i in range(6)]
    kinds = [r.split(":")[1].strip() if r else None for r in results]
    assert kinds == [None, None, "sustained KV cache pressure", "sustained preemptions", "sustained queue growth", None]


# --- poll() against a real server ---------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    plan: list[int] = []  # statuses to answer, in order; 200 once they run out

    def do_GET(self):
        status = self.plan.pop(0) if self.plan else 200
        body = scrape(running=status).encode() if status == 200 else b"internal error"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_poll_yields_bodies_and_survives_a_500(server, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # must be ignored
    _Handler.plan = [500]
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    stop, stats, got = threading.Event(), PollStats(), []
    for t, body in poll(url, interval_s=0.01, stop=stop, stats=stats):
        got.append((t, body))
        if len(got) == 2:
            stop.set()
    assert stats.failures == 1 and "500" in stats.last_error and stats.scrapes == 2
    assert got[0][0] < got[1][0]
    assert parse_prometheus(got[0][1])["vllm:num_requests_running"] == 200.0


def test_poll_counts_refused_connections_and_returns_on_stop():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed again: nothing listens there
    stop, stats = threading.Event(), PollStats()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    try:
        assert list(poll(f"http://127.0.0.1:{port}/metrics", interval_s=0.02, stop=stop, stats=stats,
                         timeout_s=1)) == []
    finally:
        timer.cancel()
    assert stats.failures >= 2 and stats.scrapes == 0
    assert "refused" in stats.last_error.lower()
