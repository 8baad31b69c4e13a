"""Rule files (TOML) -> RuleSet, with one precise message for the first error.

A file holds an optional ``[ruleset]`` header (``version``, ``description``) and one or more
``[[rule]]`` tables; see rules/README.md for the format and the built-in files for examples.
Every error is a `RuleFileError` naming the file, the rule (its id, else its 1-based index),
the line and the problem. TOML syntax errors carry their line; for the rest the line is found
in the text: the offending key within the rule's table, else the rule's ``id =`` line.
"""
from __future__ import annotations

import functools
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from selfheal.handlers.observer.compiler import expand_pattern
from selfheal.handlers.observer.ruleset import RuleSet
from selfheal.handlers.observer.spec import FixSpec, Number, Refinement, RuleProblem, RuleSpec
from selfheal.schemas.serving import TUNABLE

BUILTIN_PACKAGE = "selfheal.handlers.observer.rules"


class RuleFileError(ValueError):
    def __init__(self, source: str, line: int, rule: str | None, problem: str, index: int | None = None):
        self.source, self.line, self.rule, self.problem, self.index = source, line, rule, problem, index
        super().__init__(f"{source}:{line}: " + (f"rule {rule}: " if rule else "") + problem)


class _Problem(Exception):
    def __init__(self, path: list, problem: str):
        self.path, self.problem = path, problem


class _Header(msgspec.Struct, forbid_unknown_fields=True):
    version: str = ""
    description: str = ""


class _Refine(msgspec.Struct, forbid_unknown_fields=True):
    when: str
    kind: str
    priority: int
    direction: dict[str, str] = {}
    note: str = ""
    fix: Any = ()


class _Rule(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    kind: str
    prefilter: str
    patterns: list[str | list[str]]
    version: int = 1
    numbers: dict[str, Any] = {}
    derived: dict[str, str] = {}
    fix: Any = ()
    direction: dict[str, str] = {}
    priority: int = 0
    window: int = 1
    uses: list[str] = []
    marks: list[str] = []
    refine: list[Any] = []
    note: str = ""
    versions: str = ""
    confidence: str = "stated"
    when: str = ""
    sustain: int = 1
    gap: int = 0
    alone: str = "silent"
    cut_in: str = ""
    within: str = ""
    raise_frame: bool = False
    prefilter_next: str = ""
    retried: bool = False
    cut_after: int = 0  # a pattern of pieces may stop at its record's end after this many (_pieces)
    fix_like: str = ""  # resolved by _read: the derived values and fixes of a rule above it


_FIX_KEYS = ("when", "note", "action")


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """A RuleSet from the text of a rule file; `source` names it in messages."""
    header, specs = _read(text, source)
    return _build(specs, header, text, source)


def load_rule_file(path: str | Path) -> RuleSet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RuleFileError(str(path), 1, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_rules(text, str(path))


@functools.cache
def builtin_ruleset() -> RuleSet:
    """The bundled rule files (rules/*.toml, in name order), read and compiled once."""
    specs, versions = [], set()
    for entry in sorted(resources.files(BUILTIN_PACKAGE).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            text, source = entry.read_text(encoding="utf-8"), f"{BUILTIN_PACKAGE}/{entry.name}"
            header, file_specs = _read(text, source)
            _build(file_specs, header, text, source)  # each file is valid on its own
            specs.extend(file_specs)
            versions.add(header.version)
    if len(versions) != 1:
        raise RuleFileError(BUILTIN_PACKAGE, 1, None, f"the built-in files disagree on the version: {sorted(versions)}")
    return RuleSet(specs, versions.pop(), "the built-in vLLM rules", BUILTIN_PACKAGE)


def builtin_rule_text() -> str:
    """The bundled files as ONE rule file (one header, every rule, comments kept): the starting
    point for a candidate rule set. It parses to the built-in rules' digest."""
    builtin = builtin_ruleset()
    parts = [f'[ruleset]\nversion = "{builtin.version}"\ndescription = "{builtin.description}"\n']
    for entry in sorted(resources.files(BUILTIN_PACKAGE).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            # each file's own header is a [ruleset] table up to the first blank line
            body = re.sub(r"(?ms)^\[ruleset\]\n.*?^\s*$", "", entry.read_text(encoding="utf-8"), count=1)
            parts.append(f"\n# ---- {entry.name} ----\n{body}")
    return "".join(parts)


def _read(text: str, source: str) -> tuple[_Header, list[RuleSpec]]:
    where = _Lines(text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(m.group(1)) if m else 1
        index = where.rule_at(line)
        raise RuleFileError(source, line, where.label(index), "TOML syntax: " + str(exc),
                            None if index is None else index + 1) from None
    try:
        unknown = [k for k in data if k not in ("ruleset", "rule")]
        if unknown:
            raise _Problem([unknown[0]], f"unknown key {unknown[0]!r} (a file has [ruleset] and [[rule]] tables)")
        header = _convert(data.get("ruleset", {}), _Header, ["ruleset"])
        tables = data.get("rule", [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise _Problem(["rule"], "'rule' must be an array of tables ([[rule]])")
        if not tables:
            raise _Problem([], "the file defines no rules ([[rule]] tables)")
    except _Problem as p:
        raise RuleFileError(source, where.find(None, p.path), None, p.problem) from None
    specs, first_line = [], {}
    for i, table in enumerate(tables):
        try:
            spec = _rule(table)
        except _Problem as p:
            raise RuleFileError(source, where.find(i, p.path), where.label(i, table.get("id")), p.problem,
                                i + 1) from None
        if spec.id in first_line:
            raise RuleFileError(source, where.find(i, ["id"]), where.label(i, spec.id),
                                f"duplicate rule id {spec.id!r} (first defined at line {first_line[spec.id]})", i + 1)
        like = table.get("fix_like")
        if like:  # one seed fix for several wordings: written once, copied here (the digest sees the copy)
            base = next((s for s in specs if s.id == like), None)
            problem = (f"fix_like names {like!r}, which is not a rule above it in this file" if base is None else
                       "fix_like takes another rule's derived values and fixes: give neither here"
                       if spec.fix or spec.derived else "")
            if problem:
                raise RuleFileError(source, where.find(i, ["fix_like"]), where.label(i, spec.id), problem, i + 1)
            # its refinements too, unless it has its own: a wording of the same failure is re-read
            # by the same phase (an OOM's head cut off is still raised during capture)
            spec = msgspec.structs.replace(spec, derived=base.derived, fix=base.fix, refine=spec.refine or base.refine)
        first_line[spec.id] = where.find(i, ["id"])
        specs.append(spec)
    return header, specs


def _build(specs: list[RuleSpec], header: _Header, text: str, source: str) -> RuleSet:
    try:
        return RuleSet(specs, header.version, header.description, source)
    except RuleProblem as p:
        i = next(k for k, s in enumerate(specs) if s.id == p.rule)
        where = _Lines(text)
        raise RuleFileError(source, where.find(i, list(p.path)), where.label(i, p.rule), p.problem, i + 1) from None


#: what is left of a message cut at the end of its record (a viewer that cuts long lines, an
#: issue title at GitHub's limit, a search index's excerpt): a piece of the next words, then the
#: end; no whole sentence in it (a message that goes on past a sentence's end was not cut there)
CUT_TAIL = r"(?![^\n]{0,120}?\.\s)[^\n]{0,120}(?=\n|\Z)"


def _pieces(pieces: list[str], cut_after: int) -> str:
    """A pattern written as pieces, joined; with `cut_after` = k, it may stop at the end of its
    record anywhere after its first k pieces: "a(?:b(?:c|CUT)|CUT)" for [a, b, c] and k = 1, so
    that a message whose head names the failure is read when a cut took its tail (the numbers
    that were in the tail are then missing, and the fix falls back as it does for any)."""
    if not cut_after or cut_after >= len(pieces):
        return "".join(pieces)
    for i, piece in enumerate(pieces):
        try:  # each piece is a whole regex, or the nesting would cut into its groups
            re.compile(expand_pattern(piece))
        except re.error as exc:
            raise _Problem(["patterns"], f"cut_after: piece {i + 1} is no regex of its own ({exc.msg}): {piece}") from None
    tail = ""
    for piece in reversed(pieces[cut_after:]):
        tail = f"(?:{piece}{tail}|{CUT_TAIL})"
    return "".join(pieces[:cut_after]) + tail


def _rule(table: dict) -> RuleSpec:
    raw = _convert(table, _Rule, [])
    if raw.cut_after < 0 or raw.cut_after and not any(
            isinstance(p, list) and len(p) > raw.cut_after for p in raw.patterns):
        raise _Problem(["cut_after"], f"cut_after = {raw.cut_after}: it counts the pieces a pattern keeps before a cut, "
                                      "so it needs a pattern of more pieces than that")
    numbers = []
    for capture, entry in raw.numbers.items():
        if not isinstance(entry, dict):
            raise _Problem(["numbers", capture], f"numbers.{capture}: expected a table {{ key = ..., unit = ... }}")
        for k in entry:
            if k not in ("key", "unit"):
                raise _Problem(["numbers", capture, k], f"numbers.{capture}: unknown key {k!r} (key, unit)")
        for k in ("key", "unit"):
            if not isinstance(entry.get(k), str):
                raise _Problem(["numbers", capture], f"numbers.{capture}: missing key {k!r} (a string)")
        numbers.append(Number(capture=capture, key=entry["key"], unit=entry["unit"]))
    refine = []
    for i, ref in enumerate(raw.refine):
        r = _convert(ref, _Refine, ["refine", i])
        refine.append(Refinement(when=r.when, kind=r.kind, priority=r.priority, direction=r.direction, note=r.note,
                                 fix=_fixes(r.fix, ["refine", i, "fix"])))
    return RuleSpec(id=raw.id, version=raw.version, kind=raw.kind, prefilter=raw.prefilter,
                    patterns=tuple(p if isinstance(p, str) else _pieces(p, raw.cut_after) for p in raw.patterns),
                    numbers=tuple(numbers), derived=raw.derived, fix=_fixes(raw.fix, ["fix"]),
                    direction=raw.direction, priority=raw.priority, window=raw.window, uses=tuple(raw.uses),
                    marks=tuple(raw.marks), refine=tuple(refine), note=raw.note, versions=raw.versions,
                    confidence=raw.confidence, when=raw.when, sustain=raw.sustain, gap=raw.gap, alone=raw.alone, cut_in=raw.cut_in,
                    within=raw.within,
                    raise_frame=raw.raise_frame, prefilter_next=raw.prefilter_next, retried=raw.retried)


def _fixes(value, path: list) -> tuple[FixSpec, ...]:
    """`fix` is one table (one candidate) or an array of tables (candidates, first computable wins)."""
    tables = [value] if isinstance(value, dict) else value
    if not isinstance(tables, (list, tuple)) or not all(isinstance(t, dict) for t in tables):
        raise _Problem(path, f"{_dotted(path)}: expected a table or an array of tables")
    out = []
    for i, table in enumerate(tables):
        at = path + [i] if isinstance(value, list) else path
        for key, text in table.items():
            if key not in _FIX_KEYS and key not in TUNABLE:
                raise _Problem(at + [key], f"{_dotted(at)}: unknown key {key!r} (when, note, action or a parameter: "
                                           f"{', '.join(TUNABLE)})")
            if not isinstance(text, str):
                raise _Problem(at + [key], f"{_dotted(at)}.{key}: expected a string (an expression or a text), "
                                           f"got {type(text).__name__}")
        out.append(FixSpec(when=table.get("when", ""), note=table.get("note", ""), action=table.get("action", ""),
                           set={k: v for k, v in table.items() if k in TUNABLE}))
    return tuple(out)


def _convert(value, type_, path: list):
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        m = re.fullmatch(r"(.*?)(?: - at `\$(.*)`)?", str(exc), re.DOTALL)
        message, sub = m.group(1), _path(m.group(2) or "")
        field = re.search(r"field `([^`]+)`", message)
        if message.startswith("Object contains unknown field") and field:
            raise _Problem(path + sub + [field.group(1)], f"unknown key {field.group(1)!r}") from None
        if message.startswith("Object missing required field") and field:
            where = f" in {_dotted(path + sub)}" if path + sub else ""
            raise _Problem(path + sub, f"missing key {field.group(1)!r}{where}") from None
        got = re.fullmatch(r"Expected `(.+)`, got `(.+)`", message)
        what = f"expected {got.group(1)}, got {got.group(2)}" if got else message
        raise _Problem(path + sub, f"{_dotted(path + sub) or 'value'}: {what}") from None


def _path(text: str) -> list:
    return [int(p[1:-1]) if p.startswith("[") and p[1:-1].isdigit() else p.strip(".[]")
            for p in re.findall(r"\.[^.\[]+|\[[^\]]*\]", text) if p != "[...]"]


def _dotted(path: list) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))


class _Lines:
    """Where things are in the text: tomllib keeps no positions, so find keys by their shape."""

    _RULE = re.compile(r"\s*\[\[\s*rule\s*\]\]")

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.starts = [i for i, line in enumerate(self.lines) if self._RULE.match(line)]

    def span(self, index: int | None) -> tuple[int, int]:
        if index is None or index >= len(self.starts):
            return 0, len(self.lines)
        start = self.starts[index]
        end = next((i for i in range(start + 1, len(self.lines))
                    if self._RULE.match(self.lines[i]) or re.match(r"\s*\[\s*ruleset\s*\]", self.lines[i])),
                   len(self.lines))
        return start, end

    def rule_at(self, line: int) -> int | None:
        before = [k for k, start in enumerate(self.starts) if start < line]
        return before[-1] if before else None

    def label(self, index: int | None, rule_id: object = None) -> str | None:
        if not isinstance(rule_id, str) and index is not None:
            start, end = self.span(index)
            m = next((re.match(r"\s*id\s*=\s*[\"']([^\"']*)[\"']", self.lines[i]) for i in range(start, end)
                      if re.match(r"\s*id\s*=", self.lines[i])), None)
            rule_id = m.group(1) if m else None
        if isinstance(rule_id, str) and rule_id:
            return repr(rule_id)
        return None if index is None else f"#{index + 1}"

    def find(self, index: int | None, path: list) -> int:
        """1-based line of `path` (keys and array indexes) inside rule `index` (None: the file)."""
        start, end = self.span(index)
        cur, header, found = start, None, False
        for part in path:
            if isinstance(part, int):
                if header is not None:
                    hits = [i for i in range(cur, end) if self.lines[i].strip().startswith(header)]
                    cur = hits[part] if part < len(hits) else cur
                continue
            key = re.escape(str(part))
            table = re.compile(rf"\s*(\[\[?)\s*(?:[\w\"]+\.)*\"?{key}\"?\s*\]\]?")
            # `key =`, `a.key =`, `key.b =` at the start of a line, or `{ key =` / `, key =` inline
            assign = re.compile(rf"^\s*(?:[\w\"]+\s*\.\s*)*\"?{key}\"?\s*[=.]|[{{,]\s*\"?{key}\"?\s*=")
            hit = next((i for i in range(cur, end) if table.match(self.lines[i]) or assign.search(self.lines[i])), None)
            if hit is None:
                break
            m = table.match(self.lines[hit])
            header = m.group(0).strip() if m and m.group(1) == "[[" else None
            cur, found = hit, True
        if not found and index is not None:  # the rule's `id =` line stands for the rule
            cur = next((i for i in range(start, end) if re.match(r"\s*id\s*=", self.lines[i])), start)
        return cur + 1
