"""Raw text -> logical lines: prefixes, wraps, line numbers."""
from __future__ import annotations

import pytest

from selfheal.handlers.observer.logtext import LogText, normalize
from selfheal.handlers.observer.normalize import squash, strip_prefix


@pytest.mark.parametrize("line, info, message", [
    ("INFO 11-24 06:55:12 [gpu_worker.py:231] Available KV cache memory: 5.30 GiB",
     {"level": "INFO", "source": "gpu_worker.py:231"}, "Available KV cache memory: 5.30 GiB"),
    ("(EngineCore_DP0 pid=1234) ERROR 01-02 03:04:05 [core.py:700] ValueError: boom",
     {"process": "EngineCore_DP0 pid=1234", "level": "ERROR", "source": "core.py:700", "exc_type": "ValueError"},
     "boom"),
    ("INFO 01-24 10:02:17 llm_engine.py:275] # GPU blocks: 1825, # CPU blocks: 2048",
     {"level": "INFO", "source": "llm_engine.py:275"}, "# GPU blocks: 1825, # CPU blocks: 2048"),
    ("(VllmWorker rank=0 pid=812) WARNING 11-24 06:55:12 [utils.py:1] hi",
     {"process": "VllmWorker rank=0 pid=812", "level": "WARNING", "source": "utils.py:1"}, "hi"),
    ("(APIServer pid=99) torch.OutOfMemoryError: CUDA out of memory.",
     {"process": "APIServer pid=99", "exc_type": "torch.OutOfMemoryError"}, "CUDA out of memory."),
    ("2025-11-24T06:55:12.123Z RuntimeError: x", {"exc_type": "RuntimeError"}, "x"),
    ("[rank0]: torch.cuda.OutOfMemoryError: CUDA out of memory.", {"exc_type": "torch.cuda.OutOfMemoryError"},
     "CUDA out of memory."),
    ("ERROR:root:something", {"level": "ERROR"}, "something"),
    ("ERROR 11-24 06:55:12 [core.py:708]   File \"x.py\", line 3, in f",
     {"level": "ERROR", "source": "core.py:708"}, "  File \"x.py\", line 3, in f"),
    ("plain text: not a prefix", {}, "plain text: not a prefix"),
])
def test_strip_prefix(line, info, message):
    assert strip_prefix(line) == (info, message)


def test_ansi_escapes_and_line_endings():
    text = "\x1b[1;36m(APIServer pid=1)\x1b[0;0m INFO 11-24 06:55:12 [a.py:1] one\r\ntwo\rthree\n"
    lines = LogText(text).lines
    assert lines == ["(APIServer pid=1) INFO 11-24 06:55:12 [a.py:1] one", "two", "three", ""]


def test_wrapped_record_is_joined_and_maps_back():
    first = "(EngineCore_DP0 pid=5) ERROR 11-24 06:55:12 [core.py:708] ValueError: Free memory on dev"
    text = "INFO 11-24 06:55:00 [a.py:1] before\n" + first + "\nice (9.8/11.6 GiB) on startup\nINFO x"
    recs = normalize(text)
    assert [r.first for r in recs] == [1, 2, 4]
    rec = recs[1]
    assert rec.text == "Free memory on device (9.8/11.6 GiB) on startup"
    assert rec.raw == (first, "ice (9.8/11.6 GiB) on startup")
    assert rec.exc_type == "ValueError" and rec.level == "ERROR"
    start = rec.text.index("(9.8")
    assert rec.span_lines(start, start + 5) == (3, ["ice (9.8/11.6 GiB) on startup"])
    assert rec.span_lines(0, len(rec.text)) == (2, list(rec.raw))


def test_a_comment_mark_that_a_wrapped_record_repeats_is_no_part_of_its_message():
    # an error quoted in a script's comment block, wrapped there at a sentence's middle
    text = ("#    ValueError: Free memory on device cuda:0 (6.1/178.34 GiB) on startup is\n"
            "#      less than desired GPU memory utilization (0.92, 164.08 GiB)\n"
            "#    so the workers must be killed. nvidia-smi shows them.\n")
    rec = normalize(text)[0]
    assert rec.text.startswith("#    ValueError: Free memory on device cuda:0 (6.1/178.34 GiB) on startup is"
                               "less than desired GPU memory utilization (0.92, 164.08 GiB)so the workers")
    start = rec.text.index("less than")
    assert rec.span_lines(start, start + 9) == (2, ["#      less than desired GPU memory utilization (0.92, 164.08 GiB)"])
    # the mark goes only where the first line has the same one; a flag's dashes are no mark
    other = normalize("#  a comment that is long enough to be wrapped by a terminal at eighty\n"
                      "// columns, in another language\n")[0]
    assert other.text.endswith("eighty// columns, in another language")
    flags = normalize("--model /models/a-model-with-a-long-name --tensor-parallel-size 2 \\\n"
                      "--max-model-len 4096\n")[0]
    assert "--max-model-len 4096" in flags.text


def test_records_are_not_joined_across_headers_blank_lines_or_tracebacks():
    long = "x" * 90
    text = "\n".join([
        "INFO 11-24 06:55:00 [a.py:1] " + long,
        "INFO 11-24 06:55:01 [a.py:2] next record",          # header
        long,
        "",                                                  # blank: never joined across
        "continued?",
        '  File "/x/y.py", line 3, in capture_model_with_a_long_function_name_here',
        "    self.capture_model_and_some_more_code_to_make_it_long()",  # code under a frame
        "Traceback (most recent call last):",
        "ValueError: " + long,
        "RuntimeError: a second exception right after a complete one",
    ])
    recs = normalize(text)
    assert [r.first for r in recs] == [1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert recs[1].raw == ("INFO 11-24 06:55:01 [a.py:2] next record", long)  # unprefixed line after a record


def test_source_lines_under_frames_are_known():
    log = LogText('Traceback (most recent call last):\n  File "w.py", line 478, in f\n'
                  '    raise ValueError("No available memory for the cache blocks. "\nValueError: x')
    starts = [0] + [i + 1 for i, ch in enumerate(log.text) if ch == "\n"]  # lines are named by where they start
    assert [log.is_source_line(s) for s in starts] == [False, False, True, False]


def test_short_lines_are_whole_records_unless_the_next_word_did_not_fit():
    assert [r.text for r in normalize("short one\nshort two")] == ["short one", "short two"]
    url = "https://docs.vllm.ai/en/latest/configuration/conserving_memory/"
    assert [r.text for r in normalize("initializing the engine. See\n" + url + " for more")] == [
        "initializing the engine. See" + url + " for more"]


def test_exception_line_continues_a_header_cut_off_before_its_message():
    text = "(EngineCore_DP0 pid=5123) ERROR 11-24 06:55:12 [core.py:708]\nValueError: No available memory for the"
    (rec,) = normalize(text)
    assert rec.text == "No available memory for the" and rec.exc_type == "ValueError"


def test_join_is_bounded():
    text = "\n".join(["y" * 100] * 100)
    recs = normalize(text)
    assert max(len(r.raw) for r in recs) <= 32
    assert sum(len(r.raw) for r in recs) == 100


def test_squash():
    assert squash(" a b\tc\nd ") == "abcd"


@pytest.mark.parametrize("text", ["", "\n", "\x00\x1b[", "\ud800 lone surrogate", "é" * 10])
def test_odd_input_does_not_raise(text):
    assert isinstance(normalize(text), list)
