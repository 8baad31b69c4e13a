"""The expression language of rule files: every operator and function, precedence, the grid
functions, errors with positions, and hostile inputs refused quickly without running anything."""
from __future__ import annotations

import math
import time

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfheal.handlers.observer.expr import BOOL, MAX_DEPTH, MAX_LENGTH, MAX_NODES, NUM, Env, ExprError, compile_expr
from selfheal.schemas.actuators import Actuator, ActuatorBounds
from selfheal.schemas.serving import ServingConfig

BOUNDS = ActuatorBounds()
NUMBERS = {"free_gib": 9.8, "total_gib": 11.6, "seqs": 16, "zero": 0, "neg": -2.5}


def ev(source: str, numbers=None, current=None, bounds=BOUNDS, buffer=0.1, captures=()):
    env = Env.build(NUMBERS if numbers is None else numbers, current, bounds, buffer, captures)
    return compile_expr(source)(env)


def err(source: str, names=None, captures=None, **kw) -> ExprError:
    with pytest.raises(ExprError) as info:
        compiled = compile_expr(source, names, captures)
        env = Env.build(NUMBERS, kw.get("current"), BOUNDS, 0.1, ())
        compiled(env)
    return info.value


@pytest.mark.parametrize("source, value", [
    ("1 + 2", 3), ("7 - 10", -3), ("6 * 7", 42), ("7 / 2", 3.5), ("-3", -3), ("--3", 3), ("- (2 + 3)", -5),
    ("2 < 3", True), ("3 <= 3", True), ("2 > 3", False), ("2 >= 3", False), ("2 == 2.0", True), ("2 != 2", False),
    ("true == false", False), ("true != false", True),
    ("true and false", False), ("true or false", True), ("not true", False), ("not not true", True),
    ("1 if true else 2", 1), ("1 if false else 2", 2),
    ("min(3, 1, 2)", 1), ("max(3, 1.5)", 3), ("abs(-2.5)", 2.5), ("floor(2.7)", 2), ("floor(-2.5)", -3),
    ("ceil(2.1)", 3), ("round(2.5)", 2), ("round(3.5)", 4), ("round(2.675, 2)", 2.67), ("round(1234, -2)", 1200),
    ("1.5e3", 1500.0), ("1e-3", 0.001), ("0.5", 0.5),
    ("free_gib * (1 - buffer) / total_gib", 9.8 * (1 - 0.1) / 11.6),
    ("seqs / 2", 8.0), ("seqs * 2", 32), ("neg", -2.5),
])
def test_operators_and_functions(source, value):
    got = ev(source)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("source, value", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("1 - 2 - 3", -4), ("8 / 4 / 2", 1.0), ("-2 * 3", -6), ("2 * -3", -6),
    ("1 + 2 < 4", True), ("not 1 > 2", True), ("true or false and false", True), ("(true or false) and false", False),
    ("not true or true", True), ("1 if 2 > 1 else 3 if false else 4", 1), ("0 if false else 3 if false else 4", 4),
    ("1 + 1 if false else 5", 5), ("2 > 1 and 3 > 2", True),
])
def test_precedence_and_associativity_are_pythons(source, value):
    assert ev(source) == value


def test_names_current_bounds_and_buffer():
    current = ServingConfig(gpu_memory_utilization=0.8, max_num_seqs=32, enforce_eager=True)
    assert ev("current.gpu_memory_utilization + buffer", current=current, buffer=0.05) == 0.8 + 0.05
    assert ev("current.max_num_seqs", current=current) == 32
    assert ev("current.enforce_eager", current=current) is True
    assert ev("bounds.max_num_seqs.step + bounds.max_num_seqs.min + bounds.max_num_seqs.max") == 2 + 2 + 16
    assert ev("bounds.enforce_eager_allowed") is True
    assert ev("known(current.max_num_seqs)") is False
    assert ev("known(current.max_num_seqs)", current=current) is True
    assert ev("known(free_gib) and not known(nope)") is True


def test_and_or_and_conditionals_short_circuit():
    # a missing value on the side not taken is never read
    assert ev("known(nope) and nope > 0") is False
    assert ev("not known(nope) or nope > 0") is True
    assert ev("nope if false else 1") == 1
    assert ev("1 if true else 1 / 0") == 1


@pytest.mark.parametrize("act", [
    Actuator(name="gpu_memory_utilization", min=0.6, max=0.9, step=0.05),
    Actuator(name="gpu_memory_utilization", min=0.0, max=1.0, step=0.001),
    Actuator(name="gpu_memory_utilization", min=0.5, max=0.95, step=0.01),
])
@pytest.mark.parametrize("value", [0.7603, 0.8, 0.79999999, 0.2210, 1.3, -0.4, 0.6])
def test_grid_functions_round_like_the_actuator(act, value):
    bounds = ActuatorBounds(gpu_memory_utilization=act)
    assert ev(f"floor_step('gpu_memory_utilization', {value})", bounds=bounds) == act.floor(value)
    assert ev(f"ceil_step('gpu_memory_utilization', {value})", bounds=bounds) == act.ceil(value)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["max_num_seqs", "max_model_len", "max_num_batched_tokens", "gpu_memory_utilization"]),
       st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.sampled_from([1, 2, 8, 512, 0.05, 0.001]),
       st.floats(min_value=-100, max_value=100, allow_nan=False))
def test_grid_functions_equal_actuator_floor_and_ceil(param, value, step, low):
    act = Actuator(name=param, min=low, max=low + 100 * step, step=step)
    bounds = msgspec.structs.replace(BOUNDS, **{param: act})
    assert ev(f"floor_step('{param}', v)", numbers={"v": value}, bounds=bounds) == act.floor(value)
    assert ev(f"ceil_step('{param}', v)", numbers={"v": value}, bounds=bounds) == act.ceil(value)
    assert type(ev(f"floor_step('{param}', v)", numbers={"v": value}, bounds=bounds)) is type(act.floor(value))


def test_captured_reads_the_groups_that_took_part():
    assert ev("captured('dropped')", captures={"dropped": "x"}) is True
    assert ev("captured('dropped')", captures={}) is False
    assert "no capture of that name" in str(err("captured('droped')", captures={"dropped"}))


def test_types_are_static():
    assert compile_expr("1 < 2").type == BOOL and compile_expr("1 + 2").type == NUM
    assert compile_expr("x > 0", {"x": NUM}).type == BOOL
    assert compile_expr("ok and x > 0", {"x": NUM, "ok": BOOL}).type == BOOL


def test_canonical_form_ignores_spacing_and_redundant_parentheses():
    a = compile_expr("free_gib*(1-buffer)/total_gib")
    b = compile_expr("  ((free_gib * (1 - buffer))) /\n    total_gib ")
    assert a.canonical == b.canonical == "((free_gib * (1 - buffer)) / total_gib)"
    assert compile_expr("a + b * c").canonical != compile_expr("(a + b) * c").canonical


@pytest.mark.parametrize("source, message, position", [
    ("1 +", "expected a value, found the end", 3),
    ("(1 + 2", "expected ')', found the end", 6),
    ("1 2", "unexpected '2'", 2),
    ("nope + 1", "unknown name 'nope'", 0),
    ("free_gib + true", "'+' needs a number, got a boolean", 11),
    ("1 and true", "'and' needs a boolean, got a number", 0),
    ("not 1", "'not' needs a boolean, got a number", 4),
    ("1 if 2 else 3", "the condition of 'if' needs a boolean", 5),
    ("1 if true else false", "both branches of 'if' must have one type", 15),
    ("1 if true", "expected 'else', found the end", 9),
    ("1 < 2 < 3", "comparisons cannot be chained", 6),
    ("true < false", "'<' needs a number, got a boolean", 0),
    ("1 == true", "'==' compares a number with a boolean", 2),
    ("min(1)", "min() takes 2 or more arguments, got 1", 0),
    ("abs(1, 2)", "abs() takes 1 arguments, got 2", 0),
    ("floor_step('temperature', 1)", "'temperature' is not a parameter with a grid", 11),
    ("floor_step(max_num_seqs, 1)", "expected a quoted name", 11),
    ("known(1)", "known() takes a name", 6),
    ("current.temperature", "unknown name 'current.temperature'", 0),
    ("bounds.max_num_seqs.default", "unknown name 'bounds.max_num_seqs.default'", 0),
    ("1e999", "number 1e999 is out of range", 0),
    ("1 % 2", "'%' is not an operator", 2),
    ("7 // 2", "'//' is not an operator", 2),
    ("a = 1", "'=' is not an operator (use ==)", 2),
    ("min", "'min' is a function: call it", 0),
    ("True", "'True' is not part of the language (use true/false)", 0),
])
def test_compile_errors_name_the_problem_and_position(source, message, position):
    names = {"free_gib": NUM} if "nope" in source else None
    e = err(source, names)
    assert message in e.message and e.position == position, (e.message, e.position)
    assert f"at position {position}" in str(e)


@pytest.mark.parametrize("source, message, position, missing", [
    ("free_gib / zero", "division by zero", 9, False),
    ("free_gib / (seqs - 16)", "division by zero", 9, False),
    ("1e308 * 10", "result is not a finite number", 6, False),
    ("floor(1e308) * 2", "result is too large", 0, False),
    ("floor(1e307) * floor(1e307)", "result is too large", 13, False),
    ("absent_value + 1", "no value for 'absent_value'", 0, True),
    ("current.max_num_seqs * 2", "no value for 'current.max_num_seqs'", 0, True),
    ("round(1.5, 2.5)", "the number of digits must be an integer", 0, False),
])
def test_evaluation_errors_name_the_problem_and_position(source, message, position, missing):
    e = err(source)
    assert message in e.message and e.position == position and e.missing is missing, (e.message, e.position)
    assert source in str(e)  # the expression is cited: "... at position 9 in 'free_gib / zero'"


def test_degenerate_grids_are_errors_not_exceptions():
    tiny = ActuatorBounds(max_num_seqs=Actuator(name="max_num_seqs", min=0, max=1, step=1e-320))
    with pytest.raises(ExprError, match="floor_step"):
        compile_expr("floor_step('max_num_seqs', 1e300)")(Env.build({}, None, tiny, 0.1))


HOSTILE = [
    ("__import__('os')", "names may not start with '_'"),
    ("().__class__", "attribute access is not allowed"),
    ("(1).__class__.__bases__", "attribute access is not allowed"),
    ("1**999999999", "'**' is not an operator"),
    ("2 ** 10", "'**' is not an operator"),
    ("x.y.z", "unknown name 'x.y.z'"),
    ("current.__class__", "names may not start with '_'"),
    ("(" * 10_000 + "1" + ")" * 10_000, f"the limit is {MAX_LENGTH}"),
    ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), f"nests deeper than {MAX_DEPTH}"),
    ("-" * (MAX_DEPTH + 1) + "1", f"nests deeper than {MAX_DEPTH}"),
    ("min(" * 20 + "1" + ", 1)" * 20, f"nests deeper than {MAX_DEPTH}"),
    ("1" + " + 1" * 300, f"more than {MAX_NODES} nodes"),
    ("1+" * 500_000 + "1", f"the limit is {MAX_LENGTH}"),  # a megabyte
    ("lambda: 1", "'lambda' is not part of the language"),
    ("lambda x: x", "'lambda' is not part of the language"),
    ("'abc'", "a string is allowed only as the first argument"),
    ('"abc" + "def"', "a string is allowed only as the first argument"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("eval('1')", "unknown function 'eval'"),
    ("getattr(x, 'y')", "unknown function 'getattr'"),
    ("[1, 2]", "unexpected character '['"),
    ("{}", "unexpected character '{'"),
    ("x[0]", "unexpected character '['"),
    ("f'{x}'", "a string is allowed only as the first argument"),
    ("1; import os", "unexpected character ';'"),
    ("import os", "'import' is not part of the language"),
    ("x if y > 0", "expected 'else'"),
    ("\\x41", "unexpected character '\\\\'"),
    ("١٢", "unexpected character"),
    ("9" * 41, "number literal longer than"),
    ("captured(1)", "expected a quoted name"),
]


@pytest.mark.parametrize("source, message", HOSTILE, ids=[h[0][:30] for h in HOSTILE])
def test_hostile_inputs_are_rejected_quickly_with_a_precise_message(source, message):
    start = time.perf_counter()
    with pytest.raises(ExprError) as info:
        compile_expr(source)
    assert time.perf_counter() - start < 0.5
    assert message in str(info.value), str(info.value)


def test_a_megabyte_is_refused_before_it_is_read():
    start = time.perf_counter()
    for _ in range(100):
        with pytest.raises(ExprError, match="characters long"):
            compile_expr("1" * 1_048_576)
    assert time.perf_counter() - start < 0.5


def test_non_strings_are_refused():
    with pytest.raises(ExprError, match="an expression is a string"):
        compile_expr(42)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.+-*/()<>=!, abcdefxyz_'\"", max_size=60))
def test_any_text_compiles_or_raises_expr_error_only(source):
    try:
        expr = compile_expr(source)
    except ExprError:
        return
    try:
        value = expr(Env.build({}, None, BOUNDS, 0.1))
    except ExprError:
        return
    assert isinstance(value, bool) or math.isfinite(value)


_EXTREME = st.sampled_from(["0", "1", "-1", "0.5", "1e308", "9e307", "1e-308", "1.7976931348623157e308", "x", "y"])


@st.composite
def _expressions(draw, depth=0):
    if depth > 4 or draw(st.booleans()):
        return draw(_EXTREME)
    a, b = draw(_expressions(depth + 1)), draw(_expressions(depth + 1))
    return draw(st.sampled_from([
        f"({a} + {b})", f"({a} - {b})", f"({a} * {b})", f"({a} / {b})", f"(-{a})", f"floor({a})", f"ceil({a})",
        f"round({a})", f"round({a}, 2)", f"abs({a})", f"min({a}, {b})", f"max({a}, {b})",
        f"({a} if {a} < {b} else {b})", f"floor_step('max_num_seqs', {a})", f"ceil_step('gpu_memory_utilization', {b})",
    ]))


@settings(max_examples=500, deadline=None)
@given(_expressions(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**30, 10**30))
def test_extreme_numbers_give_a_finite_result_or_an_expr_error(source, x, y):
    expr = compile_expr(source)
    try:
        value = expr(Env.build({"x": x, "y": y}, None, BOUNDS, 0.1))
    except ExprError:
        return
    assert math.isfinite(value) and format(value, ".2f") and format(value, "g")
