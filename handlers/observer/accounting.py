"""The memory accounting of a vLLM log's last start attempt, as the observer's rules read it.

The calibrated predictor's facts (handlers/models/calibration.py): every number a context or
failure rule reads in the last start attempt that printed any (an engine (re)start begins a new
attempt, as it does for a diagnosis), under the rules' keys (rules/55_calibration.toml's start
with "cal_"). Numbers only: the predictor is calibrated from these, never from the log's text,
which is sealed and may be forgotten.
"""
from __future__ import annotations

import functools

from selfheal.handlers.observer.endings import tail_of
from selfheal.handlers.observer.engine import Interpretation, read
from selfheal.handlers.observer.rules import builtin_ruleset
from selfheal.schemas.actuators import ActuatorBounds

#: a log that names none of these holds no memory figure, and is not scanned
_MARKS = ("GiB", "KV cache", " GB", "blocks: ")


class _Attempts:
    """An engine sink: the numbers of each start attempt, split at engine (re)starts."""

    def __init__(self) -> None:
        self.attempts: list[dict[str, float]] = [{}]

    def add(self, hit) -> None:
        rule = hit.matcher.rule
        if rule.kind == "context" and "reset" in rule.marks and self.attempts[-1]:
            self.attempts.append({})
        for key, value in hit.numbers.items():
            if value is not None:
                self.attempts[-1][key] = float(value)


@functools.cache
def _ruleset():
    # the built-in rules always: 55_calibration.toml is theirs, whatever rule set is active
    return builtin_ruleset()


def read_start(text: str) -> dict[str, float]:
    """The numbers the last start attempt of a vLLM log printed (context and failure lines
    alike); {} for a log without a memory figure."""
    return _last(read(text, _ruleset().matchers, _Attempts)) if _marked(text) else {}


def _marked(text: str) -> bool:
    return any(mark in text for mark in _MARKS)


def _last(attempts: _Attempts) -> dict[str, float]:
    return dict(next((a for a in reversed(attempts.attempts) if a), {}))


class _Both:
    """An engine sink that feeds a diagnosis and the accounting from one scan of the log."""

    def __init__(self, interpretation) -> None:
        self.interpretation, self.attempts = interpretation, _Attempts()

    def add(self, hit) -> None:
        self.interpretation.add(hit)
        self.attempts.add(hit)


def diagnose_and_account(ruleset, text: str, current=None, bounds=None, safety_buffer: float = 0.10):
    """(ruleset.diagnose(text, ...), read_start(text)) in one scan where the rule set holds the
    calibration rules (the built-in one does); a rule set without them is followed by a scan
    with the built-in rules for the accounting alone."""
    if not any(rule.id.startswith("vllm.cal.") for rule in ruleset.rules):
        return ruleset.diagnose(text, current, bounds, safety_buffer), read_start(text)
    made = read(text, ruleset.matchers,
                lambda: _Both(Interpretation(current, bounds or ActuatorBounds(), safety_buffer, ruleset.matchers)))
    return made.interpretation.diagnosis(lambda: tail_of(text)), _last(made.attempts) if _marked(text) else {}
