"""The whole loop on the simulator, on a real SQLite log (issue 15.1-15.3): a seed fix outside
the bounds is searched inside them and healed, or escalated with what was predicted; without
a prediction the search follows the failure, and an explicit KV size that makes utilization
powerless ends the run after one canary, saying so."""
from __future__ import annotations

from selfheal.handlers.ports import NoPredictor
from tests.loop.test_refine import ended_once, proposals, rewire

LLAMA = "a-llama8b-24gb"  # vLLM estimates a max_model_len of 43008 at utilization 0.9


def llama_bounds(util_max: float, len_min: int) -> str:
    return (f"[deployments.{LLAMA}.actuators]\n"
            f"gpu_memory_utilization = {{ min = 0.60, max = {util_max}, step = 0.01 }}\n"
            "max_num_seqs = { min = 8, max = 256, step = 8 }\n"
            f"max_model_len = {{ min = {len_min}, max = 131072, step = 1024 }}\n"
            "max_num_batched_tokens = { min = 512, max = 16384, step = 512 }\n")


def inside(h, config) -> bool:
    return h.edges[h.scenario].bounds.violations(config) == []


def test_an_estimate_below_the_floor_is_healed_inside_the_bounds(harness):
    # the operator's floor (49152) is above vLLM's estimate: before, an escalation without a run
    h = harness(LLAMA, llama_bounds(0.95, 49152))
    h.incident()
    (intent,) = [r.event for r in h.events("IntentRaised")]
    assert intent.action == "tune" and intent.seed_fix == {}
    assert intent.reason == ("seed fix outside the bounds: needs max_model_len=43008, below the minimum 49152; "
                             "gpu_memory_utilization=0.95 with max_model_len=49152 is predicted to work: the "
                             "tournament searches inside the bounds")
    (candidate,) = proposals(h)
    assert candidate.origin == "tournament" and inside(h, candidate.config)
    assert candidate.changes == {"gpu_memory_utilization": [0.9, 0.95], "max_model_len": [131072, 52224]}
    ended_once(h, "promoted")
    assert h.events("RunFinished")[0].event.canaries == 1


def test_nothing_inside_the_bounds_escalates_with_each_alternative_and_its_predicted_failure(harness):
    h = harness(LLAMA, llama_bounds(0.9, 49152))  # utilization may not rise: no config inside fits
    h.incident()
    assert not h.events("RunStarted") and not proposals(h)
    (escalation,) = [r.event for r in h.events("EscalationRaised")]
    assert escalation.run_id is None
    assert escalation.reason.startswith(
        "seed fix outside the bounds: needs max_model_len=43008, below the minimum 49152; nothing inside the "
        "bounds is predicted to work: max_model_len=49152 predicted max_model_len_exceeds_kv_cache; nor any of ")
    assert [r.event.outcome for r in h.events("IntentArchived")] == ["alerted"]


class PinnedKv:
    """A backend whose KV cache is sized explicitly, smaller than utilization 0.9 would give:
    whatever utilization a candidate asks for, the server gets 0.85's worth."""

    def __init__(self, real):
        self.real, self.name, self.simulated, self.scenario = real, real.name, real.simulated, real.scenario

    def run(self, config, started_at, on_launch=None, *, canary_id=None):
        return self.real.run(config.changed(gpu_memory_utilization=0.85), started_at, on_launch,
                             canary_id=canary_id)


def pinned(h):
    edges = h.edges[h.scenario]
    settings = edges.settings.model_copy(update={"env": {"VLLM_CPU_KVCACHE_SPACE": "14"}})
    rewire(h, backend=PinnedKv(edges.backend), predictor=NoPredictor(), settings=settings)


def test_an_explicit_kv_size_escalates_after_one_canary_naming_it(harness):
    h = harness(LLAMA, llama_bounds(0.95, 43008))
    pinned(h)
    h.incident()
    (seed,) = proposals(h)  # the seed, vLLM's estimate; then nothing: utilization cannot help
    assert seed.origin == "seed" and seed.changes == {"max_model_len": [131072, 43008]}
    ended_once(h, "escalated")
    assert h.events("RunFinished")[0].event.canaries == 1
    (escalation,) = [r.event for r in h.events("EscalationRaised")]
    assert escalation.reason.startswith(
        "nothing untried inside the bounds moves the way max_model_len_exceeds_kv_cache names further than what "
        "failed: gpu_memory_utilization cannot change the KV cache size, set explicitly by "
        "VLLM_CPU_KVCACHE_SPACE=14 in the deployment's environment; max_model_len cannot decrease from 43008")


def test_an_explicit_kv_size_with_the_estimate_below_the_floor_escalates_without_a_canary(harness):
    h = harness(LLAMA, llama_bounds(0.95, 49152))
    pinned(h)
    h.incident()
    assert not proposals(h)
    (escalation,) = [r.event for r in h.events("EscalationRaised")]
    # the calibration from the failing start rules out every length inside the bounds; the explicit size
    # that holds utilization still is named (issue 15.3)
    assert escalation.reason.startswith("every one of the ")
    assert "predicted not to start, from vLLM's printed numbers: max_model_len=" in escalation.reason
    assert escalation.reason.endswith(
        "; gpu_memory_utilization cannot change the KV cache size, set explicitly by VLLM_CPU_KVCACHE_SPACE=14 in "
        "the deployment's environment")


def test_without_a_prediction_the_search_only_moves_the_way_the_failure_names(harness):
    # no prediction and no explicit KV size: after the seed fails, utilization rises (the way the
    # finding names), never falls; max_model_len never rises
    h = harness(LLAMA, llama_bounds(0.95, 43008))
    edges = h.edges[h.scenario]
    rewire(h, backend=PinnedKv(edges.backend), predictor=NoPredictor())
    h.incident()
    seed, *rest = proposals(h)
    assert rest, "utilization may still help: the run goes on after the seed"
    for candidate in rest:
        assert candidate.config.gpu_memory_utilization >= 0.9 and candidate.config.max_model_len <= 43008
        assert candidate.reason.startswith("no prediction: the nearest of ")
    # nearest first among what the calibration from the seed's start does not rule out (0.91 and 0.92 it does)
    assert rest[0].changes == {"gpu_memory_utilization": [0.9, 0.93], "max_model_len": [131072, 43008]}
    assert rest[0].reason.endswith("; 2 predicted not to start were left out")
