"""Seed fixes as data: a rule's derived values and candidate fixes, compiled once, run per finding.

The arithmetic lives in the rule files (expressions, see expr.py); this module only knows the
order of evaluation and the note templates:

- derived values are computed in order; one that needs a number the log did not state is left
  out, and whatever uses it fails in turn;
- candidates are tried in order: the first whose `when` holds and whose values and note all
  compute wins. A name without a value is not an error of the rule but "this way of fixing
  needs what this log does not say", so the next candidate is tried;
- an arithmetic failure (division by zero, a result out of range, a degenerate grid) means the
  numbers are there but absurd: the fix is "not computable" at once, with the reason, rather
  than a later candidate's note that would misstate why (the old Python fixes raised there);
- a candidate that sets a tunable to 0 or less (free memory too small for any utilization on
  the grid) is absurd in the same way: no value fits, and the fix says so rather than "-> 0";
- when none computes, the fix is empty (an alert) and the note cites the first failure;
  when none applies (every `when` false, or no candidates), the fix is empty without a note.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from selfheal.handlers.observer.expr import BOOL, FIXED, FUNCTIONS, KEYWORDS, NUM, Env, Expr, ExprError, Failed, compile_expr
from selfheal.handlers.observer.spec import ACTIONS, FixSpec, RuleProblem
from selfheal.schemas.serving import TUNABLE

MAX_NOTE = 1000
_SPEC = re.compile(r"(?:\.\d{1,2})?[fg%]?")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class Template:
    """A note: text with ``{expr}`` / ``{expr:spec}`` placeholders and ``{if c}..{else}..{end}``."""

    __slots__ = ("source", "pieces", "canonical")

    def __init__(self, source: str, names: Mapping[str, str], captures: Collection[str]):
        if len(source) > MAX_NOTE:
            raise ExprError(f"note is {len(source)} characters long; the limit is {MAX_NOTE}")
        self.source = source
        pieces, stack, pos = [], [], 0  # stack: enclosing (pieces, ["if", cond, then, else])
        for m in re.finditer(r"\{\{|\}\}|\{([^{}]*)\}|[{}]", source):
            if m.start() > pos:
                pieces.append(source[pos:m.start()])
            pos, tok = m.end(), m.group()
            if tok in ("{{", "}}"):
                pieces.append(tok[0])
            elif m.group(1) is None:
                raise ExprError(f"unmatched {tok!r} in the note (write {tok * 2!r} for a brace)", m.start())
            else:
                pieces = self._placeholder(m.group(1), m.start(1), pieces, stack, names, captures)
        if pos < len(source):
            pieces.append(source[pos:])
        if stack:
            raise ExprError("{if} without {end} in the note", len(source))
        self.pieces = tuple(pieces)
        self.canonical = _canonical(self.pieces)

    @staticmethod
    def _placeholder(inner: str, at: int, pieces: list, stack: list, names, captures) -> list:
        word = inner.strip()
        if word in ("else", "end"):
            if not stack or (word == "else" and stack[-1][1][3] is not None):
                raise ExprError(f"{{{word}}} without {{if}} in the note", at)
            outer, block = stack[-1]
            if word == "else":
                block[3] = pieces = []
                return pieces
            stack.pop()
            outer.append(tuple(block))
            return outer
        try:
            if word.startswith("if ") or word.startswith("if("):
                cond = compile_expr(inner[inner.index("if") + 2:], names, captures)
                if cond.type != BOOL:
                    raise ExprError("{if} needs a boolean condition", 0)
                block = ["if", cond, [], None]
                stack.append((pieces, block))
                return block[2]
            text, _, spec = inner.partition(":")
            value = compile_expr(text, names, captures)
        except ExprError as exc:
            offset = at + (inner.index("if") + 2 if word.startswith("if") else 0)
            raise ExprError(exc.message, None if exc.position is None else offset + exc.position) from None
        if value.type != NUM or not _SPEC.fullmatch(spec.strip()):
            raise ExprError("a placeholder is a number with an optional format: .2f, g, .0%", at)
        pieces.append((value, spec.strip()))
        return pieces

    def render(self, env: Env) -> str:
        return _render(self.pieces, env)


def _render(pieces, env: Env) -> str:
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
        elif piece[0] == "if":
            out.append(_render(piece[2] if piece[1](env) else piece[3] or (), env))
        else:
            out.append(format(piece[0](env), piece[1]))
    return "".join(out)


def _canonical(pieces) -> str:
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece.replace("{", "{{").replace("}", "}}"))
        elif piece[0] == "if":
            out.append("{if " + piece[1].canonical + "}" + _canonical(piece[2]))
            out.append(("{else}" + _canonical(piece[3]) if piece[3] is not None else "") + "{end}")
        else:
            out.append("{" + piece[0].canonical + (":" + piece[1] if piece[1] else "") + "}")
    return "".join(out)


class Candidate:
    __slots__ = ("when", "sets", "note", "action")

    def __init__(self, when: Expr | None, sets: tuple[tuple[str, Expr], ...], note: Template, action: str):
        self.when, self.sets, self.note, self.action = when, sets, note, action

    def canonical(self) -> dict:
        return {"when": self.when.canonical if self.when else None, "action": self.action,
                "set": {p: e.canonical for p, e in self.sets}, "note": self.note.canonical}


class FixProgram:
    """Derived values plus candidates; `run` gives (fix, note) for one finding."""

    __slots__ = ("derived", "candidates", "guard")

    def __init__(self, derived: tuple[tuple[str, Expr], ...], candidates: tuple[Candidate, ...],
                 guard: Expr | None = None):
        self.derived, self.candidates, self.guard = derived, candidates, guard

    def run(self, env: Env) -> tuple[dict[str, float | int | bool], str] | None:
        """(fix, note); None when the rule's guard (`when`) is false or cannot be computed:
        then the match is no finding."""
        for name, expr in self.derived:
            try:
                env.values[name] = expr(env)
            except ExprError as exc:
                if not exc.missing:  # kept, so that what uses it fails for the same reason
                    env.values[name] = Failed(exc)
        if self.guard is not None:
            try:
                if not self.guard(env):
                    return None
            except ExprError:
                return None
        first: ExprError | None = None
        for cand in self.candidates:
            try:
                if cand.when is not None and not cand.when(env):
                    continue
                fix = {param: expr(env) for param, expr in cand.sets}
                nothing = next((p for p, v in fix.items() if not isinstance(v, bool) and v <= 0), None)
                if nothing is not None:  # every amount a tunable sets is above 0: no setting fits
                    # (+ 0 prints a grid's -0.0 as 0)
                    return {}, (f"fix not computable: {nothing} would be {fix[nothing] + 0:g}, and vLLM takes only "
                                f"values above 0 ({cand.note.render(env)})")
                return fix, cand.note.render(env)
            except ExprError as exc:
                if not exc.missing:  # the numbers are there but absurd: no later candidate may hide it
                    return {}, f"fix not computable: {exc}"
                first = first or exc
            except (ArithmeticError, ValueError, TypeError) as exc:  # pragma: no cover - a bug, not a log
                # whatever slipped past the expression checks must not escape diagnose()
                return {}, f"fix not computable: {exc}"
        return {}, (f"fix not computable: {first}" if first else "")


def compile_derived(derived: Mapping[str, str], names: dict[str, str],
                    captures: Collection[str]) -> tuple[tuple[str, Expr], ...]:
    """Compile derived values in order; each one's name (and type) is added to `names`."""
    out = []
    for name, source in derived.items():
        if not _NAME.fullmatch(name) or name in KEYWORDS or name in FUNCTIONS or name in FIXED or name in (
                "current", "bounds"):
            raise RuleProblem(("derived", name), f"derived value {name!r}: not a usable name (lower-case letters, "
                                                 "digits and '_'; not a keyword, function or fixed name)")
        if name in names:
            raise RuleProblem(("derived", name), f"derived value {name!r} repeats a number or derived name")
        expr = _expr(source, names, captures, ("derived", name))
        names[name] = expr.type
        out.append((name, expr))
    return tuple(out)


def compile_guard(source: str, names: Mapping[str, str], captures: Collection[str], path: tuple) -> Expr | None:
    """A rule's `when`: a condition on its numbers and derived values, or None when empty."""
    if not source.strip():
        return None
    guard = _expr(source, names, captures, path)
    if guard.type != BOOL:
        raise RuleProblem(path, f"{_label(path)}: 'when' must be a condition, not a {guard.type}")
    return guard


def compile_candidates(fixes: Sequence[FixSpec], names: Mapping[str, str], captures: Collection[str],
                       path: tuple) -> tuple[Candidate, ...]:
    out = []
    for i, spec in enumerate(fixes):
        at = (*path, i)
        when = _expr(spec.when, names, captures, (*at, "when")) if spec.when.strip() else None
        if when is not None and when.type != BOOL:
            raise RuleProblem((*at, "when"), f"{_label(at)}: 'when' must be a condition, not a {when.type}")
        sets = []
        for param, source in spec.set.items():
            if param not in TUNABLE:
                raise RuleProblem((*at, param), f"{_label(at)}: unknown parameter {param!r}")
            expr = _expr(source, names, captures, (*at, param))
            want = BOOL if param == "enforce_eager" else NUM
            if expr.type != want:
                raise RuleProblem((*at, param), f"{_label(at)}: {param} needs a {want}, the expression is a {expr.type}")
            sets.append((param, expr))
        action = spec.action or ("tune" if sets else "alert")
        if action not in ACTIONS or (action == "tune") != bool(sets):
            raise RuleProblem((*at, "action"), f"{_label(at)}: action {spec.action!r} must be 'tune' when the "
                                               "candidate sets parameters and 'alert' when it sets none")
        try:
            note = Template(spec.note, names, captures)
        except ExprError as exc:
            raise RuleProblem((*at, "note"), f"{_label(at)}: note: {_where(exc)}") from None
        out.append(Candidate(when, tuple(sets), note, action))
    return tuple(out)


def _expr(source: str, names, captures, path: tuple) -> Expr:
    try:
        return compile_expr(source, names, captures)
    except ExprError as exc:
        raise RuleProblem(path, f"{_label(path)}: expression error {_where(exc)}") from None


def _where(exc: ExprError) -> str:
    return (f"at position {exc.position}: " if exc.position is not None else "") + exc.message


def _label(path: tuple) -> str:
    """("fix", 1, "when") -> "fix[1].when"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
