"""Check one `RuleSpec` and compile it: regexes, number conversions, fix programs.

A malformed rule is refused here, at load time, rather than misreading logs later. Every
refusal is a `RuleProblem` naming the field (`path`) so that a rule file can cite its line.
"""
from __future__ import annotations

import re

from selfheal.handlers.observer.expr import NUM
from selfheal.handlers.observer.fixes import FixProgram, compile_candidates, compile_derived
from selfheal.handlers.observer.fixes import compile_guard
from selfheal.handlers.observer.spec import ALONE, CONFIDENCES, CONTEXT, DIRECTIONS, KINDS, RuleProblem, RuleSpec
from selfheal.handlers.observer.units import SOURCE_UNITS, target_unit
from selfheal.schemas.redaction import begins_unbounded, check_pattern
from selfheal.schemas.serving import TUNABLE

_MACROS = {
    "{num}": r"-?\d+(?:\.\d+)?",
    "{int}": r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)",
    # no trailing \b: a paste that dropped the space at a wrap gives "79.19 GiBof which"
    "{size}": r"-?\d+(?:\.\d+)?\s*(?:bytes|KiB|MiB|GiB|TiB|GB)",
}
_KEY = re.compile(r"[a-z][a-z0-9_]*")
MAX_WINDOW = 32
_QUANTIFIERS = ("?", "*", "+", "{")
MAX_SUSTAIN = 1000


def expand_pattern(source: str) -> str:
    """Apply the pattern conventions of spec.py: spaces outside classes, then macros. A run of
    spaces is one `\\s*`: it means the same, and `\\s*\\s*` only gives the regex engine more
    ways to split a run of whitespace when a match fails (one more power of the length). The
    punctuation pastes lose is optional: a backtick, a comma, a parenthesis, a period that ends
    a sentence (`\\.` before a space, a group's end or the pattern's end)."""
    out: list[str] = []
    escaped = in_class = False
    depth = 0  # inside a {m,n} repeat or a {macro}: a comma there is not text
    for i, ch in enumerate(source):
        after = source[i + 1:i + 2]
        if escaped:
            escaped = False
            ends = after in ("", " ", ")", "'") or source[i + 1:i + 4] == "(?:"  # a sentence, then maybe more
            if ch in ".()" and after not in _QUANTIFIERS and (ch != "." or ends):
                # a paste that lost the period or a parenthesis still matches; a lost ")" only
                # where no word goes on (so "(0.5)" is not read as "(0"), a lost "(" only where no
                # word came before (else a class before it that takes digits, `[^\s()]+\(?\d+`,
                # tries every split of a long number: quadratic on a hostile 5,000-digit one)
                out[-1] = {")": r"(?:\)|(?![\w.]))", "(": r"(?:\(|(?<![\w.]))"}.get(ch, "\\" + ch + "?")
                continue
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch in "{}":
            depth += 1 if ch == "{" else -1
        elif ch in "`," and not depth and after not in _QUANTIFIERS:
            out.append(ch + "?")  # markdown eats backticks; a retyped message drops commas
            continue
        elif ch == " ":
            if not out or out[-1] != r"\s*":
                out.append(r"\s*")
            continue
        out.append(ch)
    expanded = "".join(out)
    for name, regex in _MACROS.items():
        expanded = expanded.replace(name, regex)
    return expanded


class CompiledRule:
    """What the engine needs of one rule, and its canonical content (for the digest)."""

    __slots__ = ("regexes", "numbers", "program", "refine_programs", "canonical")

    def __init__(self, regexes, numbers, program, refine_programs, canonical):
        self.regexes, self.numbers, self.program = regexes, numbers, program
        self.refine_programs, self.canonical = refine_programs, canonical


def compile_rule(rule: RuleSpec) -> CompiledRule:
    try:
        return _compile(rule)
    except RuleProblem as problem:
        problem.rule = rule.id
        raise


def _compile(rule: RuleSpec) -> CompiledRule:
    failure = rule.kind != CONTEXT
    if not failure and (rule.fix or rule.derived or rule.refine or rule.direction or rule.priority):
        raise RuleProblem(("kind",), "a context rule has no fix, derived values, refinements, direction or priority")
    if failure and rule.kind not in KINDS:
        raise RuleProblem(("kind",), f"unknown kind {rule.kind!r} (known: context, {', '.join(KINDS)})")
    if not rule.prefilter:
        raise RuleProblem(("prefilter",), "needs a non-empty pre-filter literal")
    if not rule.patterns:
        raise RuleProblem(("patterns",), "needs at least one pattern")
    if rule.prefilter_next and not all(" " <= c < "\x7f" for c in rule.prefilter_next):
        # one byte each, so that a log kept as bytes tests one byte after the literal
        raise RuleProblem(("prefilter_next",), "prefilter_next holds printable ASCII characters only")
    if not 1 <= rule.window <= MAX_WINDOW:  # a window is joined per candidate record: keep it small
        raise RuleProblem(("window",), f"window must be from 1 to {MAX_WINDOW}")
    if rule.version < 1:
        raise RuleProblem(("version",), "version must be >= 1")
    if rule.confidence not in CONFIDENCES[:2]:
        raise RuleProblem(("confidence",), f"confidence must be 'stated' or 'inferred', got {rule.confidence!r} "
                                           "('truncated' is what a cut_in rule's findings say)")
    if not 1 <= rule.sustain <= MAX_SUSTAIN:
        raise RuleProblem(("sustain",), f"sustain must be from 1 to {MAX_SUSTAIN}")
    if rule.gap < 0 or (rule.gap and rule.sustain == 1):
        raise RuleProblem(("gap",), "gap is the most lines between the matches a `sustain` counts: >= 0, with sustain > 1")
    if rule.alone not in ALONE or (rule.alone != "silent" and rule.sustain == 1):
        raise RuleProblem(("alone",), f"alone is one of {', '.join(ALONE)}, and speaks only for a rule with sustain > 1")
    if rule.cut_in and not re.fullmatch(r"\w+", rule.cut_in):
        raise RuleProblem(("cut_in",), f"cut_in names a region (open:NAME), got {rule.cut_in!r}")
    if rule.within and (failure or not re.fullmatch(r"\w+", rule.within)):
        raise RuleProblem(("within",), f"within names a region (open:NAME), and only a context rule has it, "
                                       f"got {rule.within!r}")
    if not failure and (rule.confidence != "stated" or rule.when or rule.sustain != 1 or rule.gap or rule.cut_in
                        or rule.raise_frame):
        raise RuleProblem(("kind",), "a context rule has no confidence, when, sustain, cut_in or raise_frame")
    if rule.raise_frame and (rule.sustain != 1 or rule.cut_in or rule.window != 1):
        raise RuleProblem(("raise_frame",), "a raise_frame rule reads one frame line: no sustain, cut_in or window")
    regexes = tuple(_regex(p, i) for i, p in enumerate(rule.patterns))
    captures = frozenset(name for r in regexes for name in r.groupindex)
    numbers = []
    for num in rule.numbers:
        at = ("numbers", num.capture)
        if num.unit not in SOURCE_UNITS:
            raise RuleProblem((*at, "unit"), f"numbers.{num.capture}: unknown unit {num.unit!r} "
                                             f"(known: {', '.join(sorted(SOURCE_UNITS))})")
        if num.capture not in captures:
            raise RuleProblem(at, f"numbers.{num.capture}: no pattern defines the capture {num.capture!r} "
                                  f"(defined: {', '.join(sorted(captures)) or 'none'})")
        if not _KEY.fullmatch(num.key):
            raise RuleProblem((*at, "key"), f"numbers.{num.capture}: key {num.key!r} is not a lower-case name")
        if (num.unit not in ("count", "ratio", "percent")) != (target_unit(num.key) in ("GiB", "MiB")):
            raise RuleProblem((*at, "key"), f"numbers.{num.capture}: key {num.key!r} and unit {num.unit!r} disagree "
                                            "(a size needs a key ending in _gib or _mib)")
        if num.unit == "percent" and target_unit(num.key) != "ratio":
            raise RuleProblem((*at, "key"), f"numbers.{num.capture}: a percentage is read to a ratio: its key "
                                            "ends in _utilization")
        numbers.append((num.capture, num.key, num.unit, target_unit(num.key)))
    for i, key in enumerate(rule.uses):
        if not _KEY.fullmatch(key):
            raise RuleProblem(("uses", i), f"uses: {key!r} is not a lower-case name")
    _check_direction(rule.direction, ("direction",))
    for mark in rule.marks:
        if mark not in ("reset", "ready", "initialised") and not re.fullmatch(r"(?:open|close):\w+", mark):
            raise RuleProblem(("marks",), f"unknown mark {mark!r} (reset, ready, initialised, open:NAME, close:NAME)")
    if failure and rule.marks:
        raise RuleProblem(("marks",), "only context rules mark phases")

    names = {key: NUM for _, key, _, _ in numbers} | {key: NUM for key in rule.uses}
    derived = compile_derived(rule.derived, names, captures)
    guard = compile_guard(rule.when, names, captures, ("when",))
    program = FixProgram(derived, compile_candidates(rule.fix, names, captures, ("fix",)), guard)
    refine_programs, refine_canon = [], []
    for i, ref in enumerate(rule.refine):
        at = ("refine", i)
        if ref.kind not in KINDS:
            raise RuleProblem((*at, "kind"), f"refine[{i}]: unknown kind {ref.kind!r}")
        if not re.fullmatch(r"\w+", ref.when):
            raise RuleProblem((*at, "when"), f"refine[{i}]: 'when' names a region (open:NAME), got {ref.when!r}")
        _check_direction(ref.direction, (*at, "direction"))
        cands = compile_candidates(ref.fix, names, captures, (*at, "fix"))
        refine_programs.append(FixProgram(derived, cands, guard))
        refine_canon.append({"when": ref.when, "kind": ref.kind, "priority": ref.priority,
                             "direction": dict(ref.direction), "note": ref.note,
                             "fix": [c.canonical() for c in cands]})
    canonical = {
        "id": rule.id, "version": rule.version, "kind": rule.kind, "prefilter": rule.prefilter,
        "patterns": list(rule.patterns), "numbers": [list(n[:3]) for n in numbers],
        "derived": [[name, e.canonical] for name, e in derived],
        "fix": [c.canonical() for c in program.candidates], "direction": dict(rule.direction),
        "priority": rule.priority, "window": rule.window, "uses": list(rule.uses), "marks": list(rule.marks),
        "refine": refine_canon, "note": rule.note, "versions": rule.versions,
    }
    # fields added later appear only where used: the digest of a rule set without them is unchanged
    for key, value, default in (("confidence", rule.confidence, "stated"), ("sustain", rule.sustain, 1),
                                ("gap", rule.gap, 0), ("alone", rule.alone, "silent"), ("cut_in", rule.cut_in, ""),
                                ("within", rule.within, ""),
                                ("raise_frame", rule.raise_frame, False),
                                ("prefilter_next", rule.prefilter_next, ""), ("retried", rule.retried, False)):
        if value != default:
            canonical[key] = value
    if guard is not None:
        canonical["when"] = guard.canonical
    return CompiledRule(regexes, tuple(numbers), program, tuple(refine_programs), canonical)


def _regex(source: str, i: int) -> re.Pattern:
    """A rule's pattern, compiled; refused when it is not a regex, or when the regex engine
    could take exponential time on it (`check_pattern`: nested or ambiguous unbounded repeats,
    as in `(a+)+` or `(a|aa)+`, in bounded time). What is accepted still runs on bounded text
    only (engine.last_matches)."""
    expanded = expand_pattern(source)
    try:
        re.compile(expanded)
    except re.error as exc:
        near = expanded[max(0, (exc.pos or 0) - 15):(exc.pos or 0) + 15]
        raise RuleProblem(("patterns", i), f"pattern {i + 1}: bad regular expression: {exc.msg} "
                                           f"(near {near!r} of the expanded pattern)") from None
    try:
        regex = check_pattern(expanded)
    except ValueError as exc:
        raise RuleProblem(("patterns", i), f"pattern {i + 1}: {exc}: {source}") from None
    if begins_unbounded(expanded):
        raise RuleProblem(("patterns", i), f"pattern {i + 1} may begin with an unbounded repeat, which the regex engine "
                                           "tries again at every character of a long run (a number of 5,000 digits "
                                           f"took minutes): begin it with a literal, a \\b or a lookbehind: {source}")
    return regex



def _check_direction(direction: dict, path: tuple) -> None:
    for param, way in direction.items():
        if param not in TUNABLE:
            raise RuleProblem((*path, param), f"direction: unknown parameter {param!r}")
        if way not in DIRECTIONS:
            raise RuleProblem((*path, param), f"direction of {param}: {way!r} is not increase, decrease or enable")
        if (way == "enable") != (param == "enforce_eager"):
            raise RuleProblem((*path, param), f"direction of {param}: {way!r} does not suit the parameter")
