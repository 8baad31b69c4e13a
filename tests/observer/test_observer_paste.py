"""What a paste does to a log does not change what the observer reads (handlers/observer/paste.py).

Each artifact is applied to real excerpts of the wild corpus that the observer reads right as
they were posted; the diagnosis must keep its kind and numbers, and the look-alikes must stay
silent. The artifacts are the ways text reaches a person (a web page, a chat client, a log
shipper's JSON, a Markdown quote), not any one log's wording."""
from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import pytest

from selfheal.handlers.observer import diagnose
from selfheal.handlers.observer.paste import unpasted

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from wild import excerpts  # noqa: E402
from wild_artifacts import ARTIFACTS  # noqa: E402


_ALL = excerpts()
# every third excerpt that the observer reads right as posted (a spread over kinds and shapes)
FAILURES = [(n, t) for n, t, labels in _ALL if labels["kind"] != "none"
            and (d := diagnose(t)).primary and d.primary.kind == labels["kind"]][::3]
# every second look-alike the observer leaves silent as posted (what an artifact must not change)
NEGATIVES = [(n, t) for n, t, labels in _ALL if labels["kind"] == "none" and not diagnose(t).findings][::2]


def _reading(text: str):
    d = diagnose(text)
    return (d.primary.kind, dict(d.primary.numbers)) if d.primary else None


@pytest.mark.parametrize("artifact", list(ARTIFACTS))
def test_an_artifact_keeps_the_reading_of_real_failures(artifact):
    make = ARTIFACTS[artifact]
    changed = [name for name, text in FAILURES if _reading(make(text)) != _reading(text)]
    # a few excerpts were already reflowed by their poster; a second artifact on top of that
    # may cost one of them, never more than one in twenty
    assert len(changed) <= len(FAILURES) // 20, changed


@pytest.mark.parametrize("artifact", list(ARTIFACTS))
def test_an_artifact_does_not_make_a_look_alike_fire(artifact):
    make = ARTIFACTS[artifact]
    assert [name for name, text in NEGATIVES if diagnose(make(text)).findings] == []


def test_a_plain_log_is_given_back_as_it_came():
    plain = "INFO 11-24 06:55:12 [core.py:708] started\n(EngineCore_DP0 pid=5) ERROR x\n"
    assert unpasted(plain) is plain
    data = plain.encode()
    assert unpasted(data) is data


def test_markdown_bold_comes_off_and_pythons_stars_stay():
    # a pair by Markdown's flanking rules, on one line; `**kwargs`, `a**2` and a lone `**` form none
    text = ("Available KV cache memory: **-0.93 GiB**. **No cache blocks.**\n"
            "  File \"x.py\", line 1, in f\n    return g(*args, **kwargs) + a**2 ** 3\n")
    assert unpasted(text) == ("Available KV cache memory: -0.93 GiB. No cache blocks.\n"
                              "  File \"x.py\", line 1, in f\n    return g(*args, **kwargs) + a**2 ** 3\n")
    code = "    return g(*args, **kwargs)\n    y = a**2\n"
    assert unpasted(code) is code


def test_a_log_kept_as_one_json_string_is_read_whatever_its_lines_start_with():
    # an API's error field or a notebook's output: prose retellings as well as log records, and
    # json.dumps escapes what is not ASCII (an ellipsis, a curly quote)
    make = ARTIFACTS["one JSON string with escaped newlines"]
    assert [name for name, text in FAILURES if _reading(make(text)) != _reading(text)] == []


# (`cat -n`'s numbers are held to the artifact tests above)
@pytest.mark.parametrize("artifact", ["HTML line breaks (a table cell)", "ANSI colours", "ANSI colours, their ESC lost"])
def test_a_log_in_a_table_cell_or_in_colour_reads_as_its_lines(artifact):
    # a table's row is one line, so a log in a cell has its line ends as <br>; a page drops the ESC
    # of a colour and keeps the rest ("[0;36m")
    make = ARTIFACTS[artifact]
    assert [name for name, text in FAILURES if _reading(make(text)) != _reading(text)] == []
    assert unpasted("Available KV cache memory: -1.05 GiB<BR/>ValueError: No available memory "
                    "for the cache blocks.<br />\nnext") == \
        "Available KV cache memory: -1.05 GiB\nValueError: No available memory for the cache blocks.\nnext"
    assert unpasted("[1;36m(EngineCore_DP0 pid=7)[0;0m INFO a\n^[[1;36m(EngineCore_DP0 pid=7)^[[0;0m INFO b\n") == \
        "(EngineCore_DP0 pid=7) INFO a\n(EngineCore_DP0 pid=7) INFO b\n"


def test_cat_ns_numbers_come_off_whatever_their_width_and_a_quote_under_them_too():
    # `cat -n` right-aligns its numbers in six columns, so the blanks before them shrink as they
    # grow; a quoted log under them has its own gutter, taken off in a second round
    quoted = "\n".join(f"{i + 1:6d}\t> " + line for i, line in enumerate(
        ["Serving fails:"] * 8 + ["ValueError: No available memory for the cache blocks. Try increasing",
                                  "`gpu_memory_utilization` when initializing the engine."]))
    assert unpasted(quoted).split("\n")[-2:] == ["ValueError: No available memory for the cache blocks. Try increasing",
                                                 "`gpu_memory_utilization` when initializing the engine."]


@pytest.mark.parametrize("stamp", ["Dec 07 15:00:01 ", "2025-03-01 12:00:01,123 ", "2025-03-01 12:00:01 "])
def test_a_wrapped_message_under_a_bare_timestamp_is_read_whole(stamp):
    # `ts`, or Python logging's asctime, before every line, the wrapped lines too: the time is a
    # collector's prefix there as well, so the message's lines join again (a clock alone is not
    # taken for one: a log of its own may start its lines so)
    # (with no vLLM header on any line for the collector learner to learn the time from)
    lines = ["Serving fails at startup:",
             "ValueError: Free memory on device cuda:0 (23.19/64.0 GiB) on startup is less",
             "than desired GPU memory utilization (0.85, 54.4 GiB). Decrease GPU memory",
             "utilization or reduce GPU memory used by other processes."]
    reading = _reading("\n".join(stamp + line for line in lines))
    assert reading == ("startup_free_memory_below_utilization", {"free_gib": 23.19, "total_gib": 64.0,
                                                                 "requested_utilization": 0.85, "requested_gib": 54.4})


def test_a_json_strings_unicode_escapes_are_decoded_and_a_lone_surrogate_is_replaced():
    text = json.dumps("It crash-looped:\n`0.38 GiB KV cache is needed \u2026 available KV cache memory "
                      "(0.14 GiB)`\nthen \U0001F600 and a lone \ud800\n")
    assert "\\u2026" in text and "\\ud83d\\ude00" in text
    read = unpasted(text)
    assert read == ("It crash-looped:\n`0.38 GiB KV cache is needed ... available KV cache memory "
                    "(0.14 GiB)`\nthen \U0001F600 and a lone \ufffd\n")
    read.encode("utf-8")  # no lone surrogate is left for a spool file to choke on
    docker = "\n".join(json.dumps({"log": f"INFO 05-01 10:00:0{i} [x.py:1] a lone \ud800\n", "stream": "stderr"})
                       for i in range(4))
    assert unpasted(docker).count("a lone \ufffd") == 4
    assert _reading(text) == ("max_model_len_exceeds_kv_cache", {"needed_kv_gib": 0.38, "available_kv_gib": 0.14})


def test_a_logged_prompt_that_holds_newlines_stays_one_line():
    line = ("INFO 05-01 10:00:00 [logger.py:39] Received request chatcmpl-1: prompt: "
            "'Why does\\nValueError: x happen?\\nthanks', params: SamplingParams(n=1)")
    assert unpasted(line) is line


def test_clock_times_and_vllm_headers_are_not_taken_for_a_gutter():
    lines = "\n".join(f"10:00:0{i} INFO engine step {i}" for i in range(5))
    assert unpasted(lines) is lines
    vllm = "\n".join(f"INFO 11-24 06:55:1{i} [core.py:708] step {i}" for i in range(5))
    assert unpasted(vllm) is vllm


def test_a_block_indented_as_a_whole_keeps_its_tracebacks_own_indentation():
    # a traceback cut at its raise, pasted as a Markdown code block (four blanks) or a list item
    # (a tab): under the block's indentation its frames would read as one continued line
    cut = "\n".join([
        "(EngineCore pid=41) Traceback (most recent call last):",
        '(EngineCore pid=41)   File "/opt/venv/lib/python3.12/site-packages/vllm/v1/worker/gpu_worker.py", line 250, '
        "in init_device",
        "(EngineCore pid=41)     self.requested_memory = request_memory(init_snapshot, self.cache_config)",
        '(EngineCore pid=41)   File "/opt/venv/lib/python3.12/site-packages/vllm/v1/worker/utils.py", line 413, '
        "in request_memory",
        "(EngineCore pid=41)     raise ValueError(",
    ])
    want = diagnose(cut).primary
    assert (want.rule, want.kind) == ("vllm.frame.request_memory", "startup_free_memory_below_utilization")
    for indent in ("    ", "\t", "  "):
        indented = "\n".join(indent + line for line in cut.split("\n"))
        assert _reading(indented) == _reading(cut), repr(indent)
        assert unpasted(indented) == cut
    # a traceback that is all there is keeps the indentation it has below its first line
    bare = "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n    raise ValueError(\n"
    assert unpasted(bare) is bare


def test_what_is_read_apart_from_the_lines_is_unpasted_too():
    # a retyped message in another case (recase.py reads it) and a log cut inside capture (its
    # last lines are read again for another cause, endings.py), both from a scraped page
    retyped = ("valueerror: the model's max seq len (16384) is larger than the maxinum number of tokens that can be "
               "stored in kv cache (9120). try increasing 'gpu_memory_utilization'")
    cut = "\n".join([
        "(EngineCore pid=5) INFO 10-23 08:04:01 [gpu_worker.py:298] Available KV cache memory: 12.5 GiB",
        "(EngineCore pid=5) INFO 10-23 08:04:02 [kv_cache_utils.py:1087] GPU KV cache size: 204,800 tokens",
        "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  40%|...| 20/51 [00:30<00:40,  1.3s/it]",
        # a wait while the piecewise graphs were captured, which capture went on from
        "(EngineCore pid=5) INFO 10-23 08:05:02 [shm_broadcast.py:466] No available shared memory broadcast block "
        "found in 60 seconds. This typically happens when some processes are hanging.",
        "(Worker pid=9) INFO 10-23 08:05:11 [custom_all_reduce.py:203] Registering 1224 cuda graph addresses",
        "[... 3 similar 'Registering' messages for other workers ...]",
        "Capturing CUDA graphs (decode, FULL):  12%|...| 6/51 [00:01<00:09,  4.10it/s]",
    ])
    for text in (retyped, cut):
        want = _reading(text)
        assert want is not None
        assert _reading(html.escape(text)) == want


def test_a_shippers_prefix_comes_off_lines_that_hold_no_vllm_header():
    # a message a person re-wrapped, then shipped: no line holds vLLM's header for the collector
    # learner (prefixes.py), and under the prefix the second half starts like a record of its own
    wrapped = ["ValueError: Free memory on device cuda:0 (18.2/79.2 GiB) on startup is",
               "less than desired GPU memory utilization (0.9, 71.28 GiB). Decrease GPU memory",
               "utilization or reduce GPU memory used by other processes."]
    want = _reading("\n".join(wrapped))
    assert want == ("startup_free_memory_below_utilization",
                    {"free_gib": 18.2, "total_gib": 79.2, "requested_utilization": 0.9, "requested_gib": 71.28})
    for prefix in ("Mar 01 12:00:0{}  gpu-host vllm[4321]: ", "2025-03-01T12:00:0{}.12345Z ", "2025-03-01T12:00:0{}+08:00 "):
        shipped = "\n".join(prefix.format(i) + line for i, line in enumerate(wrapped))
        assert _reading(shipped) == want, prefix


def test_line_ends_and_numbers_are_kept_where_no_line_is_added():
    text = "> a\u00a0b\n> c &quot;d&quot;\n> e\n> f\n"
    out = unpasted(text)
    assert out.count("\n") == text.count("\n")
    assert out == 'a b\nc "d"\ne\nf\n'


def test_a_quote_whose_empty_lines_are_the_gutter_alone_comes_off():
    # a quoted paste ("▎ " before each line, "▎" alone on an empty one) wrapping vLLM's message
    quoted = ("▎\n▎ ValueError: To serve at least one request with the model's max seq len (196608),\n"
              "▎ 23.25 GiB KV cache is needed, which is larger than the available KV cache memory (22.5 GiB).\n"
              "▎ Based on the available memory, the estimated maximum model length is 190272.\n▎\n▎ thanks")
    f = diagnose(quoted).primary
    assert f.numbers["estimated_max_model_len"] == 190272 and f.numbers["needed_kv_gib"] == 23.25
    bullets = "".join(f"- line {i}\n" for i in range(10))
    assert unpasted(bullets + "-1.05GiB") == bullets.replace("- ", "") + "-1.05GiB"  # a bullet needs its blank


def test_a_line_number_left_alone_by_a_carriage_return_joins_no_number():
    # `cat -n` and a pastebin number physical lines; a progress bar redrawn with carriage returns
    # is one of them, so its number stands alone once the redraws are lines, and too many redraws
    # lack it for a gutter to be learnt. It is no wrapped end of the count above ("=1" + "46")
    warning = ("\rProcessed prompts:   0%|          | 0/12000 [00:00<?, ?it/s]WARNING 06-30 03:45:37 "
               "scheduler.py:1555] Sequence group 101 is preempted by PreemptionMode.RECOMPUTE mode because "
               "there is not enough KV cache space. This can affect the end-to-end performance. Increase "
               "gpu_memory_utilization or tensor_parallel_size to provide more KV cache memory. "
               "total_num_cumulative_preemption=1")
    bars = "".join(f"\rProcessed prompts:   0%|          | {k}/12000 [00:10<35:14:39, 10.57s/it]" for k in range(400))
    # the warning is line 45, so the bar's number is 46: "=1" + "46" would be 146 preemptions, a storm
    lines = ["INFO 06-30 03:45:20 llm_engine.py:431] # GPU blocks: 557, # CPU blocks: 2048"] * 44 + [warning, bars, "done"]
    assert diagnose("\n".join(lines)).findings == []
    for artifact in ("cat -n line numbers", "pastebin line numbers"):
        assert diagnose(ARTIFACTS[artifact]("\n".join(lines))).findings == [], artifact


@pytest.mark.parametrize("artifact", ["compose prefix", "kubectl prefix", "pastebin line numbers", "Markdown quote"])
def test_a_log_listed_newest_first_under_a_prefix_is_read_in_its_order(artifact):
    # a viewer's timestamp starts its line, which tells it from the log's own; a collector's prefix
    # or a gutter in front of both comes off before the order is judged
    make = ARTIFACTS[artifact]
    # a RunPod console's paste, newest first, each record under three lines of the console's own
    (runpod,) = [t for n, t, labels in _ALL if n.startswith("cuda_graph_oom/1407-")]
    assert _reading(make(runpod)) == _reading(runpod) != None
    newest_first = [(n, ARTIFACTS["newest first"](t)) for n, t in FAILURES]
    newest_first = [(n, t) for n, t in newest_first if unpasted(t) != t]
    assert len(newest_first) >= 20
    changed = [n for n, t in newest_first if _reading(make(t)) != _reading(t)]
    # as for one artifact alone (above): one in twenty may lose a figure under the second
    assert len(changed) <= len(newest_first) // 20, changed
