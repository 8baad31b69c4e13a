"""The observer's symptom rules read exactly what MetricsWatch writes, and fix in the right direction."""
from __future__ import annotations

import pytest

from selfheal.handlers.observer import builtin_ruleset, diagnose
from selfheal.handlers.observer.engine import scan
from selfheal.handlers.observer.logtext import LogText
from selfheal.handlers.observer.rules import KINDS
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import ServingConfig

RULES = builtin_ruleset().rules  # the built-in rules' specs
MATCHERS = builtin_ruleset().matchers  # the built-in rules, compiled once

PREEMPT = ("selfheal metrics: sustained preemptions: vllm:num_preemptions_total rose by 57 in 300 s "
           "(0.19/s, threshold 0.1/s); state: running=16 waiting=3 kv_cache_usage=0.950")
KV = ("selfheal metrics: sustained KV cache pressure: vllm:kv_cache_usage_perc at or above 0.98 on 3 scrapes in a "
      "row over 20 s (last 0.999); state: running=12 waiting=2 kv_cache_usage=0.999")
KV_OLD = ("selfheal metrics: sustained KV cache pressure: vllm:gpu_cache_usage_perc at or above 0.98 on 4 scrapes in "
          "a row over 45 s (last 0.990)")  # no state: the scrape had none of those metrics
QUEUE = ("selfheal metrics: sustained queue growth: vllm:num_requests_waiting rose on each of 6 scrapes, from 0 to 18 "
         "in 60 s; state: running=16 waiting=18 kv_cache_usage=0.450")
PRESSURE = {"max_num_seqs": "decrease", "gpu_memory_utilization": "increase"}
SYMPTOM_RULES = {"selfheal.metrics.preemptions", "selfheal.metrics.kv_cache_pressure", "selfheal.metrics.queue_growth"}


def test_kinds_and_rules_are_registered():
    assert {"preemption_storm", "kv_cache_pressure", "queue_growth"} <= set(KINDS)
    assert SYMPTOM_RULES <= {r.id for r in RULES}
    fired = {h.matcher.rule.id for text in (PREEMPT, KV, KV_OLD, QUEUE) for h in scan(LogText(text), MATCHERS)}
    assert fired == SYMPTOM_RULES


@pytest.mark.parametrize("text, current, kind, numbers, fix", [
    (PREEMPT, None, "preemption_storm",
     {"preemptions": 57, "window_s": 300, "preemptions_per_s": 0.19, "requests_waiting": 3, "requests_running": 16,
      "kv_cache_utilization": 0.95},
     {"max_num_seqs": 14}),                          # 16 running: min(16 - 2, 14.4) -> 14
    (PREEMPT, ServingConfig(max_num_seqs=256), "preemption_storm", None,
     {"max_num_seqs": 14}),                          # fewer ran than allowed: what ran is the base
    (PREEMPT.replace("running=16", "running=64"), ServingConfig(max_num_seqs=32), "preemption_storm", None,
     {"max_num_seqs": 28}),                          # config 32 < 64 running (several engines): 28.8 -> 28
    (KV, None, "kv_cache_pressure",
     {"scrapes": 3, "window_s": 20, "requests_waiting": 2, "requests_running": 12, "kv_cache_utilization": 0.999},
     {"max_num_seqs": 10}),
    (KV_OLD, None, "kv_cache_pressure", {"scrapes": 4, "window_s": 45}, {}),   # nothing to compute from: alert
    (KV_OLD, ServingConfig(max_num_seqs=8), "kv_cache_pressure", None, {"max_num_seqs": 6}),
])
def test_pressure_symptoms_lower_max_num_seqs(text, current, kind, numbers, fix):
    d = diagnose(text, current=current)
    p = d.primary
    assert (p.kind, p.fix, p.fix_direction) == (kind, fix, PRESSURE)
    assert p.action == ("tune" if fix else "alert")
    if numbers is not None:
        assert p.numbers == numbers
    assert p.evidence == [text] and p.line == 1


@pytest.mark.parametrize("text, current, fix, why", [
    (QUEUE, None, {}, "current max_num_seqs unknown"),
    (QUEUE, ServingConfig(max_num_seqs=16), {"max_num_seqs": 18}, "all 16 sequence slots in use"),
    (QUEUE, ServingConfig(max_num_seqs=32), {}, "only 16 of 32 sequence slots"),
    (QUEUE.replace("kv_cache_usage=0.450", "kv_cache_usage=0.950"), ServingConfig(max_num_seqs=16), {},
     "KV cache 95% used"),
    (QUEUE.replace(" kv_cache_usage=0.450", ""), ServingConfig(max_num_seqs=16), {}, "KV cache usage unknown"),
])
def test_queue_growth_raises_max_num_seqs_only_when_known_to_fit(text, current, fix, why):
    p = diagnose(text, current=current).primary
    assert p.kind == "queue_growth" and p.fix_direction == {"max_num_seqs": "increase"}
    assert p.fix == fix and p.action == ("tune" if fix else "alert")
    assert why in p.note
    assert p.numbers["requests_waiting"] == 18 and p.numbers["requests_waiting_before"] == 0


def test_fixes_follow_the_actuator_grid_and_are_not_clamped():
    bounds = ActuatorBounds()
    p = diagnose(PREEMPT.replace("running=16", "running=3"), bounds=bounds).primary
    assert p.fix == {"max_num_seqs": 1}                 # below the minimum 2: kept visible, the caller escalates
    big = ServingConfig(max_num_seqs=256)
    p = diagnose(QUEUE.replace("running=16", "running=256"), current=big).primary
    assert p.fix == {"max_num_seqs": 282}               # 256 * 1.1 = 281.6 -> up to the grid


def test_a_startup_failure_outranks_a_symptom_in_the_same_text():
    text = PREEMPT + "\nValueError: No available memory for the cache blocks."
    d = diagnose(text, current=ServingConfig(gpu_memory_utilization=0.8))
    assert d.primary.kind == "no_kv_cache_memory" and len(d.findings) == 2


def test_symptom_rules_stay_silent_on_healthy_metric_like_lines():
    assert diagnose("selfheal metrics: scraping http://127.0.0.1:8000/metrics every 15 s").findings == []
    # one stats line of a full cache is not sustained: told alone, never tuned
    (f,) = diagnose("INFO 11-24 06:56:01 [loggers.py:123] Engine 000: Running: 16 reqs, Waiting: 40 reqs, "
                    "GPU KV cache usage: 99.9%, Prefix cache hit rate: 0.0%").findings
    assert (f.kind, f.confidence, f.action, f.fix) == ("kv_cache_pressure", "unsustained", "alert", {})


def test_watch_output_round_trips_through_the_rules():
    from selfheal.edges.metrics_watch import MetricsWatch
    from tests.live.test_metrics_watch import scrape

    watch = MetricsWatch(window_s=30, sustain_scrapes=3, queue_growth=2)
    texts = [watch.feed(scrape(preemptions=10 * i, waiting=i, running=16, kv=0.99), 10.0 * i) for i in range(6)]
    kinds = [diagnose(t).primary.kind for t in texts if t]
    assert kinds == ["kv_cache_pressure", "preemption_storm", "queue_growth"]


@pytest.mark.parametrize("text", [PREEMPT, KV])
def test_one_scrape_running_one_still_seeds_one_sequence_not_zero(text):
    # a real CPU server's storm: the scrape caught running=1 between preemptions; one step below is 0 sequences,
    # which is no config: the seed is one at a time (in bounds where the operator allows 1)
    running_one = text.replace("running=16", "running=1").replace("running=12", "running=1")
    assert diagnose(running_one, current=ServingConfig(max_num_seqs=8)).primary.fix == {"max_num_seqs": 1}
