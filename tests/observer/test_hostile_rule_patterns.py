"""Hostile rule patterns (issue 13, item 6): a rule file is user input, and Python's `re` has no
timeout. A pattern prone to catastrophic backtracking is refused when the file is loaded
(`schemas.redaction.check_pattern`, called by the rule compiler), with one error that names
the file, the rule and the pattern; and a pattern that is accepted only ever runs on a bounded
stretch of text (engine.MATCH_WINDOW plus engine.MATCH_REACH), so a long line costs time
linear in its length, not quadratic.

The commands run in a child process with a timeout: before the fix they did not end at all,
and a test must fail, not hang, if that comes back.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from selfheal.handlers.observer import engine
from selfheal.handlers.observer.rules import RuleFileError, builtin_ruleset, load_rule_file, parse_rules

HOSTILE = "(?P<x>(a|aa)+)+b"


def rule_file(pattern: str, prefilter: str = "a") -> str:
    # a TOML literal string: the pattern's backslashes reach the compiler as they are
    return f"""\
[ruleset]
version = "hostile-1"

[[rule]]
id = "t.hostile"
kind = "no_kv_cache_memory"
prefilter = "{prefilter}"
patterns = ['{pattern}']
"""


def run_cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    code = "import sys; from selfheal.cli.main import main; sys.argv = ['selfheal', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


def test_a_backtracking_rule_pattern_is_refused_at_load_naming_file_rule_and_pattern(tmp_path):
    path = tmp_path / "hostile.toml"
    path.write_text(rule_file(HOSTILE), encoding="utf-8")
    with pytest.raises(RuleFileError) as caught:
        load_rule_file(path)
    e = caught.value
    assert e.source == str(path) and e.rule == "'t.hostile'" and e.line == 8  # the `patterns =` line
    assert "catastrophic backtracking" in e.problem and HOSTILE in e.problem, e.problem
    assert str(e).startswith(f"{path}:8: rule 't.hostile': pattern 1: ")
    # the same from text, as a rule set recorded in the log is read
    with pytest.raises(RuleFileError, match="catastrophic backtracking"):
        parse_rules(rule_file(HOSTILE), "ruleset r-1")


@pytest.mark.parametrize("pattern", [r"(\w+\s?)+$", r"(a|a)*c", r"(?:x+)*y", r"(a+)+", r"(\d+(?:,\d+)*)*!"])
def test_other_nested_or_ambiguous_repeats_are_refused_too(pattern):
    with pytest.raises(RuleFileError, match="catastrophic backtracking"):
        parse_rules(rule_file(pattern), "hostile.toml")


# a repeat bounded above LARGE_REPEAT backtracks as an endless one does: `(?:a{1,50})+b` took 3.4 s on
# 26 `a`s, `(?:a|aa){1,100}b` 37 s on 40 `a`s, before check_pattern counted such repeats as unbounded
@pytest.mark.parametrize("pattern", [r"(?:a{1,50})+b", r"(?:\d{1,20}\.?)+x", r"(?:a|aa){1,100}b"])
def test_repeats_bounded_but_large_are_refused_too(pattern):
    with pytest.raises(RuleFileError, match="catastrophic backtracking"):
        parse_rules(rule_file(pattern), "hostile.toml")


# a pattern that may begin with an unbounded repeat is tried again at every character of a run of
# it: "(?P<free>{num}) GiB free" took 4 s per 40 KB on the hostile log of 5,000-digit numbers
# (tests/reliability/test_hostile_input.py), quadratic, while nested repeats are exponential
@pytest.mark.parametrize("pattern", [r"(?P<n>{num}) GiB free", r"~?(?P<n>{num}) GiB", r"\**x", r"(?:y|\s*x)z",
                                     r"(?:ab)?\d+c", r"(?:ab)+c"])
def test_a_pattern_that_may_begin_with_an_unbounded_repeat_is_refused(pattern):
    with pytest.raises(RuleFileError, match="may begin with an unbounded repeat"):
        parse_rules(rule_file(pattern), "hostile.toml")


@pytest.mark.parametrize("pattern", [r"(?<![\d.])(?P<n>{num}) GiB free", r"\b\d+ GiB", r"free (?P<n>{num})",
                                     r"ab\d+c", r"x?y\d+"])
def test_a_pattern_whose_start_is_fixed_is_accepted(pattern):
    assert parse_rules(rule_file(pattern), "fine.toml").rules


def test_rules_test_on_a_backtracking_pattern_ends_at_once_with_one_line(tmp_path):
    rules, log = tmp_path / "hostile.toml", tmp_path / "a.log"
    rules.write_text(rule_file(HOSTILE), encoding="utf-8")
    log.write_text("a" * 40 + "\n", encoding="utf-8")
    result = run_cli("rules", "test", str(rules), str(log), timeout=30)  # did not end in 30 s before
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert str(rules) in line and "t.hostile" in line and HOSTILE in line and "Traceback" not in line, line


def test_every_builtin_pattern_passes_the_check():
    assert len(builtin_ruleset().rules) > 30  # compiled through the same check


def test_runs_of_spaces_expand_to_one_whitespace_run():
    # "a space matches any run of whitespace, or none": two spaces mean the same, and `\s*\s*`
    # would only give the engine two ways to split every run
    assert engine.expand_pattern("GiB).  Try") == engine.expand_pattern("GiB). Try") == r"GiB).\s*Try"
    assert engine.expand_pattern("[  ]x  y") == r"[  ]x\s*y"  # inside a class a space is a space


def test_an_accepted_pattern_on_a_long_line_costs_linear_time(tmp_path):
    # `[^#]*` is accepted (one repeat is not catastrophic), but on one 1 MB line with 10,000
    # starts each start ran on to the "#" near the end of the line and back: 46 s here (11 s
    # for half the line: quadratic). Matched in windows, each start sees at most
    # MATCH_WINDOW + MATCH_REACH characters; the match at the end is still found.
    rules, log = tmp_path / "class.toml", tmp_path / "long.log"
    rules.write_text(rule_file(r"x=(?P<v>[^#]*)!", prefilter="x="), encoding="utf-8")
    log.write_text(("x=" + "a" * 98) * 10_000 + "#x=1!\n", encoding="utf-8")
    result = run_cli("rules", "test", str(rules), str(log), "--json", timeout=30)
    assert result.returncode == 4, result.stderr  # 4: the rules found a failure (cli/exits.py)
    assert '"rule":"t.hostile"' in result.stdout.replace(" ", "")


def test_matches_in_windows_are_those_of_the_whole_text_when_short_enough():
    import re
    regex = re.compile(r"x=(?P<v>\d+)")
    text = " ".join(f"x={i}" for i in range(5000))  # about 34,000 characters: several windows
    whole = [(m.start(), m.group()) for m in regex.finditer(text)][-engine.MAX_MATCHES_PER_RECORD:]
    windowed = [(m.start(), m.group()) for m in engine.last_matches(regex, text)]
    assert windowed == whole and len(text) > 4 * (engine.MATCH_WINDOW + engine.MATCH_REACH)


def test_a_match_is_cut_at_the_reach_on_a_long_text():
    import re
    regex = re.compile(r"<(?P<v>[^>]*)>")
    near = "<" + "y" * 100 + ">"
    whole = "<" + "y" * (engine.MATCH_WINDOW + engine.MATCH_REACH - 2) + ">"  # a text this long is one window
    assert [m.group() for m in engine.last_matches(regex, whole)] == [whole]
    far = "<" + "y" * (engine.MATCH_WINDOW + engine.MATCH_REACH) + ">"  # longer than any window
    assert [m.group() for m in engine.last_matches(regex, "z" * 100 + far + " " + near)] == [near]
