"""The fitness function: a canary's measurements in, a verdict out. Pure.

Fitness, as documented in the README:

- A candidate must start and pass the load phase; otherwise it fails and has no fitness.
- fitness = throughput x capacity x context x headroom, where
  - throughput is the load phase's output tokens per second (preemptions already cost
    throughput there, since a preempted request recomputes its prefill);
  - capacity = 0.9 + 0.1 x min(max_concurrency, 4) / 4: up to 10% for KV room to hold more
    full-length requests at once than the load phase happened to need;
  - context = sqrt(min(1, max_model_len / production's max_model_len)): a candidate that
    cuts the context length serves fewer of the requests production promised, so throughput
    bought by shrinking max_model_len is discounted (halving it costs about 29%);
  - headroom = min(1, gpu_headroom / margin), floored at 0.1: memory left on the card for
    co-tenants below the safety margin (pre-flight's margin) is penalised in proportion.
"""
from __future__ import annotations

import math

import msgspec

from selfheal.schemas.events import CanaryMeasurements
from selfheal.schemas.serving import ServingConfig


class Verdict(msgspec.Struct, frozen=True):
    passed: bool
    fitness: float | None
    components: dict[str, float]
    reason: str


def score(m: CanaryMeasurements, margin_gib: float, config: ServingConfig | None = None,
          production: ServingConfig | None = None) -> Verdict:
    if not m.started:
        return Verdict(False, None, {}, f"did not start: {m.failure_kind or 'unknown failure'}")
    if not m.passed_load:
        return Verdict(False, None, {}, f"failed under load: {m.failure_kind or 'unknown failure'}")
    capacity = 0.9 + 0.1 * min(max(m.max_concurrency, 0.0), 4.0) / 4.0
    headroom = 1.0 if margin_gib <= 0 else max(0.1, min(1.0, m.gpu_headroom_gib / margin_gib))
    context = 1.0
    if config is not None and production is not None and production.max_model_len > 0:
        context = math.sqrt(min(1.0, config.max_model_len / production.max_model_len))
    fitness = m.throughput_tok_s * capacity * context * headroom
    components = {"throughput_tok_s": round(m.throughput_tok_s, 3), "capacity": round(capacity, 4),
                  "context": round(context, 4), "headroom": round(headroom, 4)}
    reason = "passed" if headroom >= 1.0 else f"passed; headroom {m.gpu_headroom_gib:.2f} GiB is below the margin"
    return Verdict(True, round(fitness, 3), components, reason)
