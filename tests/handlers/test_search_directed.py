"""The search's pure functions (issue 15.1-15.3): following a failure without a prediction,
deciding whether a fix outside the bounds is searched inside them or escalated, and the
climb over pairs with its bound on predictions."""
from __future__ import annotations

import msgspec
import pytest

from selfheal.handlers.models import directed as d
from selfheal.handlers.models.search import REFINE_BUDGET, climb
from selfheal.handlers.ports import Prediction
from selfheal.schemas.actuators import Actuator, ActuatorBounds
from selfheal.schemas.serving import ServingConfig

#: one step of utilization and one of max_num_seqs are each a quarter of their range
EVEN = ActuatorBounds(gpu_memory_utilization=Actuator(name="gpu_memory_utilization", min=0.5, max=0.9, step=0.1),
                      max_num_seqs=Actuator(name="max_num_seqs", min=2, max=10, step=2),
                      max_model_len=Actuator(name="max_model_len", min=1024, max=8192, step=1024))
NOW = ServingConfig(gpu_memory_utilization=0.7, max_model_len=4096, max_num_seqs=6, max_num_batched_tokens=8192)
KV = {"gpu_memory_utilization": 1, "max_num_seqs": -1}


@pytest.mark.parametrize("commands, env, keys, expected", [
    ([["vllm", "serve", "m", "--kv-cache-memory-bytes", "1048576"]], {}, {},
     "--kv-cache-memory-bytes 1048576 in the deployment's command"),
    ([["vllm", "serve", "m", "--kv_cache_memory_bytes=2G"]], {}, {},
     "--kv_cache_memory_bytes=2G in the deployment's command"),
    ([["vllm", "serve"]], {"VLLM_CPU_KVCACHE_SPACE": "4"}, {},
     "VLLM_CPU_KVCACHE_SPACE=4 in the deployment's environment"),
    ([["vllm", "serve"]], {}, {"kv_cache_memory_bytes": 1 << 30},
     "kv_cache_memory_bytes=1073741824 in the deployment's serving config"),
    ([["vllm", "serve", "--gpu-memory-utilization", "0.9"]], {"VLLM_CPU_KVCACHE_SPACE": ""}, {}, ""),
])
def test_an_explicit_kv_size_is_read_from_flags_environment_and_config(commands, env, keys, expected):
    assert d.explicit_kv_size(commands, env, keys) == expected


def test_an_explicit_kv_size_takes_utilization_out_only_for_kv_failures():
    lost = d.powerless(["max_model_len_exceeds_kv_cache"], "VLLM_CPU_KVCACHE_SPACE=4 in the deployment's environment")
    assert lost == {"gpu_memory_utilization": "gpu_memory_utilization cannot change the KV cache size, set "
                                              "explicitly by VLLM_CPU_KVCACHE_SPACE=4 in the deployment's environment"}
    assert d.powerless(["startup_free_memory_below_utilization"], "x") == {}  # utilization still sizes the request
    assert d.powerless(["no_kv_cache_memory"], "") == {}


def test_without_a_prediction_candidates_move_only_the_named_ways_nearest_first():
    pool = d.directed(NOW, NOW, [(NOW, KV)], EVEN, max_changes=2)
    for config in pool:
        assert config.gpu_memory_utilization >= NOW.gpu_memory_utilization  # never the opposite way
        assert config.max_num_seqs <= NOW.max_num_seqs
        assert config.max_model_len == NOW.max_model_len  # not named: never moved
    distances = [round(d.distance(NOW, c, EVEN), 12) for c in pool]
    assert distances == sorted(distances)
    # one step of each is the same fraction of its range: the tie goes to TUNABLE's order
    # (utilization first), where the JSON's byte order would put max_num_seqs 4 first
    assert pool[:2] == [NOW.changed(gpu_memory_utilization=0.8), NOW.changed(max_num_seqs=4)]
    assert sorted(pool[:2], key=msgspec.json.encode)[0] == NOW.changed(max_num_seqs=4)
    assert len(pool) == 2 + 2 + 2 * 2  # util 0.8/0.9, seqs 4/2, and their pairs


def test_a_config_going_no_further_than_a_failed_one_is_not_tried():
    failed = NOW.changed(gpu_memory_utilization=0.9, max_num_seqs=4)
    # utilization is at its maximum: only max_num_seqs below the failed 4 is left, utilization kept
    assert d.directed(NOW, failed, [(NOW, KV), (failed, KV)], EVEN, max_changes=2) == [failed.changed(max_num_seqs=2)]
    up = {"gpu_memory_utilization": 1}
    assert d.directed(NOW, NOW, [(NOW, up), (NOW.changed(gpu_memory_utilization=0.9), up)], EVEN, 2) == []


def test_each_failure_is_followed_from_the_config_that_failed():
    # production at 0.9 did not fit the free memory (utilization down); the seed at 0.6 then had
    # too little KV cache for 8192 tokens (utilization up from 0.6, or max_model_len down)
    production = NOW.changed(gpu_memory_utilization=0.9, max_model_len=8192)
    seed = production.changed(gpu_memory_utilization=0.6)
    failures = [(production, {"gpu_memory_utilization": -1}),
                (seed, {"gpu_memory_utilization": 1, "max_model_len": -1})]
    pool = d.directed(production, seed, failures, EVEN, max_changes=2)
    assert pool and all(0.6 <= c.gpu_memory_utilization < 0.9 and c.max_model_len <= 8192 for c in pool)
    assert seed not in pool and production.changed(gpu_memory_utilization=0.7) in pool
    assert pool[0] == seed.changed(max_model_len=7168)  # one step of max_model_len is nearest the seed
    assert d.beyond(seed.changed(max_model_len=7168), failures[1])
    assert not d.beyond(seed.changed(max_model_len=7168, gpu_memory_utilization=0.5), failures[1])
    assert d.beyond(seed, (seed, {}))  # a failure naming no way constrains nothing


class Table:
    """A predictor: a table of predictions, one answer for the rest, and a count of calls."""

    def __init__(self, table=None, otherwise=Prediction(passes=False, failure_kind="no_kv_cache_memory")):
        self.table, self.otherwise, self.calls = table or {}, otherwise, 0

    def __call__(self, config):
        self.calls += 1
        return self.table.get(config, self.otherwise)


LEN_FIX = {"max_model_len": 512}  # vLLM's estimate, below the operator's floor of 1024
LEN_WAYS = {"max_model_len": "decrease", "gpu_memory_utilization": "increase"}


def test_a_fix_outside_the_bounds_is_searched_when_an_alternative_is_predicted_to_work():
    works = NOW.changed(max_model_len=1024, gpu_memory_utilization=0.9)
    seed, why = d.inside_bounds(NOW, LEN_FIX, LEN_WAYS, "max_model_len_exceeds_kv_cache", EVEN, 2,
                                Table({works: Prediction(passes=True, fitness=5.0)}), {})
    assert seed == {}  # the tournament searches, by prediction, inside the bounds
    assert why == "gpu_memory_utilization=0.9 with max_model_len=1024 is predicted to work: the tournament " \
                  "searches inside the bounds"


def test_a_fix_outside_the_bounds_escalates_naming_each_alternative_and_its_predicted_failure():
    predictor = Table()
    seed, why = d.inside_bounds(NOW, LEN_FIX, LEN_WAYS, "max_model_len_exceeds_kv_cache", EVEN, 2, predictor, {})
    assert seed is None
    assert why == ("nothing inside the bounds is predicted to work: max_model_len=1024 predicted no_kv_cache_memory; "
                   "gpu_memory_utilization=0.9 predicted no_kv_cache_memory; gpu_memory_utilization=0.9 with "
                   "max_model_len=1024 predicted no_kv_cache_memory; nor any of 48 other configurations of "
                   "max_model_len, gpu_memory_utilization, enforce_eager")
    assert predictor.calls > 3  # the tournament's whole neighbourhood was asked too, not only the alternatives


def test_a_fix_outside_the_bounds_without_a_prediction_follows_the_finding():
    seed, why = d.inside_bounds(NOW, LEN_FIX, LEN_WAYS, "max_model_len_exceeds_kv_cache", EVEN, 2,
                                Table(otherwise=Prediction(passes=None)), {})
    # the fix as far as the bounds go, with the nearest step of the alternative the finding names
    assert seed == {"max_model_len": 1024, "gpu_memory_utilization": 0.8}
    assert why.startswith("no prediction: following the finding inside the bounds, nearest first")


def test_a_powerless_alternative_leaves_nothing_and_the_escalation_names_the_setting():
    lost = d.powerless(["max_model_len_exceeds_kv_cache"], "--kv-cache-memory-bytes 1048576 in the deployment's command")
    seed, why = d.inside_bounds(NOW, LEN_FIX, LEN_WAYS, "max_model_len_exceeds_kv_cache", EVEN, 2,
                                Table(otherwise=Prediction(passes=None)), lost)
    assert seed is None
    assert why == ("nothing else the finding names can move inside the bounds: gpu_memory_utilization cannot change "
                   "the KV cache size, set explicitly by --kv-cache-memory-bytes 1048576 in the deployment's command")


GRID = ActuatorBounds(gpu_memory_utilization=Actuator(name="gpu_memory_utilization", min=0.5, max=0.95, step=0.01),
                      max_model_len=Actuator(name="max_model_len", min=1024, max=65536, step=1024))
START = ServingConfig(gpu_memory_utilization=0.6, max_model_len=16384, max_num_seqs=8, max_num_batched_tokens=2048)


def ridge(config: ServingConfig) -> float:
    """The KV cache holds 4096 tokens per 0.01 of utilization above 0.5; a longer context is
    worth more, utilization costs headroom. Alone, neither move pays: more context does not
    fit, more utilization only costs. Together they climb to (0.95, 65536)."""
    capacity = (config.gpu_memory_utilization - 0.5) * 100 * 4096
    if config.max_model_len > capacity + 1e-6:
        return float("-inf")
    return config.max_model_len / 1024 - 20 * config.gpu_memory_utilization


def counted(fitness):
    seen: dict = {}

    def f(config):
        if config not in seen:
            seen[config] = fitness(config)
        return seen[config]
    return f, lambda: len(seen)


def test_the_climb_moves_two_actuators_together_where_one_alone_is_stuck():
    start = START.changed(max_model_len=40960)  # at capacity for 0.6: the ridge
    f, spent = counted(ridge)
    best, fitness = climb(start, ridge(start), ["gpu_memory_utilization", "max_model_len"], START, GRID, 2, f, spent)
    assert ridge(START.changed(gpu_memory_utilization=0.61)) < ridge(START)  # utilization alone costs
    assert best.max_model_len > start.max_model_len and best.gpu_memory_utilization > 0.6
    assert fitness > ridge(start) + 10
    assert spent() <= REFINE_BUDGET


def test_the_climb_never_makes_more_predictions_than_its_budget():
    def slanted(config):  # a ridge the grid's diagonals cross at an angle: small gains for a long time
        return (-abs(config.gpu_memory_utilization * 1000 - config.max_model_len / 100)
                - abs(config.max_num_seqs - 100))
    f, spent = counted(slanted)
    bounds = ActuatorBounds(
        gpu_memory_utilization=Actuator(name="gpu_memory_utilization", min=0.05, max=1.0, step=0.005),
        max_model_len=Actuator(name="max_model_len", min=256, max=131072, step=512),
        max_num_seqs=Actuator(name="max_num_seqs", min=1, max=256, step=1))
    climb(START, slanted(START), ["gpu_memory_utilization", "max_model_len", "max_num_seqs"], START, bounds,
          3, f, spent)
    assert spent() == REFINE_BUDGET
