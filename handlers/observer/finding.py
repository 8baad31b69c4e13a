"""One hit made a finding: the kind and fix of the phase it came in (a rule's `refine`), the numbers
it reads from context lines, its seed fix (fixes.py) and what its confidence says in its note.
interpretation.py decides which hits become findings and when; this is how each is made.
"""
from __future__ import annotations

from collections.abc import Callable

from selfheal.handlers.observer.fixes import FixProgram
from selfheal.handlers.observer.hits import Hit
from selfheal.schemas.events import TOLD_ONLY, Finding

__all__ = ["make_finding", "opener_text"]


def opener_text(opener: Hit) -> str:
    """A piece of the line that opened a region, to find it among the log's last lines: its
    evidence is the line itself, or the line clipped around the match ("…" where it was cut)."""
    line = opener.evidence[0] if opener.evidence else ""
    return max(line.split("…"), key=len).strip()


def make_finding(hit: Hit, context, regions, fix_of: Callable[[FixProgram, dict, dict], tuple[dict, str] | None],
                 confidence: str = "stated") -> tuple[int, Finding] | None:
    """(priority, finding) of `hit` given the context values and open regions at its line, or None
    where its fix program gives nothing for these numbers; `fix_of` runs a fix program."""
    rule = hit.matcher.rule
    # a rule's note tells the sustained symptom ("refused again and again"), which one line is not
    kind, program, direction, notes = (rule.kind, hit.matcher.program, rule.direction,
                                       [rule.note if confidence != "unsustained" else ""])
    priority = rule.priority
    support: list[Hit] = []
    for ref, ref_program in zip(rule.refine, hit.matcher.refine_programs):
        if ref.when in regions:
            opener = regions[ref.when]
            kind, program, direction, priority = ref.kind, ref_program, ref.direction, ref.priority
            notes.append(f"{ref.note} (line {opener.line})")
            support.append(opener)
            break
    numbers = dict(hit.numbers)
    for key in rule.uses:
        if key not in numbers and key in context:
            value, source = context[key]
            numbers[key] = value
            support.append(source)
            notes.append(f"{key} from line {source.line}")
    made = fix_of(program, numbers, hit.groups)
    if made is None:
        return None
    fix, fix_note = made
    notes.insert(0, fix_note)
    if confidence != "stated":
        notes.append(f"inferred from the raise site at line {hit.line}: the message itself was cut off"
                     if hit.site and confidence == "inferred" else _CONFIDENCE_NOTES[confidence])
    evidence = list(hit.evidence)
    for s in sorted(set(support), key=lambda h: h.key):
        evidence.extend(x for x in s.evidence if x not in evidence)
    # a log cut short, or a symptom seen too seldom, shows no failure yet: what it would be is
    # only told (the note), never tuned
    if confidence in TOLD_ONLY:
        notes[0] = f"what would be tried: {notes[0]} {_value_list(fix)}".rstrip() if fix else notes[0]
        fix = {}
    action = "tune" if fix else "alert"
    finding = Finding(kind=kind, rule=rule.id, rule_version=rule.version, numbers=numbers,
                      fix_direction=dict(direction), fix=fix, action=action, confidence=confidence,
                      evidence=evidence, line=hit.line, note="; ".join(n for n in notes if n))
    return priority, finding


def _value_list(fix: dict) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in fix.items()) + ")"


_CONFIDENCE_NOTES = {
    "inferred": "inferred from vLLM's accounting, not stated by an error",
    "truncated": "the log ends here without the error: lower confidence, alert only",
    "unsustained": "seen fewer times than a sustained symptom needs: lower confidence, alert only",
}
