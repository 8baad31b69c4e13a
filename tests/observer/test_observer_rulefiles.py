"""Rule files: the TOML format, the RuleSet API, precise errors, digests, and a rule set that
disagrees with the built-in one (what shadow evaluation will look for)."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from selfheal.handlers.observer import diagnose
from selfheal.handlers.observer import rules as rules_package
from selfheal.handlers.observer.rules import (RuleFileError, RuleSet, RuleSpec, builtin_rule_text, builtin_ruleset,
                                     load_rule_file, parse_rules)
from selfheal.schemas.serving import ServingConfig

MATCHERS = builtin_ruleset().matchers  # the built-in rules, compiled once

MINIMAL = """\
# a minimal rule file
[ruleset]
version = "test-1"
description = "one rule"

[[rule]]
id = "t.free"
kind = "startup_free_memory_below_utilization"
priority = 60
prefilter = "free memory is"
patterns = ['free memory is (?P<free>{num}) of (?P<total>{num}) GiB']
direction = { gpu_memory_utilization = "decrease" }

[rule.numbers]
free = { key = "free_gib", unit = "GiB" }
total = { key = "total_gib", unit = "GiB" }

[[rule.fix]]
when = "total_gib > 0"
gpu_memory_utilization = "floor_step('gpu_memory_utilization', free_gib * (1 - buffer) / total_gib)"
note = "{free_gib:g} of {total_gib:g} GiB free, {buffer:.0%} kept"

[[rule.fix]]
note = "total unknown"
"""
LINE = "ERROR 11-24 06:55:12 [core.py:708] ValueError: free memory is 6 of 12 GiB"


def test_a_minimal_file_loads_and_diagnoses():
    rs = parse_rules(MINIMAL, "minimal.toml")
    assert isinstance(rs, RuleSet) and rs.version == "test-1" and rs.description == "one rule"
    assert isinstance(rs.rules, tuple) and all(isinstance(r, RuleSpec) for r in rs.rules)
    assert [r.id for r in rs.rules] == ["t.free"] and rs.rules[0].version == 1
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", rs.digest)
    p = rs.diagnose(LINE).primary
    assert p.rule == "t.free" and p.numbers == {"free_gib": 6.0, "total_gib": 12.0}
    assert p.fix == {"gpu_memory_utilization": 0.45} and p.note == "6 of 12 GiB free, 10% kept"
    assert rs.diagnose(LINE, safety_buffer=0.0).primary.fix == {"gpu_memory_utilization": 0.5}
    assert rs.diagnose("nothing here").primary is None


def test_load_rule_file_reads_a_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert load_rule_file(path).digest == parse_rules(MINIMAL).digest
    path.write_text(MINIMAL.replace("priority = 60", "priority = 60\nbogus = 1"), encoding="utf-8")
    with pytest.raises(RuleFileError) as info:
        load_rule_file(path)
    assert info.value.source == str(path) and str(info.value).startswith(f"{path}:10: ")


def test_one_fix_table_many_rules_and_no_header():
    text = """
[[rule]]
id = "a"
kind = "other_config_error"
prefilter = "max_num_seqs too big:"
patterns = ['max_num_seqs too big: (?P<n>{int})']
numbers.n = { key = "max_num_seqs", unit = "count" }
fix.max_num_seqs = "floor_step('max_num_seqs', max_num_seqs / 2)"
fix.note = "half"

[[rule]]
id = "b"
kind = "context"
prefilter = "Initializing a V1 LLM engine"
patterns = ['Initializing a V1 LLM engine']
marks = ["reset"]
"""
    rs = parse_rules(text)
    assert [r.id for r in rs.rules] == ["a", "b"]
    assert rs.version == f"unversioned-{rs.digest[7:19]}"  # named by its content
    p = rs.diagnose("max_num_seqs too big: 64").primary
    assert p.fix == {"max_num_seqs": 32} and p.note == "half" and p.action == "tune"


def _error(text: str) -> RuleFileError:
    with pytest.raises(RuleFileError) as info:
        parse_rules(text, "bad.toml")
    e = info.value
    assert isinstance(e, ValueError) and e.source == "bad.toml"
    assert str(e) == f"bad.toml:{e.line}: " + (f"rule {e.rule}: " if e.rule else "") + e.problem
    return e


def _line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


@pytest.mark.parametrize("change, at, problem", [
    (("priority = 60", "priority = 60\nprefiltr = 'x'"), "prefiltr", "unknown key 'prefiltr'"),
    (('prefilter = "free memory is"\n', ""), 'id = "t.free"', "missing key 'prefilter'"),
    (("(?P<free>{num}) of", "(?P<free>{num} of"), "patterns =",
     "pattern 1: bad regular expression: missing ), unterminated subpattern"),
    (('free = { key = "free_gib"', 'fre = { key = "free_gib"'), "fre = {",
     "numbers.fre: no pattern defines the capture 'fre' (defined: free, total)"),
    (('unit = "GiB" }\ntotal', 'unit = "parsec" }\ntotal'), "parsec", "numbers.free: unknown unit 'parsec'"),
    (("free_gib * (1 - buffer)", "free_gib * (1 - bufer)"), "bufer",
     "fix[0].gpu_memory_utilization: expression error at position 53: unknown name 'bufer'"),
    (("free_gib * (1 - buffer)", "free_gib ** 2"), "free_gib ** 2",
     "fix[0].gpu_memory_utilization: expression error at position 46: '**' is not an operator"),
    (('when = "total_gib > 0"', 'when = "total_gib >"'), "total_gib >",
     "fix[0].when: expression error at position 11: expected a value, found the end"),
    (('note = "total unknown"', 'note = "total {nope} unknown"'), "nope", "fix[1]: note: at position 7: unknown name"),
    (('note = "total unknown"', 'note = "total {unknown"'), "{unknown", "fix[1]: note: at position 6: unmatched '{'"),
    (('kind = "startup_free_memory_below_utilization"', 'kind = "nonsense"'), "nonsense", "unknown kind 'nonsense'"),
    (("priority = 60", 'priority = "high"'), "high", "priority: expected int, got str"),
    (('when = "total_gib > 0"', 'whenn = "total_gib > 0"'), "whenn", "fix[0]: unknown key 'whenn'"),
    (('{ gpu_memory_utilization = "decrease" }', '{ gpu_memory_utilization = "sideways" }'), "sideways",
     "direction of gpu_memory_utilization: 'sideways' is not increase, decrease or enable"),
    (('note = "total unknown"', 'note = "x"\naction = "tune"'), 'action = "tune"',
     "fix[1]: action 'tune' must be 'tune' when the candidate sets parameters"),
    (("[rule.numbers]", '[rule.derived]\nfree_gib = "1"\n\n[rule.numbers]'), "free_gib = \"1\"",
     "derived value 'free_gib' repeats a number or derived name"),
    (("priority = 60", 'priority = 60\nwithin = "profile_run"'), "within", "only a context rule has it"),
])
def test_each_error_names_file_rule_line_and_problem(change, at, problem):
    text = MINIMAL.replace(*change)
    assert text != MINIMAL
    e = _error(text)
    assert e.rule == "'t.free'" and e.index == 1
    assert e.line == _line_of(text, at), (e.line, str(e))
    assert problem in e.problem, e.problem


def test_toml_syntax_errors_carry_their_line():
    text = MINIMAL.replace("priority = 60", "priority = = 60")
    e = _error(text)
    assert e.line == _line_of(text, "priority = = 60") and e.rule == "'t.free'"
    assert e.problem.startswith("TOML syntax: Invalid value")


def test_a_duplicate_rule_id_names_both_lines():
    rule = MINIMAL[MINIMAL.index("[[rule]]"):]
    text = MINIMAL + "\n" + rule
    e = _error(text)
    first = _line_of(text, 'id = "t.free"')
    assert e.line > first and e.index == 2
    assert e.problem == f"duplicate rule id 't.free' (first defined at line {first})"


SECOND = """
[[rule]]
id = "t.free2"
kind = "startup_free_memory_below_utilization"
priority = 60
prefilter = "memory free is"
patterns = ['memory free is (?P<free>{num}) of (?P<total>{num}) GiB']
direction = { gpu_memory_utilization = "decrease" }
fix_like = "t.free"
numbers.free = { key = "free_gib", unit = "GiB" }
numbers.total = { key = "total_gib", unit = "GiB" }
"""


def test_fix_like_takes_the_fix_of_a_rule_above():
    rs = parse_rules(MINIMAL + SECOND, "like.toml")
    assert rs.rules[1].fix == rs.rules[0].fix and rs.rules[1].derived == rs.rules[0].derived
    written = MINIMAL + SECOND.replace('fix_like = "t.free"\n', "") + MINIMAL[MINIMAL.index("[[rule.fix]]"):]
    assert parse_rules(written, "written.toml").digest == rs.digest  # the same rules, written out
    p = rs.diagnose("ERROR x ValueError: memory free is 6 of 12 GiB").primary
    assert (p.rule, p.fix, p.note) == ("t.free2", {"gpu_memory_utilization": 0.45}, "6 of 12 GiB free, 10% kept")


@pytest.mark.parametrize("second, problem", [
    (SECOND.replace('"t.free"', '"t.nowhere"'), "fix_like names 't.nowhere', which is not a rule above it in this file"),
    (SECOND + "[[rule.fix]]\nnote = 'own'\n", "fix_like takes another rule's derived values and fixes: give neither here"),
])
def test_fix_like_errors_name_the_rule_and_line(second, problem):
    text = MINIMAL + second
    e = _error(text)
    assert (e.problem, e.rule, e.line) == (problem, "'t.free2'", _line_of(text, "fix_like = "))


def test_a_rule_without_an_id_is_named_by_its_index():
    second = MINIMAL[MINIMAL.index("[[rule]]"):].replace('id = "t.free"\n', "")
    e = _error(MINIMAL + "\n" + second)
    assert e.rule == "#2" and e.problem == "missing key 'id'"


@pytest.mark.parametrize("text, problem", [
    ("foo = 1\n" + MINIMAL, "unknown key 'foo'"),
    ("[ruleset]\nversion = 'x'\n", "the file defines no rules"),
    (MINIMAL.replace('description = "one rule"', 'descr = "x"'), "unknown key 'descr'"),
    ("rule = 3\n", "'rule' must be an array of tables"),
])
def test_file_level_errors(text, problem):
    e = _error(text)
    assert e.rule is None and problem in e.problem


def test_a_context_rule_has_no_fix():
    text = MINIMAL.replace('kind = "startup_free_memory_below_utilization"', 'kind = "context"').replace(
        "priority = 60\n", "").replace('direction = { gpu_memory_utilization = "decrease" }\n', "")
    assert "a context rule has no fix" in _error(text).problem


def test_the_digest_ignores_layout_and_follows_meaning():
    base = parse_rules(MINIMAL).digest
    relaid = (MINIMAL.replace("# a minimal rule file", "# reformatted\n\n# more comments")
              .replace("free_gib * (1 - buffer) / total_gib", "free_gib*(1-buffer)/  total_gib")
              .replace("patterns = ['free memory is (?P<free>{num}) of (?P<total>{num}) GiB']",
                       "patterns = [['free memory is (?P<free>{num}) ', 'of (?P<total>{num}) GiB']]")
              .replace('version = "test-1"', 'version = "renamed"')
              .replace("priority = 60\nprefilter = \"free memory is\"", "prefilter = \"free memory is\"\npriority = 60"))
    assert parse_rules(relaid).digest == base and parse_rules(relaid).version == "renamed"
    for meaning in [("priority = 60", "priority = 61"), ("(1 - buffer)", "(1 - buffer / 2)"),
                    ("total unknown", "total not known"), ('when = "total_gib > 0"', 'when = "total_gib > 1"')]:
        assert parse_rules(MINIMAL.replace(*meaning)).digest != base, meaning


CUT = MINIMAL.replace("patterns = ['free memory is (?P<free>{num}) of (?P<total>{num}) GiB']",
                      "cut_after = 1\npatterns = [['free memory is (?P<free>{num})', ' of (?P<total>{num}) GiB', ' at startup']]")


def test_a_pattern_may_stop_at_its_records_end_after_cut_after_pieces():
    rs = parse_rules(CUT)
    assert rs.diagnose(LINE + " at startup").primary.numbers == {"free_gib": 6, "total_gib": 12}
    # cut inside the second piece, or inside the third: the first still states it
    assert rs.diagnose(LINE[:-6]).primary.numbers == {"free_gib": 6}
    assert rs.diagnose(LINE + " at sta").primary.numbers == {"free_gib": 6, "total_gib": 12}
    # not cut: words after the first piece that are not the second's, and the record goes on
    assert rs.diagnose(LINE.replace(" of 12 GiB", " of the time, as the next lines show") + " " * 200 + "x").findings == []
    assert parse_rules(MINIMAL).diagnose(LINE[:-6]).findings == []


def test_cut_after_needs_pieces_that_are_regexes_of_their_own():
    unbalanced = CUT.replace("' of (?P<total>{num}) GiB', ' at startup'", "' of (?P<total>{num}) GiB(?: at', ' startup)?'")
    assert "piece 2 is no regex of its own" in _error(unbalanced).problem
    assert "needs a pattern of more pieces" in _error(CUT.replace("cut_after = 1", "cut_after = 3")).problem


def test_first_computable_candidate_wins_and_absurd_numbers_are_not_computable():
    text = MINIMAL.replace('when = "total_gib > 0"\n', "").replace(
        "free_gib * (1 - buffer) / total_gib", "free_gib * (1 - buffer) / total_gib * factor").replace(
        "[rule.numbers]", '[rule.derived]\nfactor = "1 / (total_gib - 12)"\n\n[rule.numbers]')
    rs = parse_rules(text)
    # total 12: factor is a division by zero, so the first candidate cannot be computed and the
    # fallback's note must not hide why
    p = rs.diagnose(LINE).primary
    assert p.fix == {} and p.note.startswith("fix not computable: division by zero")
    # a missing number only means "this candidate does not apply": the next one wins
    missing = parse_rules(MINIMAL.replace('when = "total_gib > 0"\n', "").replace(
        "of (?P<total>{num}) GiB", "of (?P<total>{num})? GiB"))
    assert missing.diagnose("free memory is 6 of  GiB").primary.note == "total unknown"
    only = parse_rules(MINIMAL.replace('\n[[rule.fix]]\nnote = "total unknown"\n', "").replace(
        "of (?P<total>{num}) GiB", "of (?P<total>{num})? GiB"))
    assert only.diagnose("free memory is 6 of  GiB").primary.note == (
        "fix not computable: no value for 'total_gib' at position 0 in 'total_gib > 0'")


def test_note_templates():
    text = MINIMAL.replace('note = "{free_gib:g} of {total_gib:g} GiB free, {buffer:.0%} kept"',
                           'note = "{{braces}} {if free_gib > 5}plenty{else}little{end}: {free_gib / total_gib:.2f}"')
    assert parse_rules(text).diagnose(LINE).primary.note == "{braces} plenty: 0.50"
    for bad, problem in [("{free_gib:x}", "a placeholder is a number with an optional format"),
                         ("{if free_gib}x{end}", "{if} needs a boolean condition"),
                         ("{if true}x", "{if} without {end}"), ("x{end}", "{end} without {if}"),
                         ("x}", "unmatched '}'")]:
        e = _error(MINIMAL.replace('note = "total unknown"', f'note = "{bad}"'))
        assert problem in e.problem, (bad, e.problem)


def test_the_prefilter_literal_is_the_first_gate():
    # the pattern would match every line, but no line holds the literal: no regex ever runs
    text = MINIMAL.replace('prefilter = "free memory is"', 'prefilter = "NEVER IN THIS LOG"').replace(
        "free memory is (?P<free>{num}) of (?P<total>{num}) GiB",
        "\\b(?P<free>{num}) of (?P<total>{num}) GiB|NEVER IN THIS LOG")
    rs = parse_rules(text)
    assert rs.diagnose("\n".join([LINE] * 1000)).primary is None


def test_builtin_ruleset_is_read_once_and_behind_diagnose():
    rs = builtin_ruleset()
    assert rs is builtin_ruleset() and rs.version == "builtin-2" and MATCHERS is rs.matchers
    files = resources.files("selfheal.handlers.observer.rules")
    count = sum(e.read_text(encoding="utf-8").count("\n[[rule]]") for e in files.iterdir() if e.name.endswith(".toml"))
    assert len(rs.rules) == count and len({r.id for r in rs.rules}) == count
    text = "RuntimeError: CUDA out of memory occurred when warming up sampler with 256 dummy requests."
    assert rs.diagnose(text) == diagnose(text)


WEIGHTS = ("ERROR 11-24 06:55:12 [gpu_model_runner.py:2500] Failed to load model - not enough GPU memory. "
           "(original error: CUDA out of memory. Tried to allocate 500.00 MiB. GPU 0 has a total capacity of "
           "11.60 GiB of which 120.50 MiB is free.)")
WARMUP = "RuntimeError: CUDA out of memory occurred when warming up sampler with 256 dummy requests."


def test_a_planted_disagreement_loads_and_diagnoses_differently():
    """What shadow evaluation looks for: a candidate that differs from the active rules."""
    builtin, text = builtin_ruleset(), builtin_rule_text()
    # 1. a changed priority: vLLM's weights message no longer outranks the bare PyTorch OOM
    lowered = text.replace("priority = 35  #", "priority = 5  #")
    assert lowered != text
    candidate = parse_rules(lowered, "candidate.toml")
    assert candidate.digest != builtin.digest and candidate.version == builtin.version
    util = ServingConfig(gpu_memory_utilization=0.9)
    active, shadow = builtin.diagnose(WEIGHTS, current=util).primary, candidate.diagnose(WEIGHTS, current=util).primary
    assert (active.rule, active.action) == ("vllm.weights_oom", "alert")
    assert (shadow.rule, shadow.action) == ("torch.cuda_oom", "tune")
    # 2. a changed fix: the warm-up cut becomes a quarter instead of a half
    quartered = text.replace("max_num_seqs / 2))", "max_num_seqs / 4))")
    assert quartered != text
    assert builtin.diagnose(WARMUP).primary.fix == {"max_num_seqs": 128}
    assert parse_rules(quartered).diagnose(WARMUP).primary.fix == {"max_num_seqs": 64}
    # everything else agrees
    assert parse_rules(quartered).diagnose(WEIGHTS, current=util) == builtin.diagnose(WEIGHTS, current=util)


def test_the_format_example_in_the_readme_loads():
    readme = (Path(rules_package.__file__).parent / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", readme, re.DOTALL).group(1)
    rs = parse_rules(example, "README.md")
    assert rs.version == "builtin-2" and rs.diagnose(WARMUP).primary.fix == {"max_num_seqs": 128}


# a Unicode \b sees no boundary between a digit and a CJK letter: a number that must end where its
# digits do is ended with (?a:\b), or a poster's Chinese words joined to its line hide it
_NUMBER_THEN_UNICODE_BOUNDARY = re.compile(r"(?:\\d[+*]?|\{(?:int|num|size)\})\)?\\b")


def test_no_builtin_pattern_ends_a_number_with_a_unicode_word_boundary():
    offending = sorted({m.rule.id for m in MATCHERS for p in m.rule.patterns
                        for piece in ([p] if isinstance(p, str) else p) if _NUMBER_THEN_UNICODE_BOUNDARY.search(piece)})
    assert offending == []


def test_the_lint_above_sees_a_unicode_boundary_after_a_number():
    assert _NUMBER_THEN_UNICODE_BOUNDARY.search(r"total memory: (?P<total>\d+)\b")
    assert _NUMBER_THEN_UNICODE_BOUNDARY.search(r"--max-model-len (?P<len>{int})\b")
    assert not _NUMBER_THEN_UNICODE_BOUNDARY.search(r"total memory: (?P<total>\d+)(?a:\b)")
    assert not _NUMBER_THEN_UNICODE_BOUNDARY.search(r"\bmax_model_len")
