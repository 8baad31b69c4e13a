"""The simulated server's /metrics (issue 15.8) and the canary judged at the watcher's threshold (15.4)."""
from __future__ import annotations

import msgspec
import pytest

from selfheal.edges.deployments import from_scenario
from selfheal.edges.metrics_watch import MetricsWatch, parse_prometheus
from selfheal.edges.sim import load_scenario, simulate
from selfheal.edges.sim import metrics as sim_metrics
from selfheal.edges.sim.scenario import SCENARIO_DIR
from selfheal.edges.sim_backend import with_symptoms
from selfheal.handlers.models.memory import account
from selfheal.handlers.models.serving import prompt_lengths, run_load
from selfheal.schemas.config import DeploymentSettings

STORM = "rt-preemption-storm-l4"
REFUSED = "rt-refused-long-prompts-a10g"


def _load(name: str, **config):
    s = load_scenario(name)
    c = s.current.changed(**config)
    return s, run_load(s, c, account(s, c))


def test_the_exposition_uses_vllms_metric_names_and_counts_go_up():
    s, load = _load(STORM)
    span = 10 * (int(load.duration_s * 1.5) // 10)        # a pass and a half
    scrapes = sim_metrics.scrapes(load, span)
    assert [x.t for x in scrapes[:3]] == [10.0, 20.0, 30.0] and scrapes[-1].t == span
    first, last = (parse_prometheus(sim_metrics.exposition(s.model.name, load, x)) for x in (scrapes[0], scrapes[-1]))
    for name in ("vllm:num_preemptions_total", "vllm:kv_cache_usage_perc", "vllm:num_requests_waiting",
                 "vllm:num_requests_running", "vllm:request_success_total", "http_requests_total"):
        assert name in first, name
    # production serves the workload over and over: a pass and a half hold a pass's preemptions and more
    assert last["vllm:num_preemptions_total"] > load.preemptions > first["vllm:num_preemptions_total"]
    assert last["vllm:request_success_total"] > first["vllm:request_success_total"]


def test_refusals_show_as_4xx_of_the_completion_route():
    s, load = _load(REFUSED)
    assert load.rejected_requests > 0
    text = sim_metrics.exposition(s.model.name, load, sim_metrics.scrapes(load, 120)[-1])
    assert 'http_requests_total{handler="/v1/completions",method="POST",status="4xx"}' in text
    assert 'status="2xx"' in text


@pytest.mark.parametrize("name, kinds", [
    (STORM, {"preemption_storm", "kv_cache_pressure"}),
    (REFUSED, {"requests_rejected"}),
])
def test_the_watcher_reports_the_symptom_from_the_text_as_from_the_values(name, kinds):
    s, load = _load(name)
    from_text = sim_metrics.symptoms(load, model=s.model.name)
    assert from_text == sim_metrics.symptoms(load)  # the parser's path and the values' path agree
    assert {sim_metrics.symptom_kind(x) for x in from_text} == kinds


def test_a_healthy_config_shows_no_symptom():
    s, load = _load(STORM, max_num_seqs=6)
    assert load.passed and sim_metrics.symptoms(load, model=s.model.name) == []


def test_the_production_output_holds_the_watchers_lines_after_the_log():
    r = simulate(STORM)
    out = with_symptoms(r)
    assert out.startswith(r.log_text) and r.metrics_symptoms
    assert out.endswith(r.metrics_symptoms[-1] + "\n")
    assert "selfheal metrics: sustained preemptions: vllm:num_preemptions_total rose by" in out


def _lenient(name: str, folder) -> str:
    """A file of the scenario with the scheduler's own preemption check switched off (any ratio passes)."""
    text = (SCENARIO_DIR / f"{name}.toml").read_text()
    path = folder / f"{name}-lenient.toml"
    path.write_text(text.replace("[workload]\n", "[workload]\nmax_preemption_ratio = 1000.0\n"))
    return str(path)


def test_a_canary_fails_at_the_watchers_threshold_where_the_schedulers_check_passes(tmp_path):
    path = _lenient(STORM, tmp_path)
    s = load_scenario(path)
    bad, good = s.current.changed(max_num_seqs=10), s.current.changed(max_num_seqs=8)
    assert run_load(s, bad, account(s, bad)).passed          # the scheduler's check alone lets it through
    r = simulate(s, bad)
    assert (r.started, r.passed_load, r.failure_stage) == (True, False, "load")
    assert r.failure_kind in ("kv_cache_pressure", "preemption_storm")
    assert r.excerpt == r.metrics_symptoms[0] and r.excerpt.startswith("selfheal metrics: sustained")
    assert simulate(s, good).passed_load
    # the predictor reaches the same verdict, without rendering a word
    edges = from_scenario("x", DeploymentSettings(scenario=path), 1.0)
    assert not edges.predictor.predict(bad, s.current).passes
    assert edges.predictor.predict(good, s.current).passes
    # and the canary's output, read by the observer, carries the watcher's line
    outcome = edges.backend.run(bad, None)
    assert r.metrics_symptoms[0] in outcome.log_text


def test_the_canarys_load_covers_short_and_long_prompts():
    s = load_scenario(REFUSED)
    prompts = [p for p, _ in prompt_lengths(s)]
    mean = s.workload.prompt_tokens
    assert min(prompts) <= 0.55 * mean and max(prompts) >= 1.45 * mean
    # a candidate that serves the short prompts but refuses the long ones fails its canary
    longest = max(p + o for p, o in prompt_lengths(s))
    short = simulate(s, s.current.changed(max_model_len=4096), render=False)
    assert longest > 4096 and not short.passed_load and short.failure_kind == "requests_rejected"
    assert simulate(s, s.current.changed(max_model_len=5120), render=False).passed_load


def test_a_server_that_never_served_exposes_nothing():
    r = simulate("b-qwen7b-16gb")
    assert not r.started and r.metrics_symptoms == [] and with_symptoms(r) == r.log_text


def test_a_watcher_with_other_thresholds_judges_by_them():
    s, load = _load(STORM, max_num_seqs=10)
    assert sim_metrics.symptoms(load)
    lax = MetricsWatch(preemption_rate=10.0, kv_usage_threshold=1.01)
    assert sim_metrics.symptoms(load, lax) == []
    assert msgspec.structs.asdict(sim_metrics.scrapes(load, 10)[0])["t"] == 10.0
