"""What one engine step costs: the roofline of memory_model.md §4, summed term by term.

Pure: a scenario's GPU and model and a serving config in, seconds out. The load model
(serving.py) steps vLLM's scheduler with it; nothing here knows about requests.
"""
from __future__ import annotations

import msgspec

from selfheal.handlers.models.memory import gib
from selfheal.schemas.scenario import Scenario
from selfheal.schemas.serving import ServingConfig

#: per-step scheduling + launch overhead with CUDA graphs [est; c0 of §4]
STEP_OVERHEAD_S = 1.0e-3
#: extra launch overhead per layer in eager mode [est]: 0.12 ms/layer makes decode at batch 1
#: 1.8x slower for a 7B and 2.4x for a 3B model on an H200, inside §4's 1.7–3.6x
EAGER_PER_LAYER_S = 0.12e-3
#: two all-reduces per layer at TP>1 over PCIe, 25 µs each [est]
TP_ALLREDUCE_S = 25e-6


class PerfModel(msgspec.Struct, frozen=True, kw_only=True):
    """What one engine step costs on one GPU worker (§4 roofline, summed terms)."""
    weight_bytes: int
    kv_bytes_per_token: int
    bandwidth: float      # bytes/s
    flops: float          # effective FLOP/s
    params: float         # parameters per GPU
    layers: int
    tp: int
    eager: bool

    def terms(self, tokens: int) -> tuple[float, float, float, float]:
        """The step's terms but the context's: c0 + W/BW, then 2·P·tokens/FLOPS, eager launches,
        TP all-reduces (0.0 where they do not apply: adding it changes no float)."""
        return (STEP_OVERHEAD_S + self.weight_bytes / self.bandwidth, 2 * self.params * tokens / self.flops,
                self.layers * EAGER_PER_LAYER_S if self.eager else 0.0,
                2 * self.layers * TP_ALLREDUCE_S if self.tp > 1 else 0.0)

    def step_s(self, tokens: int, context_tokens: int) -> float:
        """c0 + W/BW + ctx·kv_bytes/BW + 2·P·tokens/FLOPS (+ eager launches, TP all-reduces)."""
        return self.step_from(self.terms(tokens), context_tokens)

    def step_from(self, terms: tuple[float, float, float, float], context_tokens: int) -> float:
        """A step's time from `terms(tokens)`, summed in one order, so that a stride that keeps
        the terms of its batch size gets the plain loop's floats."""
        head, compute, eager, allreduce = terms
        return head + context_tokens * self.kv_bytes_per_token / self.bandwidth + compute + eager + allreduce


def perf_model(scenario: Scenario, config: ServingConfig, kv_bytes_per_token: int) -> PerfModel:
    tp = scenario.tensor_parallel_size
    return PerfModel(
        weight_bytes=gib(scenario.model.weights_gib), kv_bytes_per_token=kv_bytes_per_token,
        bandwidth=scenario.gpu.bandwidth_tbs * 1e12, flops=scenario.gpu.tflops * 1e12,
        params=scenario.model.params_b * 1e9 / tp, layers=scenario.model.layers, tp=tp,
        eager=config.enforce_eager,
    )


def decode_step_ms(scenario: Scenario, config: ServingConfig, batch: int, context: int,
                   kv_bytes_per_token: int) -> float:
    """One pure-decode step for `batch` requests of `context` tokens each, in ms."""
    return perf_model(scenario, config, kv_bytes_per_token).step_s(batch, batch * context) * 1e3


__all__ = ["PerfModel", "perf_model", "decode_step_ms", "STEP_OVERHEAD_S", "EAGER_PER_LAYER_S", "TP_ALLREDUCE_S"]
