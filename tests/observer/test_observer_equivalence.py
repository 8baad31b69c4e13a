"""The built-in rules as data behave exactly as the Python rules and fixes they replaced.

samples/golden_python_rules.json holds what the observer said before its rules became TOML
(rules.py + fixes.py at 59feb68): for every text of test_observer_rules.CASES, two copies of
each with numbers mangled (0, -1, 40 digits, nan, 1e400 ...), every sample log and every
healthy line, the whole diagnosis with the default settings, and kind / fix / note under
eight other (config, bounds, buffer) combinations chosen to reach every branch of the old fix
functions. An intended change of a built-in rule is recorded by rewriting the file:

    python tests/observer/test_observer_equivalence.py --rewrite
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from selfheal.handlers.observer import diagnose
from selfheal.handlers.observer.rules import builtin_rule_text, builtin_ruleset, parse_rules
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import ServingConfig

SAMPLES = Path(__file__).parent / "samples"
GOLDEN = SAMPLES / "golden_python_rules.json"
DATA = json.loads(GOLDEN.read_text(encoding="utf-8"))


def _settings(combo: dict) -> dict:
    cur, bnd = combo["current"], combo["bounds"]
    return {"current": None if cur is None else msgspec.convert(cur, ServingConfig),
            "bounds": None if bnd is None else msgspec.convert(bnd, ActuatorBounds),
            "safety_buffer": combo["safety_buffer"]}


COMBOS = [_settings(c) for c in DATA["combos"]]
GOLDEN_RULES = {f["rule"] for c in DATA["cases"] for f in c["diagnosis"]["findings"]}


def _text(case: dict) -> str:
    return case["text"] if "text" in case else (SAMPLES / case["sample"]).read_text(encoding="utf-8")


def _observed(case: dict) -> dict:
    """What the built-in rule set says now, in the golden file's shape."""
    text, ruleset = _text(case), builtin_ruleset()
    out = {k: v for k, v in case.items() if k in ("text", "sample")}
    d = ruleset.diagnose(text, **COMBOS[0])
    # the golden file predates Finding.confidence and the rules that infer a failure from vLLM's
    # accounting: the findings of the rules it knows are compared, as it stored them
    d = msgspec.structs.replace(d, findings=[f for f in d.findings if f.rule in GOLDEN_RULES])
    out["diagnosis"] = msgspec.to_builtins(d)
    for f in [out["diagnosis"]["primary"] or {}, *out["diagnosis"]["findings"]]:
        if f.get("confidence") == "stated":
            del f["confidence"]
    # a primary finding also states the numbers of the error it wraps (engine._with_cause): the
    # golden numbers must all be there, with their values; the rest is what was added since
    golden = case["diagnosis"]["primary"]
    mine = out["diagnosis"]["primary"]
    if golden and mine and golden["numbers"].items() <= mine["numbers"].items():
        for f in [mine, *out["diagnosis"]["findings"]]:
            if f.get("rule") == golden["rule"] and f.get("line") == golden["line"]:
                f["numbers"] = dict(golden["numbers"])
    if "others" in case:
        out["others"] = []
        for combo in COMBOS[1:]:
            d = ruleset.diagnose(text, **combo)
            known = [f for f in d.findings if f.rule in GOLDEN_RULES]
            out["others"].append([known.index(d.primary) if d.primary in known else None,
                                  [[f.rule, f.kind, f.fix, f.note] for f in known]])
    return out


def test_the_golden_file_covers_every_rule_and_many_branches():
    # the rules of the Python observer it replaced; rules added since have cases of their own
    # (test_observer_rules.py, test_source_checks.py, samples/wild)
    assert len(GOLDEN_RULES) >= 15 and GOLDEN_RULES <= {r.id for r in builtin_ruleset().rules if r.kind != "context"}
    notes = {re.sub(r"-?\d[\d.]*", "N", f[3]) for c in DATA["cases"] for _, fs in c.get("others", []) for f in fs}
    assert len(notes) >= 50  # note shapes: the fallbacks and candidates of every rule, eager or not


def test_builtin_rules_equal_the_python_rules_they_replaced():
    mismatched = []
    for case in DATA["cases"]:
        # compared through JSON, as the golden file stores it: floats round-trip exactly
        if json.loads(json.dumps(_observed(case))) != case:
            mismatched.append(case.get("sample") or case["text"][:80])
    assert not mismatched, f"{len(mismatched)} cases differ, e.g. {mismatched[:3]}"


TEXTS = [_text(c) for c in DATA["cases"]]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(TEXTS), min_size=1, max_size=3), st.sampled_from(COMBOS))
def test_every_way_of_loading_the_builtin_rules_diagnoses_alike(texts, combo):
    # diagnose() (the public entry point), the cached built-in set and the built-in rules
    # re-read as one rule file are the same rules: same digest, same diagnoses
    text = "\n".join(texts)
    single = parse_rules(builtin_rule_text(), "builtin as one file")
    assert single.digest == builtin_ruleset().digest
    expected = msgspec.json.encode(diagnose(text, **combo))
    assert msgspec.json.encode(builtin_ruleset().diagnose(text, **combo)) == expected
    assert msgspec.json.encode(single.diagnose(text, **combo)) == expected


def _rewrite() -> None:
    cases = [_observed(c) for c in DATA["cases"]]
    head = json.dumps({k: v for k, v in DATA.items() if k != "cases"}, ensure_ascii=False)[:-1]
    body = ",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases)
    GOLDEN.write_text(head + ',\n"cases": [\n' + body + "\n]}\n", encoding="utf-8")


if __name__ == "__main__" and sys.argv[1:] == ["--rewrite"]:
    _rewrite()
