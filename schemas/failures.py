"""Failure kinds: the one list of what can go wrong with a vLLM server, with its meaning.

A rule of the observer names a `FindingKind` (a rule file naming any other kind is refused);
a canary's outcome names a `FailureKind`: a finding kind, or one of the `OutcomeKind`s that a
backend reports when no rule explains what it saw. The tuples are the Literals' values, so a
kind is added in exactly one place.
"""
from __future__ import annotations

from typing import Literal, get_args

FindingKind = Literal[
    "startup_free_memory_below_utilization",  # less GPU memory free at startup than utilization asks for
    "no_kv_cache_memory",                     # nothing left for the KV cache after weights and activations
    "max_model_len_exceeds_kv_cache",         # the KV cache cannot hold one max_model_len sequence
    "cuda_oom_allocation",                    # a CUDA allocation failed (weights, profiling, sampler warm-up)
    "batched_tokens_below_model_len",         # max_num_batched_tokens below max_model_len without chunked prefill
    "cuda_graph_oom",                         # out of memory while CUDA graphs are captured
    "other_config_error",                     # vLLM refused its arguments for another reason
    # runtime symptoms from /metrics (edges/metrics_watch.py)
    "preemption_storm",                       # requests preempted again and again for want of KV blocks
    "kv_cache_pressure",                      # the KV cache stays close to full
    "queue_growth",                           # the queue of waiting requests keeps growing
    "requests_rejected",                      # prompts longer than max_model_len refused again and again
]

OutcomeKind = Literal[
    "cotenant_oom",        # a co-tenant grew past what vLLM left on its GPU (simulator, load phase)
    "health_timeout",      # /health did not answer 200 in time, and no rule explains why
    "server_exited",       # the server exited before it was healthy, and no rule explains why
    "load_errors",         # requests failed under load, and no rule explains why
    "not_recorded",        # a replay asked for a canary the log does not hold
]

#: what a canary's `failure_kind` may say
FailureKind = Literal[FindingKind, OutcomeKind]

FINDING_KINDS: tuple[str, ...] = get_args(FindingKind)
FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)

#: the kinds vLLM raises while validating its arguments, before any device work (stage "config")
CONFIG_KINDS: frozenset[FindingKind] = frozenset({"other_config_error", "batched_tokens_below_model_len"})
