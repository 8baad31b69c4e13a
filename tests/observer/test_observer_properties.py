"""Properties: never raise on any text, every proposed value is finite, wrapping does not matter."""
from __future__ import annotations

import itertools
import math
import re

import msgspec
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_observer_healthy import HEALTHY
from test_observer_rules import CASES

from selfheal.handlers.observer import diagnose, format_diagnosis
from selfheal.handlers.observer.rules import builtin_ruleset
from selfheal.handlers.observer.engine import scan
from selfheal.handlers.observer.logtext import LogText
from selfheal.handlers.observer.paste import _is_newest_first
from selfheal.schemas.actuators import Actuator, ActuatorBounds
from selfheal.schemas.serving import ServingConfig

MATCHERS = builtin_ruleset().matchers  # the built-in rules, compiled once

MESSAGES = [c[1] for c in CASES]
FRAGMENTS = MESSAGES + HEALTHY + ["\n", "\r\n", "\r", "\x1b[31m", " ", "GiB", "(", ")", "-", ".", ",", "0", "1e308",
                                  "(EngineCore_DP0 pid=1) ERROR 11-24 06:55:12 [core.py:1] ", "ValueError: ",
                                  "Traceback (most recent call last):", '  File "x.py", line 1, in capture_model']
CONFIGS = st.one_of(st.none(), st.builds(
    ServingConfig,
    gpu_memory_utilization=st.floats(min_value=-2, max_value=2, allow_nan=False),
    max_model_len=st.integers(min_value=-10, max_value=10**7),
    max_num_seqs=st.integers(min_value=-10, max_value=10**5),
    enforce_eager=st.booleans(),
))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(d) -> None:
    for f in d.findings:
        for value in f.fix.values():
            assert isinstance(value, bool) or math.isfinite(value)
        for value in f.numbers.values():
            assert math.isfinite(value)
        assert f.action == ("tune" if f.fix else "alert")
        assert all(isinstance(x, str) for x in f.evidence) and f.line >= 1
    assert (d.primary is None) == (not d.findings)
    msgspec.json.encode(d)  # storable as an event
    format_diagnosis(d)


@SETTINGS
@given(st.text())
def test_never_raises_on_random_text(text):
    _check(diagnose(text))


@SETTINGS
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=20), max_size=12), CONFIGS,
       st.floats(min_value=0, max_value=0.9))
def test_never_raises_on_mangled_vllm_text(parts, current, buffer):
    _check(diagnose("".join(parts), current=current, safety_buffer=buffer))


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@SETTINGS
@given(st.sampled_from(MESSAGES), st.lists(st.sampled_from(
    ["0", "0.0", "-1", "1" * 40, "99999999999999999999", "0.000001", "1e400", "nan"]), min_size=1, max_size=8),
    CONFIGS)
def test_fixes_stay_finite_with_extreme_numbers(message, replacements, current):
    values = itertools.cycle(replacements)
    text = _NUMBER.sub(lambda m: next(values), message)
    _check(diagnose(text, current=current))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MESSAGES), st.integers(min_value=40, max_value=160), st.booleans())
def test_hard_wrapping_changes_nothing_but_evidence(message, width, prefixed):
    prefix = "(EngineCore_DP0 pid=5123) ERROR 11-24 06:55:12 [core.py:708] " if prefixed else ""
    line = prefix + message.replace("\n", "\n" + prefix)
    folded = "\n".join(
        "\n".join(x[i:i + width] for i in range(0, len(x), width)) for x in line.split("\n"))
    whole, wrapped = diagnose(line, current=ServingConfig()), diagnose(folded, current=ServingConfig())
    key = lambda d: [(f.kind, f.numbers, f.fix, f.fix_direction) for f in d.findings]  # noqa: E731
    assert key(wrapped) == key(whole)


# lines that are healthy however often they come: a refused prompt is healthy alone, but three
# of them in a row are a runtime symptom of their own (a `sustain` rule), which may outrank
STILL_HEALTHY = [h for h in HEALTHY if not any(hit.matcher.rule.sustain > 1 for hit in scan(LogText(h), MATCHERS))]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(MESSAGES), st.lists(st.sampled_from(STILL_HEALTHY), max_size=5),
       st.lists(st.sampled_from(STILL_HEALTHY), max_size=5))
def test_healthy_lines_around_a_failure_do_not_change_it(message, before, after):
    # in the order a log is written: lines whose times mostly go back are read newest first (paste.py)
    assume(not _is_newest_first("\n".join(before + [message] + after)))
    assume(not _is_newest_first("\n".join([message] + after)))
    alone = diagnose(message, current=ServingConfig())
    mixed = diagnose("\n".join(before + [message] + after), current=ServingConfig())
    # healthy lines BEFORE a failure may legitimately inform it: a capture phase makes an OOM a
    # CUDA-graph OOM, a stated utilization or KV budget feeds the fix. Lines after never matter.
    informative = [h for h in scan(LogText("\n".join(before)), MATCHERS) if h.numbers or h.matcher.rule.marks]
    if not informative:
        assert _key(mixed.primary) == _key(alone.primary, shift=len(before))
    else:
        assert mixed.primary.kind in (alone.primary.kind, "cuda_graph_oom")
    after_only = diagnose("\n".join([message] + after), current=ServingConfig())
    assert after_only.primary == alone.primary


def _key(f, shift=0):
    # everything but the note, which cites line numbers of the context it used
    return (f.kind, f.rule, f.numbers, f.fix, f.fix_direction, f.action, f.evidence, f.line + shift)


def test_bounds_with_any_grid_keep_values_finite():
    odd = ActuatorBounds(gpu_memory_utilization=Actuator(name="gpu_memory_utilization", min=0.0, max=1.0,
                                                         step=0.001))
    for message in MESSAGES:
        _check(diagnose(message, current=ServingConfig(), bounds=odd, safety_buffer=0.0))
