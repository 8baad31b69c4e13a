"""A short paste that says vLLM's words in another letter case is read with vLLM's case again
(handlers/observer/recase.py); a log is not, and line numbers stay."""
from __future__ import annotations

import sys
from pathlib import Path

from selfheal.handlers.observer import diagnose
from selfheal.handlers.observer.recase import RECASE_AT_MOST, phrases, recased
from selfheal.handlers.observer.rules import builtin_ruleset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from wild import excerpts  # noqa: E402

PHRASES = phrases(p for rule in builtin_ruleset().rules for p in rule.patterns)


def test_lower_case_prose_that_quotes_an_error_is_read():
    d = diagnose("we keep getting the error no available memory for the cache blocks during allocation on 4x3090")
    assert d.primary and d.primary.kind == "no_kv_cache_memory"


def test_a_shouted_title_keeps_its_numbers():
    d = diagnose("VALUEERROR: THE MODEL'S MAX SEQ LEN (32768) IS LARGER THAN THE MAXIMUM NUMBER OF TOKENS THAT CAN BE "
                 "STORED IN KV CACHE (20000). TRY INCREASING `GPU_MEMORY_UTILIZATION` OR DECREASING `MAX_MODEL_LEN`")
    assert d.primary.kind == "max_model_len_exceeds_kv_cache"
    assert d.primary.numbers["max_model_len"] == 32768


def test_recasing_keeps_blanks_and_line_ends():
    text = "no available memory\nfor the   cache blocks."
    out = recased(text, PHRASES)
    assert out == "No available memory\nfor the   cache blocks."


def test_the_same_text_as_a_file_bytes_and_str(tmp_path):
    text = "error: no available memory for the cache blocks. try increasing `gpu_memory_utilization`"
    path = tmp_path / "paste.log"
    path.write_text(text)
    readings = [diagnose(x).primary for x in (text, text.encode(), path)]
    assert readings[0] is not None and readings[0] == readings[1] == readings[2]


def test_a_log_longer_than_a_paste_is_not_read_twice():
    filler = "INFO 11-24 06:55:12 [core.py:708] step\n" * (RECASE_AT_MOST // 38 + 1)
    assert diagnose(filler + "no available memory for the cache blocks").primary is None


def test_look_alikes_in_lower_case_stay_silent():
    fired = [n for n, t, labels in excerpts() if labels["kind"] == "none" and diagnose(t.lower()).findings]
    assert fired == []


def test_failures_retyped_in_lower_case_are_mostly_read():
    failures = [(t, labels["kind"]) for _, t, labels in excerpts() if labels["kind"] != "none"
                and (d := diagnose(t)).primary and d.primary.kind == labels["kind"]]
    kept = sum(1 for t, kind in failures if (d := diagnose(t.lower())).primary and d.primary.kind == kind)
    # 10% before recasing (every rule matches vLLM's case); what stays missed needs the header's
    # case (INFO, a process prefix) or words shorter than a phrase
    assert kept >= 0.4 * len(failures), (kept, len(failures))
