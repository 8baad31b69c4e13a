"""Repeated failures (issue 13, item 7): a log where every line is the same real vLLM KV-cache
error once took 105 MB for 10 MB, 700 MB for 100 MB and 6.6 GB for 1 GB, one finding per line.
A finding that recurs is now counted, not kept (engine.Interpretation), and the log is scanned
while it is read (engine.Scan), so memory is bounded by the distinct failures, not the lines.
"""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_observer_prefilter import FRAGMENTS, ODD_RULES

from selfheal.handlers.observer import diagnose, format_diagnosis, logtext
from selfheal.handlers.observer.engine import MAX_LISTED, Repeated, read_and_scan, scan
from selfheal.handlers.observer.logtext import LogText
from selfheal.handlers.observer.paste import as_read
from selfheal.handlers.observer.rules import builtin_ruleset

SAMPLES = Path(__file__).parent / "samples"
# a real vLLM 0.10 KV-cache error line, as the sample captured it
KV_LINE = (SAMPLES / "failing_startup_kv_v1.log").read_text(encoding="utf-8").splitlines()[22]
assert "KV cache is needed, which is larger than the available KV cache memory" in KV_LINE


def repeated_log(path: Path, lines: int) -> Path:
    path.write_text((KV_LINE + "\n") * lines, encoding="utf-8")
    return path


def test_a_failure_on_every_line_is_counted_not_kept(tmp_path):
    n = 3_000
    d = diagnose(repeated_log(tmp_path / "kv.log", n))
    assert d.primary is not None and d.primary.kind == "max_model_len_exceeds_kv_cache"
    assert d.primary.line == n  # the latest occurrence, as before
    # the first MAX_LISTED - 1 occurrences and the latest; the rest counted
    assert [f.line for f in d.findings] == [*range(1, MAX_LISTED), n]
    assert d.findings[-1] == d.primary
    assert d.repeated == [Repeated(index=MAX_LISTED - 1, count=n, first_line=1, last_line=n)]
    # the log given as bytes or text says the same, and the result is storable as JSON
    raw = (tmp_path / "kv.log").read_bytes()
    assert diagnose(raw) == d and diagnose(raw.decode()) == d
    assert msgspec.json.decode(msgspec.json.encode(d), type=type(d)) == d
    assert format_diagnosis(d).splitlines()[1] == f"  seen {n:,} times, lines 1-{n}"


def test_a_failure_seen_up_to_the_limit_is_listed_every_time(tmp_path):
    d = diagnose(repeated_log(tmp_path / "kv.log", MAX_LISTED))
    assert [f.line for f in d.findings] == list(range(1, MAX_LISTED + 1)) and d.repeated == []
    assert "repeated" not in msgspec.json.decode(msgspec.json.encode(d))  # the JSON of ordinary logs is unchanged


def test_repeats_are_counted_per_distinct_failure_and_the_primary_is_the_last_attempts(tmp_path):
    other = ("(EngineCore_DP0 pid=5123) ERROR 11-24 06:55:48 [core.py:708] ValueError: No available memory "
             "for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.")
    lines = [KV_LINE] * 40 + [other] * 30 + [KV_LINE] * 5
    path = tmp_path / "two.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    d = diagnose(path)
    kinds = [f.kind for f in d.findings]
    assert kinds.count("max_model_len_exceeds_kv_cache") == MAX_LISTED and kinds.count("no_kv_cache_memory") == MAX_LISTED
    # in log order: 15 of each listed first, then the latest of each (the KV error's came last)
    assert [f.line for f in d.findings] == [*range(1, MAX_LISTED), *range(41, 40 + MAX_LISTED), 70, 75]
    assert d.repeated == [Repeated(index=2 * MAX_LISTED - 2, count=30, first_line=41, last_line=70),
                          Repeated(index=2 * MAX_LISTED - 1, count=45, first_line=1, last_line=75)]
    # no reset between them: one start attempt; the most specific of it, as before
    assert d.primary == d.findings[-1] and d.primary.line == 75


def _peak(path: Path) -> int:
    tracemalloc.start()
    try:
        diagnose(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_repetitions(tmp_path):
    # 10,000 and 40,000 lines (4.2 and 17 MB): before, the peak grew with the lines (one finding,
    # one hit and one candidate per line); now both stay near the read buffer and block cache
    small = _peak(repeated_log(tmp_path / "small.log", 10_000))
    large = _peak(repeated_log(tmp_path / "large.log", 40_000))
    assert large < small * 1.25 + (256 << 10), (small, large)
    assert large < 8 << 20, large


# the scan that runs while the log is read gives the hits of a scan of the whole log read first,
# for text and bytes, with pieces so small that records, window rules and literals with a
# newline in them (ODD_RULES) straddle them
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS + [KV_LINE]) | st.text(max_size=12), max_size=40), st.sampled_from([1, 7, 64]))
def test_scanning_while_reading_gives_the_hits_of_a_whole_scan(parts, chunk):
    text = "\n".join(parts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(logtext, "CHUNK_CHARS", chunk)
        mp.setattr(logtext, "SAMPLE_PIECES", 2)
        mp.setattr(logtext, "PIECE_CHARS", 48)
        for matchers in (builtin_ruleset().matchers, ODD_RULES.matchers):
            # read_and_scan reads the log as the observer does: paste artifacts and collector
            # prefixes off first (paste.py, prefixes.py); the whole scan is given the same text
            whole = [(h.key, h.evidence, h.numbers) for h in scan(LogText(as_read(text)), matchers)]
            assert [(h.key, h.evidence, h.numbers) for h in read_and_scan(text, matchers)] == whole
            raw = text.encode("utf-8", "surrogatepass")
            assert [h.key for h in read_and_scan(raw, matchers)] == [
                h.key for h in scan(LogText(as_read(raw)), matchers)]
