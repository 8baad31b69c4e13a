"""MetricsWatch's fourth symptom: over-long prompts refused again and again (issue 15.8).

vLLM refuses a prompt longer than max_model_len with HTTP 400 and logs only the access line;
its /metrics count it in http_requests_total{status="4xx"} of the completion routes."""
from __future__ import annotations

from selfheal.edges.metrics_watch import MetricsWatch


def scrape(refused_completions: float, refused_models: float = 0.0, ok: float = 100.0) -> str:
    return "\n".join([
        "# TYPE http_requests_total counter",
        f'http_requests_total{{handler="/v1/completions",method="POST",status="2xx"}} {ok}',
        f'http_requests_total{{handler="/v1/chat/completions",method="POST",status="4xx"}} {refused_completions}',
        f'http_requests_total{{handler="/v1/models",method="GET",status="4xx"}} {refused_models}',
        'vllm:num_requests_running{engine="0",model_name="m"} 4.0',
        'vllm:num_requests_waiting{engine="0",model_name="m"} 0.0',
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.31',
    ]) + "\n"


def test_sustained_refusals_are_reported_once_with_the_fixed_wording():
    watch = MetricsWatch(window_s=300, refusal_rate=0.01)
    found = [(t, watch.feed(scrape(0.04 * t), float(t))) for t in range(0, 601, 15)]
    reported = [(t, line) for t, line in found if line]
    assert len(reported) == 1 and reported[0][0] == 300
    assert reported[0][1] == (
        'selfheal metrics: sustained request refusals: http_requests_total{status="4xx"} of /v1/completions and '
        "/v1/chat/completions rose by 12 in 300 s (0.04/s, threshold 0.01/s); state: running=4 waiting=0 "
        "kv_cache_usage=0.310")


def test_refusals_elsewhere_or_below_the_threshold_are_not_a_symptom():
    watch = MetricsWatch(window_s=100, refusal_rate=0.01)
    # a client polling a wrong model name gets 4xx from /v1/models: no prompt was refused
    assert all(watch.feed(scrape(0, refused_models=t), float(t)) is None for t in range(0, 400, 10))
    watch = MetricsWatch(window_s=100, refusal_rate=0.01)
    assert all(watch.feed(scrape(0.005 * t), float(t)) is None for t in range(0, 400, 10))


def test_a_counter_reset_starts_the_window_again():
    watch = MetricsWatch(window_s=100, refusal_rate=0.01)
    assert watch.feed(scrape(0), 0.0) is None
    assert watch.feed(scrape(30), 50.0) is None
    assert watch.feed(scrape(0), 60.0) is None        # the counter went down: the server restarted
    assert watch.feed(scrape(3), 110.0) is None       # 50 s since the restart: not a whole window yet
    assert "rose by 3 in 100 s" in watch.feed(scrape(3), 160.0)


def test_a_server_without_the_http_counter_reports_no_refusals():
    watch = MetricsWatch(window_s=10)
    text = 'vllm:num_requests_running{engine="0"} 1.0\n'
    assert all(watch.feed(text, float(t)) is None for t in range(0, 100, 5))
