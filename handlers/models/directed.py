"""Searching inside the bounds the way a failure points: where there is no prediction (a real
deployment), and before a seed fix outside the bounds is escalated.

Pure: configs, bounds, directions and a predictor function in; configs and reasons out. The
intent handler (handlers/intents.py) decides with `inside_bounds` whether a failure whose seed
fix lies outside the bounds is searched or escalated; the tournament (handlers/tournament.py)
ranks its candidates with `directed` when the predictor cannot say.

Three rules, from issue 15:

- a candidate moves only the actuators the failure names, each in the direction it names,
  never the other way; nearest first (range fractions, so 0.05 of utilization and 512 tokens
  of max_model_len compare), ties broken by the order of TUNABLE and then the values, never by
  how a config happens to serialise;
- a config that moves no further in every named direction than one that already failed is
  not tried: the failure says moving further is what helps;
- a setting that makes an actuator powerless takes it out of the search, and the escalation
  names it: an explicit KV cache size (`--kv-cache-memory-bytes`, the `kv_cache_memory_bytes`
  config key, `VLLM_CPU_KVCACHE_SPACE`) sizes the cache whatever gpu_memory_utilization says
  (vLLM's cpu_worker / gpu_worker read it before utilization), so for the failures of a KV
  cache too small, utilization is no remedy.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from selfheal.handlers.models.search import neighbourhood, relevant_actuators
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import TUNABLE, ServingConfig

#: the directions vLLM's messages name for each failure kind (the built-in rules' `direction`,
#: united over the rules of a kind). A finding carries its own rule's directions; this is what
#: the tournament follows for a kind it only saw in a canary, and beside the seed's own moves.
DIRECTIONS: dict[str, dict[str, str]] = {
    "startup_free_memory_below_utilization": {"gpu_memory_utilization": "decrease"},
    "no_kv_cache_memory": {"gpu_memory_utilization": "increase", "max_num_seqs": "decrease",
                           "max_num_batched_tokens": "decrease"},
    "max_model_len_exceeds_kv_cache": {"max_model_len": "decrease", "gpu_memory_utilization": "increase"},
    "cuda_oom_allocation": {"max_num_seqs": "decrease", "gpu_memory_utilization": "decrease"},
    "cuda_graph_oom": {"enforce_eager": "enable", "gpu_memory_utilization": "decrease"},
    "batched_tokens_below_model_len": {"max_num_batched_tokens": "increase", "max_model_len": "decrease"},
    "preemption_storm": {"max_num_seqs": "decrease", "gpu_memory_utilization": "increase"},
    "kv_cache_pressure": {"max_num_seqs": "decrease", "gpu_memory_utilization": "increase"},
    "queue_growth": {"max_num_seqs": "increase"},
    "requests_rejected": {"max_model_len": "increase"},
    "cotenant_oom": {"gpu_memory_utilization": "decrease"},
}

#: failures of a KV cache too small (or too full): the ones an explicit KV size makes
#: utilization powerless against. Utilization still sizes the startup request and the
#: activation budget, so a free-memory or CUDA OOM failure keeps it
KV_SIZED = frozenset({"no_kv_cache_memory", "max_model_len_exceeds_kv_cache", "preemption_storm",
                      "kv_cache_pressure"})

KV_FLAGS = ("--kv-cache-memory-bytes", "--kv_cache_memory_bytes")
KV_ENV = "VLLM_CPU_KVCACHE_SPACE"


def explicit_kv_size(commands: Iterable[list[str]], env: dict[str, str], config_keys: dict) -> str:
    """Where the deployment sets its KV cache size explicitly, in words; "" when it does not.

    `commands`: the deployment's launch templates (canary and production); `env`: the
    environment the deployment gives vLLM; `config_keys`: its serving config's keys."""
    for command in commands:
        for i, arg in enumerate(command):
            for flag in KV_FLAGS:
                if arg == flag and i + 1 < len(command):
                    return f"{flag} {command[i + 1]} in the deployment's command"
                if arg.startswith(flag + "="):
                    return f"{arg} in the deployment's command"
    # vLLM reads the variable whenever it is set and not empty (platforms/cpu.py)
    if env.get(KV_ENV, "") != "":
        return f"{KV_ENV}={env[KV_ENV]} in the deployment's environment"
    for key in ("kv_cache_memory_bytes", "kv-cache-memory-bytes"):
        if config_keys.get(key) not in (None, 0, ""):
            return f"kv_cache_memory_bytes={config_keys[key]} in the deployment's serving config"
    return ""


def powerless(kinds: Iterable[str], explicit_kv: str) -> dict[str, str]:
    """Actuator -> why it cannot help with these failure kinds."""
    if explicit_kv and any(kind in KV_SIZED for kind in kinds):
        return {"gpu_memory_utilization": f"gpu_memory_utilization cannot change the KV cache size, set "
                                          f"explicitly by {explicit_kv}"}
    return {}


def held(lost: dict[str, str]) -> str:
    """What holds each lost actuator still, as the tail of a reason ("; why" each)."""
    return "".join(f"; {why}" for why in lost.values())


def sign(way: str) -> int:
    return 1 if way in ("increase", "enable") else -1


def directions_of(current: ServingConfig, seed: dict, kinds: Iterable[str],
                  finding: dict[str, str] | None = None) -> dict[str, int]:
    """name -> +1/-1: the seed's own moves first, then the finding's directions, then each
    kind's; an actuator keeps the first direction it is given (conflicts go to the earliest)."""
    out: dict[str, int] = {}
    for name, value in seed.items():
        now = getattr(current, name, None)
        if name in TUNABLE and None not in (value, now) and value != now:
            out[name] = 1 if value > now else -1
    for named in [finding or {}] + [DIRECTIONS.get(kind, {}) for kind in kinds]:
        for name, way in named.items():
            if name in TUNABLE:
                out.setdefault(name, sign(way))
    return out


def _moves(name: str, way: int, current: ServingConfig, bounds: ActuatorBounds) -> list:
    """Values of `name` beyond `current`'s in direction `way`, inside the bounds, nearest first."""
    now = getattr(current, name)
    if name == "enforce_eager":
        allowed = bounds.enforce_eager_allowed or current.enforce_eager
        return [way > 0] if allowed and now != (way > 0) else []
    if now is None or name not in bounds.numeric():  # an actuator unset, or not handed to selfheal
        return []
    grid = bounds.numeric()[name].grid()
    beyond = [v for v in grid if (v - now) * way > 0]
    return sorted(beyond, key=lambda v: abs(v - now))


def distance(a: ServingConfig, b: ServingConfig, bounds: ActuatorBounds) -> float:
    """How far apart two configs are, in fractions of each actuator's range (a flip of
    enforce_eager counts as a whole range: it costs throughput on every request)."""
    total = 0.0
    numeric = bounds.numeric()
    for name, (x, y) in a.diff(b).items():
        if name == "enforce_eager" or None in (x, y) or name not in numeric:
            total += 1.0
        else:
            span = numeric[name].max - numeric[name].min
            total += abs(x - y) / span if span > 0 else 1.0
    return total


def order_key(config: ServingConfig, anchor: ServingConfig, current: ServingConfig, bounds: ActuatorBounds) -> tuple:
    """Nearest to `anchor` first, then fewest changes from production, then TUNABLE's order
    of the changed actuators and their values: a total order that never reads the JSON."""
    changed = current.diff(config)
    return (round(distance(anchor, config, bounds), 12), len(changed),
            tuple(TUNABLE.index(n) for n in changed),
            tuple((getattr(config, n) is None, float(getattr(config, n) or 0)) for n in TUNABLE))


#: a failure as the search reads it: the config that failed, and the ways its failure names
Failure = tuple[ServingConfig, dict[str, int]]


def beyond(config: ServingConfig, failure: Failure) -> bool:
    """`config` follows this failure: it moves no named actuator against the way the failure
    names (measured from the config that failed), and at least one further along it. A failure
    that names no way constrains nothing (the config itself is excluded as tried)."""
    failed, ways = failure
    if not ways:
        return True
    further = False
    for name, way in ways.items():
        if None in (getattr(config, name), getattr(failed, name)):
            continue  # an unset kv_cache_memory_bytes has no side to move to
        step = (getattr(config, name) - getattr(failed, name)) * way
        if step < 0:
            return False
        further = further or step > 0
    return further


def directed(current: ServingConfig, anchor: ServingConfig, failures: list[Failure], bounds: ActuatorBounds,
             max_changes: int, skip: Callable[[ServingConfig], bool] | None = None,
             limit: int = 20_000) -> list[ServingConfig]:
    """Configs that change 1..max_changes of the actuators the failures name (production's
    failure first), each following every failure (`beyond`), nearest to `anchor` first. At
    most `limit` are made: each actuator's values are taken nearest production first."""
    numeric = bounds.numeric()
    names = [n for n in TUNABLE if any(n in ways for _, ways in failures) and getattr(current, n) is not None
             and (n in numeric or n == "enforce_eager")]
    values = {}
    for name in names:
        grid = [False, True] if name == "enforce_eager" else numeric[name].grid()
        if name == "enforce_eager" and not (bounds.enforce_eager_allowed or current.enforce_eager):
            grid = []
        now = getattr(current, name)
        ok = [v for v in grid if v != now and all(getattr(f, name) is None or (v - getattr(f, name)) * w.get(name, 0) >= 0
                                                  for f, w in failures)]
        values[name] = sorted(ok, key=lambda v: abs(v - now))
    out: list[ServingConfig] = []
    for k in range(1, max_changes + 1):
        for combo in itertools.combinations(names, k):
            for picked in itertools.product(*(values[n] for n in combo)):
                if len(out) >= limit:
                    break
                config = current.changed(**dict(zip(combo, picked)))
                if all(beyond(config, f) for f in failures) and not (skip is not None and skip(config)):
                    out.append(config)
    out.sort(key=lambda c: order_key(c, anchor, current, bounds))
    return out


def ways_of(kind: str, seed: dict, current: ServingConfig, lost: dict[str, str],
            finding: dict[str, str] | None = None) -> dict[str, int]:
    """The ways one failure names, less the powerless actuators."""
    return {n: w for n, w in directions_of(current, seed, [kind], finding).items() if n not in lost}


def stuck(current: ServingConfig, ways: dict[str, int], bounds: ActuatorBounds, lost: dict[str, str]) -> str:
    """Why no actuator can move the way the failure names, one clause per actuator."""
    parts = list(lost.values())
    for name in TUNABLE:
        if name in ways and name not in lost and not _moves(name, ways[name], current, bounds):
            way = "increase" if ways[name] > 0 else "decrease"
            parts.append(f"{name} cannot {way} from {getattr(current, name)} inside the bounds")
    return "; ".join(parts)


def describe(config: ServingConfig, current: ServingConfig) -> str:
    return " with ".join(f"{name}={new:g}" if isinstance(new, (int, float)) and not isinstance(new, bool)
                         else f"{name}={str(new).lower()}"
                         for name, (_, new) in current.diff(config).items()) or "production's config"


def anchored(current: ServingConfig, fix: dict, ways: dict[str, int], bounds: ActuatorBounds,
             lost: dict[str, str]) -> tuple[ServingConfig, set[str]]:
    """The fix taken as far as the bounds let it go (snapped toward production), and the
    actuators whose target lies beyond the bounds ("short": the finding says not far enough)."""
    values, short = {}, set()
    numeric = bounds.numeric()
    for name, target in fix.items():
        if name not in numeric or name in lost or name not in ways:
            continue
        actuator, now = numeric[name], getattr(current, name)
        if now is None or target is None:
            continue
        inside = min(max(target, actuator.min), actuator.max)
        value = actuator.floor(inside) if ways[name] < 0 else actuator.ceil(inside)
        if not actuator.contains(value):
            value = actuator.ceil(inside) if ways[name] < 0 else actuator.floor(inside)
        if inside != target:
            short.add(name)
        if (value - now) * ways[name] > 0:
            values[name] = value
    return current.changed(**values), short


def inside_bounds(current: ServingConfig, fix: dict, finding_ways: dict[str, str], kind: str,
                  bounds: ActuatorBounds, max_changes: int, predict: Callable, lost: dict[str, str]
                  ) -> tuple[dict | None, str]:
    """A failure whose seed fix cannot run inside the bounds: search inside them, or escalate.

    Returns (seed, why): seed None escalates; {} lets the tournament search by prediction;
    otherwise the changes of the first config to try. `predict(config)` is the deployment's
    predictor (a Prediction); where it cannot say (passes None), the finding is followed."""
    ways = {n: w for n, w in directions_of(current, fix, [], finding_ways).items() if n not in lost}
    anchor, short = anchored(current, fix, ways, bounds, lost)
    alternatives = [anchor] if anchor != current else []
    for name in TUNABLE:
        if name not in ways or name in short:
            continue
        moves = _moves(name, ways[name], current, bounds)
        if not moves:
            continue
        alternatives.append(current.changed(**{name: moves[-1]}))
        with_anchor = anchor.changed(**{name: moves[-1]})
        if anchor != current and len(current.diff(with_anchor)) <= max_changes:
            alternatives.append(with_anchor)
    alternatives = list(dict.fromkeys(alternatives))
    predicted = [(config, predict(config)) for config in alternatives]
    if all(p.passes is None for _, p in predicted):
        # no prediction: production failed, and the finding says the fix cut short by the bounds would too
        failures = [(current, ways)] + ([(anchor, ways)] if short and anchor != current else [])
        pool = directed(current, anchor, failures, bounds, max_changes)
        if not pool:
            why = stuck(anchor, {n: w for n, w in ways.items() if n not in short}, bounds, lost)
            return None, "nothing else the finding names can move inside the bounds" + (f": {why}" if why else "")
        return ({n: new for n, (_, new) in current.diff(pool[0]).items()},
                f"no prediction: following the finding inside the bounds, nearest first ({len(pool)} configurations)")
    working = [config for config, p in predicted if p.passes]
    if working:
        return {}, f"{describe(working[0], current)} is predicted to work: the tournament searches inside the bounds"
    lines = [f"{describe(c, current)} predicted {p.failure_kind or 'to fail'}" for c, p in predicted]
    names = [n for n in relevant_actuators([kind]) if n not in lost]
    around = [c for c in neighbourhood(current, names, bounds, max_changes) if c not in set(alternatives)]
    for config in around:
        if predict(config).passes is not False:
            return {}, f"{describe(config, current)} is predicted to work: the tournament searches inside the bounds"
    lost_text = held(lost)
    return None, (f"nothing inside the bounds is predicted to work: {'; '.join(lines) or 'no alternative named'}; "
                  f"nor any of {len(around)} other configurations of {', '.join(names)}{lost_text}")


def deployment_kv_size(edges) -> str:
    """explicit_kv_size of a deployment (handlers.ports.DeploymentEdges): its canary and
    production commands, the environment it gives vLLM, its configured serving keys and config."""
    s = edges.settings
    keys = dict(s.current)
    keys.setdefault("kv_cache_memory_bytes", getattr(edges.current, "kv_cache_memory_bytes", None))
    return explicit_kv_size([list(s.command), list(s.serve_command)], dict(s.env), keys)
