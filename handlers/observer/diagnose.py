"""The observer's entry point: log text in, a diagnosis with seed fixes out."""
from __future__ import annotations

import os

from selfheal.handlers.observer.engine import Diagnosis, Finding
from selfheal.handlers.observer.rules import builtin_ruleset
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import TUNABLE, ServingConfig


def diagnose(text: str | bytes | os.PathLike, current: ServingConfig | None = None,
             bounds: ActuatorBounds | None = None, safety_buffer: float = 0.10) -> Diagnosis:
    """Read a vLLM log (any text, its raw bytes, or the path of a log file, read in pieces: bytes
    are read as UTF-8 with U+FFFD for bad bytes) and say which config failure it shows, if any,
    with the built-in rules (`RuleSet.diagnose` says what the arguments mean)."""
    return builtin_ruleset().diagnose(text, current, bounds, safety_buffer)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _describe(f: Finding, indent: str = "  ") -> list[str]:
    # a finding the error did not state says how it knows (inferred, or a log cut short)
    known = "" if f.confidence == "stated" else f", {f.confidence}"
    out = [f"{f.kind} (rule {f.rule} v{f.rule_version}, line {f.line}{known}) -> {f.action}"]
    if f.numbers:
        out.append(indent + "numbers: " + ", ".join(f"{k}={_value(v)}" for k, v in f.numbers.items()))
    ordered = sorted(f.fix_direction, key=lambda p: TUNABLE.index(p) if p in TUNABLE else len(TUNABLE))
    for param in ordered:
        target = f" -> {_value(f.fix[param])}" if param in f.fix else " (alternative)"
        out.append(f"{indent}{f.fix_direction[param]} {param}{target}")
    for param in f.fix:
        if param not in f.fix_direction:
            out.append(f"{indent}set {param} -> {_value(f.fix[param])}")
    if f.note:
        out.append(indent + "why: " + f.note)
    out.append(indent + "evidence:")
    out.extend(f"{indent}  | {line}" for line in f.evidence)
    return out


def _repeats(r) -> str:
    return f"seen {r.count:,} times, lines {r.first_line}-{r.last_line}"


def format_diagnosis(d: Diagnosis) -> str:
    """A readable account for a person: the primary finding, its fix and evidence, then the rest
    (a finding seen more often than listed says how often, at its latest occurrence)."""
    if d.primary is None:
        return "No configuration failure found."
    repeats = {id(d.findings[r.index]): r for r in d.repeated}
    lines = ["Failure: " + _describe(d.primary)[0], *_describe(d.primary)[1:]]
    if id(d.primary) in repeats:
        lines.insert(1, "  " + _repeats(repeats[id(d.primary)]))
    others = [f for f in d.findings if f is not d.primary]
    if others:
        lines.append(f"Also seen ({len(others)}):")
        lines.extend("  - " + _describe(f)[0] + (f" ({_repeats(repeats[id(f)])})" if id(f) in repeats else "")
                     for f in others)
    return "\n".join(lines)
