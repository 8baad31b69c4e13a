"""A small, safe expression language for derived values and seed fixes in rule files.

Rule files come from people and from the log (a proposed rule set is replayed on every
incident), so an expression must not be able to do anything but arithmetic on the numbers a
rule read. Hence our own tokenizer and recursive-descent parser (never `eval`), a fixed set of
names and functions, static types, and hard limits on size, nesting and node count. The parse
result is compiled once into a tree of closures; evaluating it costs at most one call per node.

Grammar (lowest precedence first; `and`/`or` and the conditional short-circuit)::

    expr    := or_expr [ "if" or_expr "else" expr ]
    or_expr := and_expr { "or" and_expr }
    and_expr:= not_expr { "and" not_expr }
    not_expr:= "not" not_expr | compare
    compare := sum [ ("<" | "<=" | ">" | ">=" | "==" | "!=") sum ]      (no chaining)
    sum     := term { ("+" | "-") term }
    term    := unary { ("*" | "/") unary }
    unary   := "-" unary | atom
    atom    := NUMBER | "true" | "false" | NAME | CALL | "(" expr ")"

Names: a number the rule read (``free_gib``), a derived value of the rule, ``buffer`` (the
safety buffer), ``current.<param>`` (the caller's config; absent when it gave none) and
``bounds.<param>.min|max|step`` / ``bounds.enforce_eager_allowed`` (the actuator grid).
Functions: ``min max`` (2+ args), ``abs floor ceil``, ``round(x[, digits])`` (Python's: halves
to even), ``floor_step('param', x)`` / ``ceil_step('param', x)`` (onto the actuator grid, as
`Actuator.floor/ceil`), ``known(name)`` (is the value present) and ``captured('group')`` (did
the named capture take part in the match). A quoted string is allowed only as the first
argument of floor_step, ceil_step and captured: strings are names there, never values.

Values are numbers (Python int/float semantics: ``/`` gives a float, ``floor`` an int) and
booleans; mixing them is a compile-time error. Division by zero, a missing name, a result that
is not finite (or an integer beyond the float range) raise `ExprError` at evaluation.
"""
from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Collection, Mapping

from selfheal.handlers.observer.names import (ABSENT, BOOL, FIXED, GRID, MAX_INT, NUM, Env, ExprError, Failed, is_known,
                                    is_number)

__all__ = ["BOOL", "NUM", "Env", "Expr", "ExprError", "compile_expr"]

MAX_LENGTH = 2000   # characters of source
MAX_DEPTH = 32      # nested parentheses, calls, unary operators and conditionals
MAX_NODES = 256     # parsed nodes: evaluation cost is linear in this
_MAX_LITERAL = 40   # characters of one number literal

KEYWORDS = {"and", "or", "not", "if", "else", "true", "false"}
FUNCTIONS = {"min", "max", "abs", "floor", "ceil", "round", "floor_step", "ceil_step", "known", "captured"}
# Python's words get a clearer message than "unknown name"
_PYTHON_WORDS = {"lambda", "import", "for", "in", "is", "def", "class", "while", "yield", "await", "return", "with",
                 "as", "from", "raise", "try", "del", "global", "elif", "None", "True", "False"}
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)
  | (?P<str>'[^'\\\n]*'|"[^"\\\n]*")
  | (?P<bad>\*\*|//)
  | (?P<op><=|>=|==|!=|[-+*/<>(),])
  | (?P<bad1>=|%|\.|\S)""", re.VERBOSE | re.ASCII)  # ASCII: no Unicode digits or letters in names
_BAD = {"**": "'**' is not an operator (the language has no powers)", "//": "'//' is not an operator (use floor)",
        "%": "'%' is not an operator", "=": "'=' is not an operator (use ==)",
        ".": "attribute access is not allowed: only current.<param> and bounds.<param>.<min|max|step>"}


class Expr:
    """A compiled expression: call it with an `Env`."""

    __slots__ = ("source", "type", "canonical", "nodes", "_fn")

    def __init__(self, source: str, type_: str, canonical: str, nodes: int, fn: Callable[[Env], object]):
        self.source, self.type, self.canonical, self.nodes, self._fn = source, type_, canonical, nodes, fn

    def __call__(self, env: Env):
        try:
            return self._fn(env)
        except ExprError as exc:
            raise ExprError(exc.message, exc.position, self.source, exc.missing) from None

    def __repr__(self) -> str:
        return f"Expr({self.canonical!r})"


class _Node:
    __slots__ = ("fn", "type", "text", "pos")

    def __init__(self, fn, type_: str, text: str, pos: int):
        self.fn, self.type, self.text, self.pos = fn, type_, text, pos


def compile_expr(source: str, names: Mapping[str, str] | None = None,
                 captures: Collection[str] | None = None) -> Expr:
    """Parse, type-check and compile `source`.

    `names` maps each bare name the expression may use to its type (NUM or BOOL); None allows
    any bare name as a number. `captures` lists the group names `captured()` may ask about
    (None: any). The fixed names (`buffer`, `current.*`, `bounds.*`) are always allowed.
    """
    if not isinstance(source, str):
        raise ExprError(f"an expression is a string, not {type(source).__name__}")
    if len(source) > MAX_LENGTH:
        raise ExprError(f"expression is {len(source)} characters long; the limit is {MAX_LENGTH}")
    parser = _Parser(source, names, captures)
    node = parser.parse()
    return Expr(source, node.type, node.text, parser.count, node.fn)


def _tokenize(source: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        kind, text = m.lastgroup, m.group()
        if kind in ("bad", "bad1"):
            raise ExprError(_BAD.get(text, f"unexpected character {text!r}"), pos)
        if kind == "name" and text.split(".")[0] in _PYTHON_WORDS:
            raise ExprError(f"{text.split('.')[0]!r} is not part of the language"
                            + (" (use true/false)" if text in ("True", "False") else ""), pos)
        if kind == "name" and any(part.startswith("_") for part in text.split(".")):
            raise ExprError(f"{text!r} is not allowed: names may not start with '_'", pos)
        if kind != "ws":
            tokens.append(("kw" if kind == "name" and text in KEYWORDS else kind, text, pos))
        pos = m.end()
    tokens.append(("end", "", len(source)))
    return tokens


class _Parser:
    def __init__(self, source: str, names, captures):
        self.source, self.names, self.captures = source, names, captures
        self.tokens = _tokenize(source)
        self.i = self.depth = self.count = 0

    # -- helpers ---------------------------------------------------------------------------
    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self) -> tuple[str, str, int]:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        kind, got, pos = self.take()
        if got != text or kind not in ("op", "kw"):
            raise ExprError(f"expected {text!r}, found {_describe(kind, got)}", pos)

    def node(self, fn, type_: str, text: str, pos: int) -> _Node:
        self.count += 1
        if self.count > MAX_NODES:
            raise ExprError(f"expression has more than {MAX_NODES} nodes", pos)
        return _Node(fn, type_, text, pos)

    def nested(self, pos: int):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"expression nests deeper than {MAX_DEPTH} levels", pos)

    def need(self, node: _Node, type_: str, what: str) -> None:
        if node.type != type_:
            raise ExprError(f"{what} needs a {type_}, got a {node.type}", node.pos)

    # -- grammar ---------------------------------------------------------------------------
    def parse(self) -> _Node:
        node = self.expr()
        kind, text, pos = self.peek()
        if kind == "str":
            raise ExprError(_STRING, pos)
        if kind != "end":
            raise ExprError(f"unexpected {_describe(kind, text)}", pos)
        return node

    def expr(self) -> _Node:
        pos = self.peek()[2]
        self.nested(pos)
        body = self.or_expr()
        if self.peek()[1] == "if" and self.peek()[0] == "kw":
            self.take()
            cond = self.or_expr()
            self.need(cond, BOOL, "the condition of 'if'")
            self.expect("else")
            other = self.expr()
            if other.type != body.type:
                raise ExprError(f"both branches of 'if' must have one type ({body.type} vs {other.type})", other.pos)
            a, c, b = body.fn, cond.fn, other.fn
            body = self.node(lambda env: a(env) if c(env) else b(env), body.type,
                             f"({body.text} if {cond.text} else {other.text})", body.pos)
        self.depth -= 1
        return body

    def _chain(self, ops: tuple[str, ...], sub) -> _Node:
        """A left-associative run of binary operators: `and`/`or` join booleans, the rest numbers."""
        left = sub()
        while self.peek()[0] in ("op", "kw") and self.peek()[1] in ops:
            _, op, pos = self.take()
            right = sub()
            want = BOOL if op in ("and", "or") else NUM
            self.need(left, want, f"'{op}'")
            self.need(right, want, f"'{op}'")
            fn = _logic(op, left.fn, right.fn) if want == BOOL else _binary(op, left.fn, right.fn, pos)
            left = self.node(fn, want, f"({left.text} {op} {right.text})", pos)
        return left

    def or_expr(self) -> _Node:
        return self._chain(("or",), lambda: self._chain(("and",), self.not_expr))

    def not_expr(self) -> _Node:
        if self.peek()[:2] == ("kw", "not"):
            pos = self.take()[2]
            self.nested(pos)
            operand = self.not_expr()
            self.depth -= 1
            self.need(operand, BOOL, "'not'")
            a = operand.fn
            return self.node(lambda env: not a(env), BOOL, f"(not {operand.text})", pos)
        return self.compare()

    def compare(self) -> _Node:
        left = self.sum()
        kind, op, pos = self.peek()
        if kind != "op" or op not in _COMPARE:
            return left
        self.take()
        right = self.sum()
        if self.peek()[0] == "op" and self.peek()[1] in _COMPARE:
            raise ExprError("comparisons cannot be chained (use 'and')", self.peek()[2])
        if op in ("==", "!="):
            if left.type != right.type:
                raise ExprError(f"'{op}' compares a {left.type} with a {right.type}", pos)
        else:
            self.need(left, NUM, f"'{op}'")
            self.need(right, NUM, f"'{op}'")
        a, b, f = left.fn, right.fn, _COMPARE[op]
        return self.node(lambda env: f(a(env), b(env)), BOOL, f"({left.text} {op} {right.text})", pos)

    def sum(self) -> _Node:
        return self._chain(("+", "-"), lambda: self._chain(("*", "/"), self.unary))

    def unary(self) -> _Node:
        if self.peek()[:2] == ("op", "-"):
            pos = self.take()[2]
            self.nested(pos)
            operand = self.unary()
            self.depth -= 1
            self.need(operand, NUM, "unary '-'")
            a = operand.fn
            return self.node(lambda env: _checked(-a(env), pos), NUM, f"(-{operand.text})", pos)
        return self.atom()

    def atom(self) -> _Node:
        kind, text, pos = self.take()
        if kind == "num":
            return self.number(text, pos)
        if kind == "kw" and text in ("true", "false"):
            value = text == "true"
            return self.node(lambda env: value, BOOL, text, pos)
        if kind == "op" and text == "(":
            inner = self.expr()
            self.expect(")")
            return inner
        if kind == "name" and self.peek()[:2] == ("op", "("):
            return self.call(text, pos)
        if kind == "name":
            return self.name(text, pos)
        if kind == "str":
            raise ExprError(_STRING, pos)
        raise ExprError(f"expected a value, found {_describe(kind, text)}", pos)

    def number(self, text: str, pos: int) -> _Node:
        if len(text) > _MAX_LITERAL:
            raise ExprError(f"number literal longer than {_MAX_LITERAL} characters", pos)
        value = float(text) if any(c in text for c in ".eE") else int(text)
        if not is_number(value):
            raise ExprError(f"number {text} is out of range", pos)
        return self.node(lambda env: value, NUM, repr(value), pos)

    def name(self, text: str, pos: int) -> _Node:
        if text in FIXED:
            type_ = FIXED[text]
        elif "." in text:
            raise ExprError(f"unknown name {text!r}: only current.<param>, bounds.<param>.<min|max|step> and "
                            f"bounds.enforce_eager_allowed have dots", pos)
        elif text in FUNCTIONS:
            raise ExprError(f"{text!r} is a function: call it", pos)
        elif self.names is None:
            type_ = NUM
        elif text in self.names:
            type_ = self.names[text]
        else:
            raise ExprError(f"unknown name {text!r}", pos)

        def fn(env: Env):
            value = env.values.get(text, ABSENT)
            if value is ABSENT:
                raise ExprError(f"no value for {text!r}", pos, missing=True)
            if type(value) is Failed:
                raise value.error
            return value
        return self.node(fn, type_, text, pos)

    def call(self, fname: str, pos: int) -> _Node:
        if fname not in FUNCTIONS:
            raise ExprError(f"unknown function {fname!r}", pos)
        self.take()  # "("
        self.nested(pos)
        args: list = []
        if self.peek()[:2] != ("op", ")"):
            while True:
                args.append(self.quoted() if fname in _QUOTED and not args
                            else self.bare_name() if fname == "known" else self.expr())
                if self.peek()[:2] != ("op", ","):
                    break
                self.take()
        self.expect(")")
        self.depth -= 1
        return _build_call(self, fname, args, pos)

    def quoted(self) -> tuple[str, int]:
        kind, text, pos = self.take()
        if kind != "str":
            raise ExprError(f"expected a quoted name, found {_describe(kind, text)}", pos)
        return text[1:-1], pos

    def bare_name(self) -> _Node:
        kind, text, pos = self.take()
        if kind != "name":
            raise ExprError(f"known() takes a name, found {_describe(kind, text)}", pos)
        return self.name(text, pos)


_QUOTED = {"floor_step", "ceil_step", "captured"}
_STRING = "a string is allowed only as the first argument of floor_step, ceil_step or captured"
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
            "!=": operator.ne}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_ARITY = {"min": (2, None), "max": (2, None), "abs": (1, 1), "floor": (1, 1), "ceil": (1, 1), "round": (1, 2),
          "floor_step": (2, 2), "ceil_step": (2, 2), "known": (1, 1), "captured": (1, 1)}


def _describe(kind: str, text: str) -> str:
    return "the end" if kind == "end" else f"{text!r}"


def _checked(value, pos: int):
    """Every arithmetic result passes here: finite floats, integers of bounded size."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError("result is not a finite number", pos)
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise ExprError("result is too large", pos)
    return value


def _logic(word: str, a, b):
    # a factory, not a lambda in the parser's loop: each closure must keep its own operands
    if word == "and":
        return lambda env: a(env) and b(env)
    return lambda env: a(env) or b(env)


def _binary(op: str, a, b, pos: int):
    if op != "/":
        f = _ARITH[op]
        return lambda env: _checked(f(a(env), b(env)), pos)

    def divide(env: Env):
        x, y = a(env), b(env)
        if y == 0:
            raise ExprError("division by zero", pos)
        try:
            return _checked(x / y, pos)
        except OverflowError:
            raise ExprError("result is too large", pos) from None
    return divide


def _build_call(p: _Parser, fname: str, args: list, pos: int) -> _Node:
    low, high = _ARITY[fname]
    if len(args) < low or (high is not None and len(args) > high):
        want = f"{low}" if low == high else f"{low} or more" if high is None else f"{low} to {high}"
        raise ExprError(f"{fname}() takes {want} arguments, got {len(args)}", pos)
    if fname == "known":
        key = args[0].text
        return p.node(lambda env: is_known(env.values, key), BOOL, f"known({key})", pos)
    if fname == "captured":
        group, gpos = args[0]
        if p.captures is not None and group not in p.captures:
            raise ExprError(f"captured({group!r}): no capture of that name in the patterns", gpos)
        return p.node(lambda env: group in env.captures, BOOL, f"captured({group!r})", pos)
    if fname in ("floor_step", "ceil_step"):
        (param, ppos), value = args
        if param not in GRID:
            raise ExprError(f"{fname}(): {param!r} is not a parameter with a grid ({', '.join(GRID)})", ppos)
        p.need(value, NUM, f"{fname}()")
        return p.node(_grid(fname, param, value.fn, pos), NUM, f"{fname}({param!r}, {value.text})", pos)
    for arg in args:
        p.need(arg, NUM, f"{fname}()")
    fns = tuple(a.fn for a in args)
    text = f"{fname}({', '.join(a.text for a in args)})"
    if fname in ("min", "max"):
        pick = min if fname == "min" else max
        return p.node(lambda env: pick(*(f(env) for f in fns)), NUM, text, pos)
    f0 = fns[0]
    if fname == "round" and len(fns) == 2:
        f1 = fns[1]
        return p.node(lambda env: _round2(f0(env), f1(env), pos), NUM, text, pos)
    op = {"abs": abs, "floor": math.floor, "ceil": math.ceil, "round": round}[fname]
    return p.node(lambda env: _checked(op(f0(env)), pos), NUM, text, pos)


def _round2(x, digits, pos: int):
    if not isinstance(digits, int) or not -20 <= digits <= 20:
        raise ExprError("round(): the number of digits must be an integer from -20 to 20", pos)
    return _checked(round(x, digits), pos)


def _grid(fname: str, param: str, value, pos: int):
    def snap(env: Env):
        act, x = getattr(env.bounds, param), value(env)
        try:
            snapped = (act.floor if fname == "floor_step" else act.ceil)(x)
        except (ArithmeticError, ValueError) as exc:  # a degenerate grid (step 0, 1e-300)
            raise ExprError(f"{fname}(): {exc}", pos) from None
        return _checked(snapped, pos)
    return snap
