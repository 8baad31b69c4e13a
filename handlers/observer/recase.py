"""A short paste that says vLLM's words in other letter case, read with vLLM's case again.

People retype errors from screenshots, quote them in lower-case prose ("the error no available
memory for the cache blocks during allocation"), or shout them in a title. vLLM prints its
messages in one case, and the rules match that case: matching every rule case-insensitively
would cost every long log a slower scan for what only short pastes need.

So where a short text shows no failure, the literal phrases of the rules' own patterns (runs of
plain characters in each pattern, at least MIN_PHRASE long) are looked for case-insensitively,
and each one found in another case gets the pattern's case back, letter by letter (blanks and
line ends are kept, so line numbers stay). The text is then read again. Nothing here lists
messages: the phrases come from whichever rule set is reading.
"""
from __future__ import annotations

import difflib
import re
from typing import Iterable

try:  # Python 3.11 keeps the parser under its old name too; 3.13 only as re._parser
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

#: phrases shorter than this are words that prose holds in any case ("memory", "cache")
MIN_PHRASE = 16
#: texts longer than this are logs, not pastes: they are not read a second time
RECASE_AT_MOST = 256 << 10
_PLACEHOLDER = re.compile(r"\{\w+\}")


def _runs(items, out: list[str]) -> None:
    """Collect the maximal runs of literal characters of a parsed pattern into `out`."""
    run: list[str] = []
    for op, arg in items:
        if op is sre_parse.LITERAL:
            run.append(chr(arg))
            continue
        if run:
            out.append("".join(run))
            run = []
        if op is sre_parse.SUBPATTERN:
            _runs(arg[-1], out)
        elif op is sre_parse.BRANCH:
            for branch in arg[1]:
                _runs(branch, out)
        elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT):
            _runs(arg[2], out)
    if run:
        out.append("".join(run))


def phrases(patterns: Iterable[str]) -> tuple[tuple[re.Pattern, str], ...]:
    """(case-insensitive regex, the phrase in the rule's case) for every literal phrase of
    `patterns` worth recasing; blanks in a phrase match any run of blanks or a line end."""
    found: dict[str, None] = {}
    for pattern in patterns:
        try:
            parsed = sre_parse.parse(_PLACEHOLDER.sub("(?:x)", pattern))  # a number: no phrase goes through it
        except re.error:
            continue
        runs: list[str] = []
        _runs(list(parsed), runs)
        for run in runs:
            run = run.strip()
            if len(run) >= MIN_PHRASE and run.lower() != run and sum(c.isalpha() for c in run) >= MIN_PHRASE // 2:
                found[run] = None
    out = []
    for run in found:
        regex = r"\s+".join(re.escape(word) for word in run.split())
        out.append((re.compile(regex, re.IGNORECASE), run))
    return tuple(out)


def _letters_from(canonical: str):
    letters = [c for c in canonical if c.isalpha()]

    def recase(m: re.Match) -> str:
        given = m.group()
        it = iter(letters)
        return "".join(next(it, c) if c.isalpha() else c for c in given)
    return recase


def recased(text: str, found: tuple[tuple[re.Pattern, str], ...]) -> str:
    """`text` with every phrase of `found` it holds in another case in the phrase's case."""
    if len(text) > RECASE_AT_MOST:
        return text
    lowered = text.lower()
    for regex, canonical in found:
        if canonical.lower().split()[0] in lowered:
            text = regex.sub(lambda m, f=_letters_from(canonical): f(m) if m.group() != canonical else m.group(), text)
    return text


# -- respelling --------------------------------------------------------------------------------
#: a text this long or shorter may be respelled: a retyped or OCR'd paste, not a log
RESPELL_AT_MOST = 16 << 10
#: how alike a stretch of a line must be to a phrase to be taken for it (difflib's ratio)
RESPELL_RATIO = 0.9
#: and at most one letter in this many of the phrase may differ (a slip, not another sentence)
RESPELL_CHARS = 25
_WORD = re.compile(r"[A-Za-z]{4,}")
_DIGITS = re.compile(r"\D")


def respelled(text: str, found: tuple[tuple[re.Pattern, str], ...]) -> str:
    """`text` with each stretch of a line that reads as one of the phrases of `found` with a
    letter or two wrong ("max sew len", "capacty" typed again, an OCR's "1s free") replaced by
    the phrase: a paste retyped from a screenshot says vLLM's words with the slips of a hand or
    an OCR. Only the phrases' own letters change; their numbers are never part of a phrase."""
    if len(text) > RESPELL_AT_MOST:
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if len(line) > 4000 or not line.strip():
            continue
        lower = line.lower()
        held = None  # the spans that already read as a phrase, found once a stretch is alike
        for _, canonical in found:
            words = _WORD.findall(canonical.lower())
            if not words or canonical in line or sum(w in lower for w in words) * 2 < len(words):
                continue
            span = _alike_span(lower, canonical.lower())
            if span is None:
                continue
            if held is None:
                held = [m.span() for regex, _ in found for m in regex.finditer(line)]
            # what already reads as a phrase is never respelled into another ("GPU" is one
            # letter from "CPU")
            if not any(a < span[1] and span[0] < b for a, b in held):
                a, b = span
                line = line[:a] + canonical + line[b:]
                lower, held = line.lower(), None
        lines[i] = line
    return "\n".join(lines)


def _alike_span(line: str, phrase: str) -> tuple[int, int] | None:
    """Where in `line` a stretch reads as `phrase` (difflib's ratio at least RESPELL_RATIO, and
    about its length), or None."""
    blocks = [b for b in difflib.SequenceMatcher(None, line, phrase, autojunk=False).get_matching_blocks() if b.size]
    if not blocks:
        return None
    a, b = blocks[0].a - blocks[0].b, blocks[-1].a + blocks[-1].size + (len(phrase) - blocks[-1].b - blocks[-1].size)
    a, b = max(0, a), min(len(line), b)
    if abs((b - a) - len(phrase)) > len(phrase) // 8:
        return None
    matcher = difflib.SequenceMatcher(None, line[a:b], phrase, autojunk=False)
    # a slip is a letter or two: at most one per RESPELL_CHARS of the phrase differs
    slips = max(b - a, len(phrase)) - sum(block.size for block in matcher.get_matching_blocks())
    alike = matcher.ratio() >= RESPELL_RATIO and slips <= 1 + len(phrase) // RESPELL_CHARS \
        and _DIGITS.sub("", line[a:b]) == _DIGITS.sub("", phrase)  # a number is never respelled
    return (a, b) if alike and line[a:b] != phrase else None
